#include "scheduler.h"

#include <limits>

namespace singleflight::internal {

Scheduler::TimerId Scheduler::After(uint64_t delay_ms, Task task) {
  TimerId id{NowMs() + delay_ms, next_seq_++};
  bool earliest = timers_.empty() || id.due < timers_.begin()->first.first;
  timers_.emplace(std::make_pair(id.due, id.seq), std::move(task));
  if (earliest) OnTimersChanged();
  return id;
}

void Scheduler::Cancel(TimerId& id) {
  if (!id.valid()) return;
  auto found = timers_.find({id.due, id.seq});
  id = TimerId{};
  if (found == timers_.end()) return;
  bool was_earliest = found == timers_.begin();
  timers_.erase(found);
  // Re-arm only when the earliest changed: a backing timer left armed for a
  // cancelled deadline would keep the application's loop alive until then.
  if (was_earliest) OnTimersChanged();
}

size_t Scheduler::RunDueTimers(uint64_t now) {
  size_t ran = 0;
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    node.mapped()();
    ++ran;
  }
  return ran;
}

uint64_t Scheduler::NextDue() const {
  return timers_.empty() ? std::numeric_limits<uint64_t>::max() : timers_.begin()->first.first;
}

}  // namespace singleflight::internal
