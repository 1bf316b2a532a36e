// Helpers that let tests wait for events by running the loop, never by
// sleeping: a guard timer bounds each wait so a hang fails instead of hanging.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>

#include "scheduler.h"

namespace singleflight::test {

// The production scheduler on a test's loop, for tests that build
// connections by hand (a Group makes its own). Shut down by the destructor,
// whose handles then close on the next Drain: destroy it after everything
// built on it has closed, before draining the loop.
class LoopScheduler {
 public:
  explicit LoopScheduler(uv_loop_t* loop);
  ~LoopScheduler();
  LoopScheduler(const LoopScheduler&) = delete;
  LoopScheduler& operator=(const LoopScheduler&) = delete;
  internal::Scheduler* get() const { return scheduler_; }

 private:
  internal::Scheduler* scheduler_;  // a UvScheduler; frees itself after Shutdown
};

// Runs `loop` until `done()` holds or `timeout_ms` passes. Returns done().
// The timeout is a hang guard, not a timing assertion: generous enough for a
// machine ten times slower than a quiet one.
// It returns right after the loop turn in which `done()` became true and runs
// no further turn, so a test can act between two steps of the library (e.g.
// cancel after a message was read but before the command it caused was
// written). The hang guard's close completes on the loop's next run.
bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done, uint64_t timeout_ms = 60000);

// Runs `loop` until nothing is left on it (every handle closed, every request
// finished). Returns false if work was still pending after `timeout_ms`.
bool Drain(uv_loop_t* loop, uint64_t timeout_ms = 60000);

}  // namespace singleflight::test
