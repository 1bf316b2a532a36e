// Status: the outcome of one call, as a small set of codes with a message.
//
// Every code says when it happens and what the caller should do about it.
// A Status is a plain value: cheap to copy, safe to keep after a callback.
#pragma once

#include <string>
#include <string_view>

namespace singleflight {

enum class Code {
  // The call produced a value.
  kOk = 0,
  // The producer reported a failure (or threw). The message is the producer's.
  // Every caller sharing the flight, in every process, sees the same failure.
  kProducerError,
  // The caller's wait_timeout passed before a result arrived. The flight goes
  // on for the other callers; retrying later may find the result cached.
  kTimeout,
  // The caller cancelled its own wait through its Call handle.
  kCancelled,
  // Redis is unreachable and the group is configured to fail fast, or the
  // process hit a capacity bound. Retry with a backoff scheme.
  kUnavailable,
  // The key was empty or longer than Options::max_key_bytes, or an option is
  // out of range. Fix the call; retrying will not help.
  kInvalidArgument,
  // The produced value is larger than Options::max_value_bytes.
  kTooLarge,
  // The group was closed before the call finished, or Do was called after Close.
  kClosed,
};

// Returns a stable lower-case name for the code, e.g. "producer_error".
std::string_view CodeName(Code code) noexcept;

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const noexcept { return code_ == Code::kOk; }
  Code code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  // "ok", or "<code name>: <message>".
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace singleflight
