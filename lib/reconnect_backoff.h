// ReconnectBackoff: how long a connection waits before its next attempt.
//
// Full jitter: each delay is uniform in [min, ceiling], where the ceiling
// starts at min and doubles per failed attempt up to max, so that a fleet that
// lost its Redis at the same instant does not reconnect in lockstep.
#pragma once

#include <cstdint>
#include <random>

namespace singleflight::internal {

class ReconnectBackoff {
 public:
  ReconnectBackoff(uint64_t min_ms, uint64_t max_ms);

  // The delay before the next attempt; each call counts one failed attempt.
  uint64_t Next();
  // A connection came up: the next failure starts from min again.
  void Reset() { failures_ = 0; }

 private:
  uint64_t min_ms_;
  uint64_t max_ms_;
  unsigned failures_ = 0;  // since the last Reset
  std::minstd_rand random_;
};

}  // namespace singleflight::internal
