#include "singleflight/status.h"

#include "singleflight/result.h"

namespace singleflight {

std::string_view CodeName(Code code) noexcept {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kProducerError: return "producer_error";
    case Code::kTimeout: return "timeout";
    case Code::kCancelled: return "cancelled";
    case Code::kUnavailable: return "unavailable";
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kTooLarge: return "too_large";
    case Code::kClosed: return "closed";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

std::string_view SourceName(Source source) noexcept {
  switch (source) {
    case Source::kNone: return "none";
    case Source::kLocalCache: return "l1";
    case Source::kJoined: return "joined";
    case Source::kRedisCache: return "redis";
    case Source::kLed: return "led";
    case Source::kPubSub: return "pubsub";
    case Source::kFallbackGet: return "fallback";
  }
  return "unknown";
}

}  // namespace singleflight
