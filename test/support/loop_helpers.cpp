#include "support/loop_helpers.h"

#include "uv_scheduler.h"

namespace singleflight::test {
namespace {

struct Guard {
  uv_timer_t timer;
  bool fired = false;
};

Guard* StartGuard(uv_loop_t* loop, uint64_t timeout_ms, bool stop_loop) {
  auto* guard = new Guard;
  uv_timer_init(loop, &guard->timer);
  guard->timer.data = guard;
  auto on_fire = [](uv_timer_t* timer) noexcept {
    static_cast<Guard*>(timer->data)->fired = true;
    uv_stop(timer->loop);
  };
  auto on_fire_keep_running = [](uv_timer_t* timer) noexcept {
    static_cast<Guard*>(timer->data)->fired = true;
  };
  uv_timer_start(&guard->timer, stop_loop ? +on_fire : +on_fire_keep_running, timeout_ms, 0);
  return guard;
}

void CloseGuard(Guard* guard) {
  uv_close(reinterpret_cast<uv_handle_t*>(&guard->timer),
           [](uv_handle_t* handle) noexcept { delete static_cast<Guard*>(handle->data); });
}

}  // namespace

bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done, uint64_t timeout_ms) {
  Guard* guard = StartGuard(loop, timeout_ms, false);
  while (!done() && !guard->fired) uv_run(loop, UV_RUN_ONCE);
  CloseGuard(guard);
  return done();
}

bool Drain(uv_loop_t* loop, uint64_t timeout_ms) {
  Guard* guard = StartGuard(loop, timeout_ms, true);
  // Unreferenced, the guard does not keep the loop alive by itself.
  uv_unref(reinterpret_cast<uv_handle_t*>(&guard->timer));
  uv_run(loop, UV_RUN_DEFAULT);
  bool drained = !guard->fired;
  CloseGuard(guard);
  if (drained) uv_run(loop, UV_RUN_DEFAULT);
  return drained;
}

LoopScheduler::LoopScheduler(uv_loop_t* loop)
    : scheduler_(new internal::UvScheduler(loop, /*keep_loop_alive=*/true)) {}

LoopScheduler::~LoopScheduler() {
  scheduler_->Shutdown(nullptr);
}

}  // namespace singleflight::test
