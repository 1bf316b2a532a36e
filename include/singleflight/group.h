// Group: coalesce concurrent requests for one key across a fleet of processes.
//
// For a key, one caller in the fleet runs the producer; every other caller, in
// this process or another one sharing the Redis server, waits for and shares
// that one result. Results are cached in-process (L1) and in Redis.
//
// Threading: a Group lives on one libuv loop and every call into it, and every
// callback out of it, happens on that loop's thread. It is not thread-safe,
// like libuv itself. The group never runs the loop; the application does.
//
// Lifetime: Close(cb) fails pending calls with kClosed, closes every handle and
// then calls cb from the loop. Destroying a Group that was not closed closes it
// without a callback. In both cases the memory behind the group is reclaimed
// from close callbacks, so the application must keep running the loop until
// it has no more handles (uv_run returns and uv_loop_close succeeds).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "singleflight/options.h"
#include "singleflight/result.h"
#include "singleflight/stats.h"
#include "singleflight/status.h"

namespace singleflight {

namespace internal {
class GroupImpl;
struct Waiter;
struct ProductionSlot;
}  // namespace internal

// What the producer knows about the flight it runs.
struct ProducerContext {
  std::string_view key;  // the caller's key (valid during the producer call)
};

// The producer's one way to report its outcome. Copyable; every copy refers to
// the same production. The first call wins; later calls, calls after the
// production timed out and calls after Close are ignored and return false
// (the timeout itself is counted, in Stats::producer_timeouts). Call it on
// the loop's thread, from inside the producer or any time later.
class Done {
 public:
  // Success: `value` becomes the shared result.
  bool operator()(std::string value) const;
  // Failure: every caller of the flight gets kProducerError with `message`.
  bool Fail(std::string message) const;
  // Registers a callback run once, on the loop, when the production is given
  // up before it reported: it ran past producer_timeout_ms (its callers then
  // get kTimeout) or the group closed (kClosed). It runs before those callers
  // are answered; never once the producer has reported, never inside a Done
  // call; right away if the production was already given up. For producers
  // that can stop their work (the Node binding aborts ctx.signal with it).
  // One callback per production: a later one replaces it.
  void OnAbandon(std::function<void()> on_abandon) const;

  explicit Done(std::shared_ptr<internal::ProductionSlot> slot) : slot_(std::move(slot)) {}

 private:
  std::shared_ptr<internal::ProductionSlot> slot_;
};

// Starts the work for a key and calls done exactly once, later or right away.
// An exception thrown by the producer fails the flight with kProducerError.
using Producer = std::function<void(const ProducerContext&, Done)>;

// Receives the one result of a call. Runs exactly once per accepted call, on
// the loop, never inside Do. Exceptions must not escape it: one that does is
// caught, dropped and the process goes on (the callback is noexcept in spirit).
using Callback = std::function<void(const Result&)>;

// A handle to one call: whether Do accepted it, and a way to stop waiting.
class Call {
 public:
  Call() = default;

  // Ok when the call was accepted (its callback will run exactly once). When
  // not ok, the callback will never run and this is the reason.
  const Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }

  // Stops this caller's wait: its callback runs with kCancelled (from the
  // loop, not from inside Cancel). The flight goes on for other callers.
  // Returns false when the call already has its result, or was not accepted.
  bool Cancel();

 private:
  friend class internal::GroupImpl;
  friend class Group;
  Status status_;
  std::weak_ptr<internal::Waiter> waiter_;
};

class Group {
 public:
  // The group does not take ownership of the loop. Options are validated
  // here; with a bad option every Do returns kInvalidArgument saying which.
  // With Options::redis set, connecting starts at once (off the loop thread
  // for name resolution); calls made before the first attempt settles wait
  // for it rather than degrade.
  explicit Group(uv_loop_t* loop, Options options = {});
  ~Group();

  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // Returns a Call whose status says whether the request was accepted; when
  // it was not (bad key, group closed, capacity), `callback` is never called.
  [[nodiscard]] Call Do(std::string_view key, Producer producer, Callback callback,
                        CallOptions call_options = {});

  // Drops the key everywhere: this process's L1, the Redis result, and (by a
  // broadcast) the L1 of every other process. A flight already running for
  // the key still answers its own callers, but later calls start a new one.
  // While Redis is unreachable the Redis part waits for the connection.
  void Forget(std::string_view key);

  Stats stats() const;

  // Fails pending calls with kClosed (their callbacks run before `done`),
  // releases the locks this process holds (so another process can take over
  // at once), closes every handle, then calls `done` from the loop. Safe to
  // call from inside a callback. A second Close changes nothing but its
  // `done` is called too (at once if the first Close has already finished).
  // After Close, Do returns kClosed and Done calls are ignored.
  void Close(std::function<void()> done = nullptr);

 private:
  internal::GroupImpl* impl_;  // frees itself after Close; then set to null
  Stats last_stats_;           // what stats() answers once impl_ is gone
};

}  // namespace singleflight
