// Micro-benchmarks (Google Benchmark): the per-call costs behind the scenario
// numbers. docs/benchmarks.md has the results and bench/run.sh runs them.
//
// The Redis benchmarks need a server: set SF_BENCH_REDIS=HOST:PORT (run.sh
// starts a private one). Without it they are skipped.
//
// Memory is counted by replacing the global operator new/delete (the
// library's allocations resolve to these too), so the memory benchmarks
// report live heap bytes, as malloc_usable_size sees them. Counting is on only
// inside the memory benchmarks: elsewhere it would add its own cost.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <uv.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "envelope.h"
#include "l1_cache.h"
#include "singleflight/group.h"
#include "token.h"

// ----------------------------- heap accounting ------------------------------

namespace {
std::atomic<long long> g_live_bytes{0};
bool g_counting = false;  // single-threaded benchmarks: a plain flag will do

void* CountedAlloc(size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  if (g_counting) {
    g_live_bytes.fetch_add(static_cast<long long>(malloc_usable_size(p)),
                           std::memory_order_relaxed);
  }
  return p;
}

void CountedFree(void* p) {
  if (p == nullptr) return;
  if (g_counting) {
    g_live_bytes.fetch_sub(static_cast<long long>(malloc_usable_size(p)),
                           std::memory_order_relaxed);
  }
  std::free(p);
}
}  // namespace

void* operator new(size_t size) {
  return CountedAlloc(size);
}
void* operator new[](size_t size) {
  return CountedAlloc(size);
}
void operator delete(void* p) noexcept {
  CountedFree(p);
}
void operator delete[](void* p) noexcept {
  CountedFree(p);
}
void operator delete(void* p, size_t) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, size_t) noexcept {
  CountedFree(p);
}

namespace {

using singleflight::Done;
using singleflight::Group;
using singleflight::ProducerContext;
using singleflight::Result;

// ------------------------------- helpers -------------------------------------

// A loop of our own per benchmark, closed (and checked for leaks) at the end.
class Loop {
 public:
  Loop() { uv_loop_init(&loop_); }
  ~Loop() {
    uv_run(&loop_, UV_RUN_DEFAULT);  // lets the group's close callbacks run
    if (uv_loop_close(&loop_) != 0) std::fprintf(stderr, "micro_bench: loop left handles open\n");
  }
  uv_loop_t* get() { return &loop_; }
  void Turn() { uv_run(&loop_, UV_RUN_NOWAIT); }
  void Once() { uv_run(&loop_, UV_RUN_ONCE); }

