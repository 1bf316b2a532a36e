// What the soak driver and its workers agree on: the clock, the rolling key
// set and the execution log format.
//
// Clock: CLOCK_MONOTONIC is one clock for every process on the machine, so a
// worker's log and the driver's event log can be compared line by line.
//
// Execution log: one file per worker process, opened O_APPEND and written
// with one write() per line. A line reaches the kernel before the producer
// goes on, so it survives a SIGKILL of the worker and a restart of Redis
// (which would lose an INCR/RPUSH kept in Redis without persistence).
//
//   start <pid> <seq> <mono_ms> <key> <behaviour> [degraded]
//   end   <pid> <seq> <mono_ms> <key> <ok|fail>
//
// A "hang" producer never writes "end": the library fails its flight after
// producer_timeout_ms. "degraded" marks an execution that runs local-only
// because Redis was unreachable at its flight's first check.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>

namespace singleflight::soak {

inline uint64_t MonoMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// Keys roll: generation g is in use from epoch + g * roll_ms on. Callers
// mostly ask for the current generation, sometimes for the previous one, so
// results expire, flights start on fresh keys and old ones fall out of L1.
inline std::string RollingKey(uint64_t generation, int index) {
  return "r" + std::to_string(generation) + "-" + std::to_string(index);
}

}  // namespace singleflight::soak
