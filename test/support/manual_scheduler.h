// ManualScheduler: a Scheduler whose clock only moves when the test says so.
// Deferred tasks run on RunPending()/Advance(), never inside Defer, exactly
// like the loop would run them.
#pragma once

#include <cstdint>
#include <vector>

#include "scheduler.h"

namespace singleflight::test {

class ManualScheduler final : public internal::Scheduler {
 public:
  uint64_t NowMs() const override { return now_ms_; }
  void Defer(Task task) override {
    if (!shut_down_) deferred_.push_back(std::move(task));
  }
  void Shutdown(Task done) override {
    shut_down_ = true;
    deferred_.clear();
    DropAllTimers();
    if (done) done();
  }

  // Runs deferred tasks (and the ones they defer) until none is left.
  size_t RunPending() {
    size_t ran = 0;
    while (!deferred_.empty()) {
      std::vector<Task> batch;
      batch.swap(deferred_);
      for (auto& task : batch) task();
      ran += batch.size();
    }
    return ran;
  }

  // Moves the clock forward, firing due timers in order, each followed by
  // the deferred work it caused.
  void Advance(uint64_t ms) {
    uint64_t target = now_ms_ + ms;
    RunPending();
    while (NextDue() <= target) {
      now_ms_ = NextDue();
      RunDueTimers(now_ms_);
      RunPending();
    }
    now_ms_ = target;
  }

  bool shut_down() const { return shut_down_; }

 private:
  uint64_t now_ms_ = 1000;
  std::vector<Task> deferred_;
  bool shut_down_ = false;
};

}  // namespace singleflight::test
