// sf_demo: N worker processes, each with its own loop and singleflight::Group,
// hit K keys at one shared instant; the parent checks that every key ran once
// per burst across the whole fleet, and that a SIGKILLed leader is replaced.
//
// One binary plays both parts: `sf_demo --redis H:P` is the parent, which
// re-executes itself with `--worker` for each worker process.
//
// Parent <-> worker protocol, one line each, over the worker's stdin/stdout:
//   worker: "ready"                        (its group has reached Redis once)
//   parent: "go <t0>"                      (t0: uv_hrtime() of the shared start)
//   worker: "lead <key> <execution>"       (its producer started; execution from INCR)
//   worker: "produced <key>"               (its producer called done)
//   worker: "result <key> <code> <source> <latency_us> <value-or-message>"
//   worker: "stats <name>=<n> ..."         (this burst's counters), then it exits 0
#pragma once

#include <cstdint>
#include <string>

#include "common/redis_target.h"

namespace sfdemo {

struct Config {
  examples::RedisTarget redis;  // required
  int workers = 4;
  int callers = 25;
  int keys = 3;
  uint32_t work_ms = 200;
  // Short TTLs so the demo shows a refill and a takeover within seconds; a
  // real service keeps the library's defaults (10 s each).
  uint32_t result_ttl_ms = 1000;
  uint32_t lock_ttl_ms = 1000;
  // 0: followers never poll; they are woken by the message, and re-check
  // only when a lock would lapse (a killed leader) — the library's default.
  uint32_t fallback_ms = 0;
  uint32_t wait_timeout_ms = 20000;
  // Private per run (default "sfdemo:<parent pid>:"), so reruns against the
  // same Redis never see an earlier run's results or counters.
  std::string prefix;
  // Worker only: which burst it belongs to (names its execution counters).
  int burst = 0;
  // Worker only: its position in the burst. Worker i asks for key-i first, so
  // the race for the locks is not always won by the worker that got "go" first.
  int index = 0;
  bool worker = false;
};

// Parses argv; on a bad or missing argument prints why and returns false.
bool ParseArgs(int argc, char** argv, Config* config);

// The Redis key that counts executions of `key` in `burst`. INCRed before the
// work starts, so an execution that is then SIGKILLed is still counted.
std::string ExecutionCounter(const Config& config, int burst, const std::string& key);

std::string KeyName(int index);

int RunWorker(const Config& config);
int RunParent(const Config& config);

}  // namespace sfdemo
