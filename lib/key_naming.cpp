#include "key_naming.h"

namespace singleflight::internal {

Status ValidateKey(std::string_view key, size_t max_key_bytes) {
  if (key.empty()) return Status(Code::kInvalidArgument, "key is empty");
  if (key.size() > max_key_bytes) {
    return Status(Code::kInvalidArgument, "key is " + std::to_string(key.size()) +
                                              " bytes, longer than max_key_bytes (" +
                                              std::to_string(max_key_bytes) + ")");
  }
  return Status::Ok();
}

Status ValidatePrefix(std::string_view prefix) {
  if (prefix.size() > kMaxPrefixBytes) {
    return Status(Code::kInvalidArgument, "key_prefix is " + std::to_string(prefix.size()) +
                                              " bytes, longer than the limit of " +
                                              std::to_string(kMaxPrefixBytes));
  }
  if (prefix.find_first_of("{}") != std::string_view::npos) {
    return Status(Code::kInvalidArgument,
                  "key_prefix must not contain '{' or '}': they would break the "
                  "Redis Cluster hash tag that keeps a flight's keys on one slot");
  }
  return Status::Ok();
}

std::string EscapeKey(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    switch (c) {
      case '%': out += "%25"; break;
      case '{': out += "%7B"; break;
      case '}': out += "%7D"; break;
      default: out += c;
    }
  }
  return out;
}

FlightKeys NameFlight(std::string_view prefix, std::string_view key) {
  std::string base;
  base.reserve(prefix.size() + key.size() + 2);
  base.append(prefix);
  base += '{';
  base += EscapeKey(key);
  base += '}';
  FlightKeys keys;
  keys.lock = base + ":lock";
  keys.result = base + ":result";
  keys.channel = std::move(base) + ":ch";
  return keys;
}

std::string InvalidationChannel(std::string_view prefix) {
  return std::string(prefix) + "invalidate";
}

}  // namespace singleflight::internal
