// Scheduler: the group's only view of time. Deferred calls and timers go
// through it, so the flight logic can run on a real libuv loop (UvScheduler)
// or on a clock a unit test advances by hand (test/support/manual_scheduler.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

namespace singleflight::internal {

class Scheduler {
 public:
  using Task = std::function<void()>;
  // Identifies one timer; default-constructed means "no timer".
  struct TimerId {
    uint64_t due = 0;
    uint64_t seq = 0;
    bool valid() const { return seq != 0; }
  };

  virtual ~Scheduler() = default;

  // Monotonic milliseconds.
  virtual uint64_t NowMs() const = 0;
  // Runs `task` soon, from the loop, never inside the call to Defer. Tasks run
  // in the order they were deferred.
  virtual void Defer(Task task) = 0;
  // Runs `task` once, `delay_ms` from now. Cancel before it fires to stop it.
  TimerId After(uint64_t delay_ms, Task task);
  // Stops a timer that has not fired yet and resets `id`. Harmless on an
  // invalid or already-fired id.
  void Cancel(TimerId& id);
  // Stops everything: queued tasks and timers are dropped without running,
  // then `done` runs (from the loop for a real scheduler).
  virtual void Shutdown(Task done) = 0;

 protected:
  // Runs every timer due at `now`, in due order (timers added meanwhile for a
  // time <= now run too). Returns the number run.
  size_t RunDueTimers(uint64_t now);
  // The earliest due time, or UINT64_MAX when no timer is set.
  uint64_t NextDue() const;
  // Called after the earliest due time may have changed.
  virtual void OnTimersChanged() {}
  void DropAllTimers() { timers_.clear(); }

 private:
  std::map<std::pair<uint64_t, uint64_t>, Task> timers_;  // (due, seq) -> task
  uint64_t next_seq_ = 1;
};

}  // namespace singleflight::internal
