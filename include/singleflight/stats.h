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
  // Protocol v2 (docs/protocol.md, "Leases" and "Error classes").
  uint64_t leases_lost = 0;       // a leader learned its lock was no longer its own
  uint64_t leases_released = 0;   // locks taken by flights that no longer wanted them, released
  uint64_t leases_abandoned = 0;  // possibly-held locks Close could not settle (left to lapse)
  uint64_t foreign_dropped = 0;   // messages from a token other than the observed holder
  uint64_t unknown_outcomes = 0;  // commands sent whose answer was lost (timeout, disconnect)
  uint64_t error_replies_retryable = 0;  // BUSY, LOADING, TRYAGAIN, MASTERDOWN replies
  uint64_t error_replies_fatal = 0;      // OOM, NOPERM, READONLY, MOVED, ... replies
  uint64_t undecodable_results = 0;      // stored results this process cannot decode (ran locally)
  uint64_t subscriber_reconnects = 0;    // subscriber connection re-established (after the first)
  uint64_t subscriber_errors = 0;        // subscriber connection lost or failed to connect
  uint64_t inflight = 0;                 // flights currently running in this process (gauge)
};

}  // namespace singleflight
