// Reply builders for tests that play the server: the fake link's script
// answers and the simulated Redis's replies.
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

}  // namespace singleflight::test
