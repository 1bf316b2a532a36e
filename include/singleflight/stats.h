// Stats: counters of one Group since it was created. Monotonic.
#pragma once

#include <cstdint>

namespace singleflight {

struct Stats {
  uint64_t calls = 0;               // Do calls accepted
  uint64_t rejected = 0;            // Do calls refused synchronously
  uint64_t l1_hits = 0;             // answered from the local cache
  uint64_t joins = 0;               // joined a flight already in this process
  uint64_t redis_hits = 0;          // flights answered by a cached Redis result
  uint64_t leads = 0;               // flights where this process ran the producer
  uint64_t pubsub_wakes = 0;        // flights finished by a pub/sub message
  uint64_t fallback_checks = 0;     // re-checks by a follower's fallback timer
  uint64_t fallback_hits = 0;       // re-checks that found the result
  uint64_t takeovers = 0;           // follower became leader after the lock lapsed
  uint64_t timeouts = 0;            // callers whose deadline passed
  uint64_t cancels = 0;             // callers that cancelled
  uint64_t producer_errors = 0;     // flights that ended with a producer error
  uint64_t producer_timeouts = 0;   // producers that never called done in time
  uint64_t done_ignored = 0;        // done calls after the first (or too late)
  uint64_t too_large = 0;           // values refused for size
  uint64_t malformed_dropped = 0;   // wire messages dropped as malformed
  uint64_t reconnects = 0;          // successful Redis reconnects (after the first)
  uint64_t degraded_calls = 0;      // flights run local-only because Redis was down
  uint64_t redis_errors = 0;        // Redis commands that failed
  uint64_t checks = 0;              // get-or-lock round trips answered by Redis
  uint64_t completion_retries = 0;  // completions re-sent after a lost reply
  uint64_t invalidations = 0;       // L1 invalidations received from other processes
  uint64_t inflight = 0;            // flights currently running in this process (gauge)
};

}  // namespace singleflight
