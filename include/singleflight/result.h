// Result: what a Do callback receives.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "singleflight/status.h"

namespace singleflight {

// Where a result came from — a value, or an error such as a producer failure
// (a producer error published by another process arrives as kPubSub). Useful
// for metrics and for tests that assert the path a call took rather than how
// long it took.
enum class Source {
  kNone = 0,     // nothing arrived: timeout, cancel, close, rejection, Redis down
  kLocalCache,   // L1 hit in this process
  kJoined,       // joined a flight already running in this process
  kRedisCache,   // the result was already in Redis
  kLed,          // this process ran the producer
  kPubSub,       // woken by the leader's message on the key's channel
  kFallbackGet,  // found by a re-check (lost message, or late subscription)
};

// Returns a stable lower-case name, e.g. "pubsub".
std::string_view SourceName(Source source) noexcept;

struct Result {
  Status status;
  Source source = Source::kNone;
  // True when this result was delivered to more than one caller in this
  // process (Go's `shared`), or came from a cache or another process.
  bool shared = false;
  // True when Redis could not be reached and this process coalesced the call
  // on its own (Options::when_redis_down == kLocalOnly): another process may
  // have run the same producer meanwhile. Counted in Stats::degraded_calls.
  bool degraded = false;
  // The value bytes, shared immutably by every waiter of the flight. Null when
  // the status is not ok. Holding the pointer keeps the bytes alive; the
  // bytes never change after delivery.
  std::shared_ptr<const std::string> value_ptr;

  bool ok() const { return status.ok(); }
  // A view of the value; valid while value_ptr (or this Result) is alive.
  std::string_view value() const {
    return value_ptr ? std::string_view(*value_ptr) : std::string_view();
  }
};

}  // namespace singleflight
