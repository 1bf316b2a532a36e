#include "redis_errors.h"

#include <algorithm>
#include <array>

namespace singleflight::internal {
namespace {

// The server did not run the command and says it may later.
constexpr std::array<std::string_view, 5> kRetryable = {"BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN",
                                                        "CLUSTERDOWN"};
constexpr std::array<std::string_view, 3> kCluster = {"MOVED", "ASK", "CROSSSLOT"};

template <size_t N>
bool OneOf(std::string_view word, const std::array<std::string_view, N>& words) {
  return std::any_of(words.begin(), words.end(), [word](std::string_view w) { return w == word; });
}

}  // namespace

std::string_view ErrorPrefix(const Reply& reply) noexcept {
  if (!reply.is_error()) return {};
  std::string_view text = reply.str;
  return text.substr(0, text.find(' '));
}

ReplyClass Classify(const Status& status, const Reply& reply) noexcept {
  switch (status.code()) {
    case Code::kOk: break;
    case Code::kUnavailable: return ReplyClass::kNotSent;
    default: return ReplyClass::kUnknown;  // kTimeout, kClosed: written, no answer
  }
  if (!reply.is_error()) return ReplyClass::kOk;
  return OneOf(ErrorPrefix(reply), kRetryable) ? ReplyClass::kRetryable : ReplyClass::kFatal;
}

void CountFailure(ReplyClass reply_class, Stats& stats) noexcept {
  switch (reply_class) {
    case ReplyClass::kOk: return;
    case ReplyClass::kNotSent: break;
    case ReplyClass::kUnknown: ++stats.unknown_outcomes; break;
    case ReplyClass::kRetryable: ++stats.error_replies_retryable; break;
    case ReplyClass::kFatal: ++stats.error_replies_fatal; break;
  }
  ++stats.redis_errors;
}

Status FatalStatus(const Reply& reply) {
  std::string_view prefix = ErrorPrefix(reply);
  if (OneOf(prefix, kCluster)) {
    return Status(Code::kUnavailable,
                  "Redis Cluster redirection not followed (a cluster node needs "
                  "RedisOptions::cluster, URL ?cluster=1): " +
                      reply.str);
  }
  if (!reply.is_error()) {
    return Status(Code::kUnavailable, "unexpected reply from Redis: " + reply.str);
  }
  return Status(Code::kUnavailable, "Redis answered an error: " + reply.str);
}

uint32_t RetryDelayMs(int attempt) noexcept {
  return 10u << std::min(attempt, 6);
}

}  // namespace singleflight::internal