 private:
  uv_loop_t loop_;
};

singleflight::Options LocalOptions() {
  singleflight::Options options;
  options.l1_ttl_ms = 600000;  // nothing expires during a benchmark
  options.result_ttl_ms = 600000;
  options.max_inflight_keys = 1u << 20;
  options.max_waiters_per_flight = 1u << 24;
  return options;
}

// SF_BENCH_REDIS=URL (Options::FromUrl: redis://, rediss://, unix://,
// host:port), or false when unset or malformed.
bool RedisFromEnv(singleflight::Options* options) {
  const char* env = std::getenv("SF_BENCH_REDIS");
  return env != nullptr && singleflight::Options::FromUrl(env, options).ok();
}

// Runs one call to completion; false if it did not end ok.
bool RunOne(Loop& loop, Group& group, const std::string& key, const std::string& value) {
  bool finished = false, ok = false;
  auto call = group.Do(
      key, [value](const ProducerContext&, Done done) { done(value); },
      [&](const Result& r) {
        finished = true;
        ok = r.ok();
      });
  if (!call.ok()) return false;
  while (!finished) loop.Once();
  return ok;
}

void CloseGroup(Loop& loop, Group& group) {
  bool closed = false;
  group.Close([&] { closed = true; });
  while (!closed) loop.Once();
}

// ---------------------------- in-process paths -------------------------------

// A Do answered from L1, including the deferred delivery of its callback.
void BM_L1Hit(benchmark::State& state) {
  Loop loop;
  Group group(loop.get(), LocalOptions());
  const std::string key = "hot-key";
  if (!RunOne(loop, group, key, std::string(100, 'v'))) state.SkipWithError("priming failed");
  long long delivered = 0;
  auto producer = [](const ProducerContext&, Done done) { done("never"); };
  auto callback = [&delivered](const Result&) { ++delivered; };
  int batch = 0;
  for (auto _ : state) {
    auto call = group.Do(key, producer, callback);
    benchmark::DoNotOptimize(call);
    if (++batch == 256) {  // deliver in batches, as a busy loop would
      loop.Turn();
      batch = 0;
    }
  }
  loop.Turn();
  if (delivered != static_cast<long long>(state.iterations()))
    state.SkipWithError("lost callbacks");
  state.SetItemsProcessed(state.iterations());
  CloseGroup(loop, group);
}
BENCHMARK(BM_L1Hit);

// The cache lookup alone.
void BM_L1CacheGet(benchmark::State& state) {
  singleflight::internal::L1Cache cache(10000, 64u << 20);
  for (int i = 0; i < 10000; ++i) {
    cache.Put("key-" + std::to_string(i), std::make_shared<const std::string>(100, 'v'), 1u << 30);
  }
  int i = 0;
  std::vector<std::string> keys;
  for (int k = 0; k < 10000; ++k) keys.push_back("key-" + std::to_string(k));
  for (auto _ : state) {
    benchmark::DoNotOptimize(cache.Get(keys[i], 1));
    i = (i + 1) % 10000;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_L1CacheGet);

// Joining an in-process flight: per joined caller, the Do and (amortized
// over kJoiners) the flight's start, its completion and every delivery.
constexpr int kJoiners = 1000;

void BM_JoinPerCaller(benchmark::State& state) {
  Loop loop;
  auto options = LocalOptions();
  options.l1_max_entries = 0;  // every round starts a new flight
  Group group(loop.get(), options);
  std::vector<Done> pending;
  auto producer = [&pending](const ProducerContext&, Done done) { pending.push_back(done); };
  long long delivered = 0;
  auto callback = [&delivered](const Result&) { ++delivered; };
  int joined = kJoiners;
  for (auto _ : state) {
    if (joined == kJoiners) {  // finish this round's flight, start the next
      for (auto& done : pending) done("value");
      pending.clear();
      loop.Turn();
      joined = 0;
    }
    auto call = group.Do("key", producer, callback);
    benchmark::DoNotOptimize(call);
    ++joined;
  }
  for (auto& done : pending) done("value");
  loop.Turn();
  if (delivered != static_cast<long long>(state.iterations()))
    state.SkipWithError("lost callbacks");
  state.SetItemsProcessed(state.iterations());
  CloseGroup(loop, group);
}
BENCHMARK(BM_JoinPerCaller);

// ------------------------------ the envelope ---------------------------------

singleflight::internal::Envelope MakeEnvelope(size_t value_bytes) {
  singleflight::internal::Envelope e;
  e.ok = true;
  e.value.assign(value_bytes, 'v');
  e.token = singleflight::internal::RandomToken();
  e.produced_at_ms = 1700000000000;
  return e;
}

void BM_EnvelopeEncode(benchmark::State& state) {
  auto e = MakeEnvelope(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(singleflight::internal::EncodeEnvelope(e));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EnvelopeEncode)->Arg(100)->Arg(10 << 10)->Arg(1 << 20);

void BM_EnvelopeDecode(benchmark::State& state) {
  std::string bytes =
      singleflight::internal::EncodeEnvelope(MakeEnvelope(static_cast<size_t>(state.range(0))));
  auto limits = singleflight::internal::DecodeLimits::ForMaxValue(4u << 20);
  for (auto _ : state) {
    singleflight::internal::Envelope out;
    auto status = singleflight::internal::DecodeEnvelope(bytes, limits, &out);
    if (!status.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_EnvelopeDecode)->Arg(100)->Arg(10 << 10)->Arg(1 << 20);

// ----------------------------- against Redis ---------------------------------

// Full flights on distinct keys: get-or-lock, lead, a producer that answers
// at once, complete (store + publish + release). Arg = flights in the air.
void BM_FlightDistinctKeys(benchmark::State& state) {
  auto options = LocalOptions();
  if (!RedisFromEnv(&options)) return state.SkipWithError("SF_BENCH_REDIS is not set");
  options.key_prefix = "sfmb:" + std::to_string(uv_os_getpid()) + ":";
  options.result_ttl_ms = 5000;  // keeps the server small; nothing re-reads the keys
  options.l1_ttl_ms = 5000;
  Loop loop;
  Group group(loop.get(), options);
  if (!RunOne(loop, group, "warmup", "w")) {
    CloseGroup(loop, group);
    return state.SkipWithError("cannot reach Redis");
  }
  const int depth = static_cast<int>(state.range(0));
  const std::string value(100, 'v');
  auto producer = [&value](const ProducerContext&, Done done) { done(value); };
  // Google Benchmark calls this function several times: keys stay distinct
  // across those runs, so that no flight finds an earlier result.
  static long long next_key = 0;
  long long launched = 0, completed = 0, consumed = 0, failed = 0;
  auto callback = [&](const Result& r) {
    ++completed;
    if (!r.ok() || r.source != singleflight::Source::kLed) {
      if (failed++ == 0) {
        std::fprintf(stderr, "flight: %s source=%s\n", r.status.ToString().c_str(),
                     std::string(singleflight::SourceName(r.source)).c_str());
      }
    }
  };
  auto launch = [&] {
    auto call = group.Do("k" + std::to_string(next_key++), producer, callback);
    if (call.ok()) ++launched;
  };
  for (auto _ : state) {
    while (launched - completed < depth) launch();
    while (completed == consumed) loop.Once();
    ++consumed;
  }
  while (completed < launched) loop.Once();
  if (failed > 0) state.SkipWithError("some flights did not lead");
  state.SetItemsProcessed(state.iterations());
  CloseGroup(loop, group);
}
BENCHMARK(BM_FlightDistinctKeys)->Arg(1)->Arg(64)->UseRealTime();

// --------------------------------- memory -------------------------------------

constexpr int kMemoryKeys = 10000;

// Live heap per key while its flight waits on its producer (one caller each).
// Local-only: the group's own state. With Redis: leaders that hold the lock.
void MeasureInflight(benchmark::State& state, bool with_redis) {
  auto options = LocalOptions();
  if (with_redis && !RedisFromEnv(&options))
    return state.SkipWithError("SF_BENCH_REDIS is not set");
  options.key_prefix = "sfmm:" + std::to_string(uv_os_getpid()) + ":";
  Loop loop;
  Group group(loop.get(), options);
  if (with_redis && !RunOne(loop, group, "warmup", "w")) {
    CloseGroup(loop, group);
    return state.SkipWithError("cannot reach Redis");
  }
  std::vector<std::string> keys;
  for (int i = 0; i < kMemoryKeys; ++i) keys.push_back("key-" + std::to_string(100000 + i));
  std::vector<Done> pending;
  pending.reserve(kMemoryKeys);
  long long delivered = 0;
  for (auto _ : state) {
    loop.Turn();
    g_counting = true;
    long long before = g_live_bytes.load();
    for (const auto& key : keys) {
      auto call = group.Do(
          key, [&pending](const ProducerContext&, Done done) { pending.push_back(done); },
          [&delivered](const Result&) { ++delivered; });
      benchmark::DoNotOptimize(call);
    }
    // Let every get-or-lock answer, so each flight is a leader holding its lock.
    while (static_cast<int>(pending.size()) < kMemoryKeys) loop.Once();
    long long after = g_live_bytes.load();
    g_counting = false;  // frees of what was counted are not subtracted: fine, we are done
    state.counters["bytes_per_inflight_key"] =
        static_cast<double>(after - before) / static_cast<double>(kMemoryKeys);
    for (auto& done : pending) done("v");
    pending.clear();
    while (delivered < kMemoryKeys) loop.Once();
  }
  CloseGroup(loop, group);
}

void BM_MemoryPerInflightKeyLocal(benchmark::State& state) {
  MeasureInflight(state, false);
}
BENCHMARK(BM_MemoryPerInflightKeyLocal)->Iterations(1);

void BM_MemoryPerInflightKeyRedis(benchmark::State& state) {
  MeasureInflight(state, true);
}
BENCHMARK(BM_MemoryPerInflightKeyRedis)->Iterations(1);

// Live heap per L1 entry holding a 100-byte value under a 10-byte key, and
// what is left after subtracting those 110 bytes (the cache's overhead).
void BM_MemoryPerL1Entry(benchmark::State& state) {
  for (auto _ : state) {
    g_counting = true;
    long long before = g_live_bytes.load();
    {
      singleflight::internal::L1Cache cache(kMemoryKeys, 64u << 20);
      for (int i = 0; i < kMemoryKeys; ++i) {
        cache.Put("key-" + std::to_string(100000 + i),
                  std::make_shared<const std::string>(100, 'v'), 1u << 30);
      }
      double per_entry =
          static_cast<double>(g_live_bytes.load() - before) / static_cast<double>(kMemoryKeys);
      state.counters["bytes_per_l1_entry"] = per_entry;
      state.counters["overhead_per_l1_entry"] = per_entry - 110;
    }
    g_counting = false;
  }
}
BENCHMARK(BM_MemoryPerL1Entry)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
