#include "uv_scheduler.h"

#include <limits>

#include "loop_ref.h"

namespace singleflight::internal {

UvScheduler::UvScheduler(uv_loop_t* loop, bool keep_loop_alive) : loop_(loop) {
  uv_timer_init(loop, &timer_);
  uv_idle_init(loop, &idle_);
  KeepsLoopAlive(&timer_, keep_loop_alive);
  KeepsLoopAlive(&idle_, keep_loop_alive);
  timer_.data = this;
  idle_.data = this;
  // Both handles are active only while there is work (a deadline, a deferred
  // callback), so they keep the loop alive exactly as long as a caller waits.
}

uint64_t UvScheduler::NowMs() const {
  return uv_now(loop_);
}

void UvScheduler::Defer(Task task) {
  if (closing_) return;
  if (deferred_.empty()) uv_idle_start(&idle_, OnIdle);
  deferred_.push_back(std::move(task));
}

void UvScheduler::OnTimersChanged() {
  if (!closing_) Arm();
}

void UvScheduler::Arm() {
  uint64_t due = NextDue();
  if (due == std::numeric_limits<uint64_t>::max()) {
    uv_timer_stop(&timer_);
    return;
  }
  uint64_t now = NowMs();
  uv_timer_start(&timer_, OnTimer, due > now ? due - now : 0, 0);
}

void UvScheduler::RunDeferred() {
  // Tasks deferred by these tasks run on the next turn, so a task that keeps
  // deferring cannot starve I/O.
  std::vector<Task> batch;
  batch.swap(deferred_);
  for (auto& task : batch) {
    if (closing_) break;
    task();
  }
  if (deferred_.empty() && !closing_) uv_idle_stop(&idle_);
}

void UvScheduler::OnIdle(uv_idle_t* idle) {
  static_cast<UvScheduler*>(idle->data)->RunDeferred();
}

void UvScheduler::OnTimer(uv_timer_t* timer) {
  auto* self = static_cast<UvScheduler*>(timer->data);
  self->RunDueTimers(self->NowMs());
  if (!self->closing_) self->Arm();
}

void UvScheduler::Shutdown(Task done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  deferred_.clear();
  DropAllTimers();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), OnClosed);
}

void UvScheduler::OnClosed(uv_handle_t* handle) {
  auto* self = static_cast<UvScheduler*>(handle->data);
  if (--self->open_handles_ > 0) return;
  Task done = std::move(self->close_done_);
  delete self;
  if (done) done();
}

}  // namespace singleflight::internal
