// UvScheduler: the Scheduler on a libuv loop, with one uv_timer_t for all
// timers and one uv_idle_t that runs deferred tasks on the next loop turn.
//
// Lifetime: create with new; Shutdown(done) stops both handles, and after their
// close callbacks runs `done` and deletes this object. Tasks and timers still
// queued at Shutdown are dropped without running.
#pragma once

#include <uv.h>

#include "scheduler.h"

namespace singleflight::internal {

class UvScheduler final : public Scheduler {
 public:
  // keep_loop_alive: Options::keep_loop_alive (lib/loop_ref.h).
  UvScheduler(uv_loop_t* loop, bool keep_loop_alive);

  uint64_t NowMs() const override;
  void Defer(Task task) override;
  void Shutdown(Task done) override;

 private:
  ~UvScheduler() override = default;
  void OnTimersChanged() override;
  void Arm();
  void RunDeferred();
  static void OnIdle(uv_idle_t* idle);
  static void OnTimer(uv_timer_t* timer);
  static void OnClosed(uv_handle_t* handle);

  uv_loop_t* loop_;
  uv_timer_t timer_;
  uv_idle_t idle_;  // active only while deferred_ is non-empty
  std::vector<Task> deferred_;
  int open_handles_ = 2;
  bool closing_ = false;
  Task close_done_;
};

}  // namespace singleflight::internal
