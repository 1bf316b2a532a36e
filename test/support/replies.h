// Reply builders for tests that play the server: the fake link's script
// answers and the simulated Redis's replies; and a reply as one line, for
// the error messages of the fixtures that talk to real servers.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "redis_reply.h"

namespace singleflight::test {

inline internal::Reply Typed(internal::Reply::Type type, std::string text) {
  internal::Reply r;
  r.type = type;
  r.str = std::move(text);
  return r;
}
inline internal::Reply Int(long long v) {
  internal::Reply r;
  r.type = internal::Reply::Type::kInteger;
  r.integer = v;
  return r;
}
inline internal::Reply Bulk(std::string s) {
  return Typed(internal::Reply::Type::kString, std::move(s));
}
inline internal::Reply Err(std::string message) {
  return Typed(internal::Reply::Type::kError, std::move(message));
}
inline internal::Reply StatusReply(std::string s) {
  return Typed(internal::Reply::Type::kStatus, std::move(s));
}
inline internal::Reply Arr(std::vector<internal::Reply> elements) {
  internal::Reply r;
  r.type = internal::Reply::Type::kArray;
  r.elements = std::move(elements);
  return r;
}

// A reply as one line: arrays in brackets, nil as (nil).
inline std::string DescribeReply(const internal::Reply& reply) {
  if (reply.type == internal::Reply::Type::kInteger) return std::to_string(reply.integer);
  if (reply.type == internal::Reply::Type::kNil) return "(nil)";
  if (reply.type != internal::Reply::Type::kArray) return reply.str;
  std::string text = "[";
  for (const internal::Reply& element : reply.elements) {
    if (text.size() > 1) text += " ";
    text += DescribeReply(element);
  }
  return text + "]";
}

}  // namespace singleflight::test
