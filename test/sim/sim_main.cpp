// The simulation runner (test/sim/README.md).
//
//   Sim.Seeds          SIM_SEEDS seeds (default 10000) from SIM_START (default 1);
//                      prints every failing seed per invariant and the trace of
//                      the first one. SIM_SEED=n replays one seed with its full
//                      trace instead.
//   Sim.RegressionSeeds  seeds beyond that range that once broke an invariant.
//   Sim.SameInABatchAsAlone  a seed's run does not depend on the seeds before it.
//   Sim.Deterministic  a seed replays to the same event sequence, traced or not.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "sim/sim_world.h"

namespace singleflight::sim {
namespace {

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

void PrintTrace(const SeedResult& r, size_t tail) {
  size_t from = r.trace.size() > tail ? r.trace.size() - tail : 0;
  if (from > 0)
    std::printf("  ... (%zu earlier lines; scripts/sim.sh --replay %llu prints all)\n", from,
                static_cast<unsigned long long>(r.seed));
  for (size_t i = from; i < r.trace.size(); ++i) std::printf("  %s\n", r.trace[i].c_str());
}

void PrintViolations(const SeedResult& r) {
  for (const auto& v : r.violations) {
    std::printf("  [%s] %s\n", v.invariant.c_str(), v.detail.c_str());
  }
}

TEST(Sim, Seeds) {
  if (std::getenv("SIM_SEED") != nullptr) {
    uint64_t seed = EnvU64("SIM_SEED", 1);
    SeedResult r = RunSeed(seed, true);
    std::printf("seed %llu: %s\n", static_cast<unsigned long long>(seed), r.setup.c_str());
    PrintTrace(r, r.trace.size());
    std::printf(
        "seed %llu: %llu events, %llu calls, %llu executions, %llu scripts, end t=%llu, "
        "fingerprint %016llx\n",
        static_cast<unsigned long long>(seed), static_cast<unsigned long long>(r.events),
        static_cast<unsigned long long>(r.calls), static_cast<unsigned long long>(r.executions),
        static_cast<unsigned long long>(r.scripts), static_cast<unsigned long long>(r.end_ms),
        static_cast<unsigned long long>(r.fingerprint));
    PrintViolations(r);
    EXPECT_TRUE(r.violations.empty()) << "seed " << seed << " broke an invariant (above)";
    return;
  }
  uint64_t count = EnvU64("SIM_SEEDS", 10000);
  uint64_t start = EnvU64("SIM_START", 1);
  auto began = std::chrono::steady_clock::now();
  std::map<std::string, std::vector<uint64_t>> failing;  // invariant -> seeds
  std::map<std::string, std::string> example;            // invariant -> one detail
  uint64_t failed_seeds = 0, events = 0, calls = 0;
  uint64_t first_failure = 0;
  for (uint64_t seed = start; seed < start + count; ++seed) {
    SeedResult r = RunSeed(seed, false);
    events += r.events;
    calls += r.calls;
    if (r.violations.empty()) continue;
    if (failed_seeds++ == 0) first_failure = seed;
    std::map<std::string, bool> seen;
    for (const auto& v : r.violations) {
      if (seen[v.invariant]) continue;
      seen[v.invariant] = true;
      failing[v.invariant].push_back(seed);
      if (!example.count(v.invariant)) {
        example[v.invariant] = "seed " + std::to_string(seed) + ": " + v.detail;
      }
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  std::printf(
      "sim: %llu seeds from %llu in %.1f s (%.0f seeds/s), %llu events, %llu calls; "
      "%llu seeds failed\n",
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(start), seconds,
      count / seconds, static_cast<unsigned long long>(events),
      static_cast<unsigned long long>(calls), static_cast<unsigned long long>(failed_seeds));
  for (const auto& entry : failing) {
    std::printf("  %-13s %zu seeds, e.g.", entry.first.c_str(), entry.second.size());
    for (size_t i = 0; i < entry.second.size() && i < 8; ++i) {
      std::printf(" %llu", static_cast<unsigned long long>(entry.second[i]));
    }
    std::printf("\n    %s\n", example[entry.first].c_str());
  }
  if (failed_seeds > 0) {
    SeedResult r = RunSeed(first_failure, true);
    std::printf("first failing seed %llu (%s); replay: scripts/sim.sh --replay %llu\n",
                static_cast<unsigned long long>(first_failure), r.setup.c_str(),
                static_cast<unsigned long long>(first_failure));
    PrintTrace(r, 120);
    PrintViolations(r);
  }
  EXPECT_EQ(failed_seeds, 0u) << "seeds broke invariants (summary above)";
}

// Seeds outside Sim.Seeds' range that once broke an invariant (README.md
// here, "Seeds that found bugs"): each must stay clean.
TEST(Sim, RegressionSeeds) {
  for (uint64_t seed : {31867ull}) {
    SeedResult r = RunSeed(seed, false);
    if (!r.violations.empty()) PrintViolations(r);
    EXPECT_TRUE(r.violations.empty()) << "seed " << seed << " broke an invariant again";
  }
}

// A seed's run does not depend on what ran before it in the process (heap
// addresses, which a pointer-keyed container would iterate in): a batch
// failure replays alone.
TEST(Sim, SameInABatchAsAlone) {
  const uint64_t count = EnvU64("SIM_BATCH", 1100);
  std::vector<uint64_t> alone;
  for (uint64_t seed = 1; seed <= count; ++seed) alone.push_back(RunSeed(seed, false).fingerprint);
  for (uint64_t seed = count; seed >= 1; --seed) {
    EXPECT_EQ(RunSeed(seed, false).fingerprint, alone[seed - 1]) << "seed " << seed;
  }
}

TEST(Sim, Deterministic) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    SeedResult a = RunSeed(seed, false);
    SeedResult b = RunSeed(seed, true);
    SeedResult c = RunSeed(seed, true);
    EXPECT_EQ(a.fingerprint, b.fingerprint) << "tracing changed seed " << seed;
    EXPECT_EQ(b.fingerprint, c.fingerprint) << "seed " << seed << " did not replay";
    EXPECT_EQ(b.trace, c.trace) << "seed " << seed << " did not replay";
    EXPECT_EQ(a.violations.size(), b.violations.size());
  }
}

}  // namespace
}  // namespace singleflight::sim
