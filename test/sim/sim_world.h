// The deterministic simulation of a fleet (test/sim/README.md).
//
// RunSeed builds one world from a seed: a virtual clock, one global event
// queue, P simulated processes each running a real internal::GroupImpl over a
// simulated link, one SimRedis that runs the library's own scripts, a random
// workload and random faults. It runs the world to quiescence, checks the
// invariants and returns what failed. The same seed gives the same run: the
// trace (and its fingerprint) is identical on every replay.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace singleflight::sim {

struct Violation {
  std::string invariant;  // "one-callback", "deadline", "executions", ...
  std::string detail;     // what happened, with virtual times
};

struct SeedResult {
  uint64_t seed = 0;
  std::vector<Violation> violations;
  std::vector<std::string> trace;  // filled only when tracing
  std::string setup;               // one line: processes, keys, fault rates
  uint64_t fingerprint = 0;        // hash of the event sequence
  uint64_t events = 0;
  uint64_t calls = 0;
  uint64_t executions = 0;
  uint64_t scripts = 0;
  uint64_t end_ms = 0;
};

// Runs one seed. With `trace`, every step is recorded in SeedResult::trace.
SeedResult RunSeed(uint64_t seed, bool trace);

}  // namespace singleflight::sim
