// PollUntil: for the fixtures' waits on server state that has no event to
// wait on (a replica's link up, a sentinel knowing a replica, every cluster
// node agreeing on the slots). The condition is the synchronisation; the
// probe interval only bounds how fast it is noticed, and the deadline is a
// hang guard ("it ended at all"), not a timing assertion.
#pragma once

#include <chrono>
#include <thread>

namespace singleflight::test {

// Probes `ready` until it holds or `deadline` passes; returns whether it held.
template <typename Ready>
bool PollUntil(std::chrono::steady_clock::time_point deadline, Ready ready) {
  constexpr auto kProbeInterval = std::chrono::milliseconds(10);
  for (;;) {
    if (ready()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kProbeInterval);
  }
}

}  // namespace singleflight::test
