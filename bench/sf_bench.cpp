// sf_bench: the scenario driver. It spawns P worker processes that share one
// Redis server, starts all their callers at one wall-clock instant, and
// prints one JSON line that says how many times the producer ran, how long
// the callers waited, and how many commands Redis processed.
//
//   sf_bench --redis HOST:PORT | --redis-url URL (else $SINGLEFLIGHT_REDIS) [-P N] [-C N] [-W MS]
//   [--keys K]
//            [--lock-ttl-ms MS] [--result-ttl-ms MS] [--fallback-ms MS]
//            [--call-timeout-ms MS] [--fail once|always] [--crash] [--slow]
//            [--late-ms MS] [--value-bytes N] [--scenario NAME] [--out FILE]
//   sf_bench ... --scenario hot --rate CALLS_PER_S --duration-ms D [-P N] [-W MS]
//            [--result-ttl-ms MS]
//
// Method (docs/benchmarks.md): each worker connects and warms up (one flight
// of its own), then waits for "go <start>" on stdin. The producer INCRs an
// execution counter in Redis (which survives a SIGKILL), then waits W ms on a
// timer. A call's latency is from the shared start to its callback. Commands
// are counted by INFO commandstats from a CONFIG RESETSTAT just before the
// start; the driver's own INCR/CONFIG/INFO are left out. On a Redis Cluster
// (--redis-url redis://NODE?cluster=1) counters are read on their key's own
// master and commandstats summed over every master (bench/cluster_nodes.h).
//
// --scenario hot is open-loop instead: one key, and the fleet issues RATE
// calls per second for D ms, spread evenly over the P workers (call j of the
// fleet is due at j / RATE s and belongs to worker j mod P), each call on
// schedule whether or not earlier ones finished. A call's latency is from
// its Do to its callback, so a result's expiry shows as a spike: the calls
// that arrive while the next producer runs wait for it.
//
// The same binary is the worker: the driver runs it with --worker ROLE.
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cluster_nodes.h"
#include "common/redis_target.h"
#include "common/sync_redis.h"
#include "singleflight/group.h"

namespace {

struct Config {
  examples::RedisTarget redis;
  int procs = 4;
  int callers = 10;
  uint32_t work_ms = 50;
  int keys = 1;
  uint32_t lock_ttl_ms = 10000;
  uint32_t result_ttl_ms = 10000;
  uint32_t fallback_ms = 0;  // 0: followers never poll (protocol v2)
  uint32_t call_timeout_ms = 10000;
  std::string fail;  // "", "once" or "always"
  bool crash = false;
  bool slow = false;
  int late_ms = -1;  // < 0: no late caller
  size_t value_bytes = 100;
  std::string scenario;  // a label, except "hot", which is its own driver
  long rate = 0;         // --scenario hot: calls per second, fleet-wide
  long duration_ms = 0;  // --scenario hot: how long calls are issued
  int index = 0;         // --scenario hot: this worker's place in the fleet
  std::string out;
  std::string prefix;  // chosen by the driver, unique per run
  std::string worker;  // "", "main" or "late": the role of this process
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "sf_bench: %s\nusage: sf_bench --redis HOST:PORT | --redis-url URL [-P N] [-C N] "
               "[-W MS] [--keys K]\n"
               "  [--lock-ttl-ms MS] [--result-ttl-ms MS] [--fallback-ms MS]\n"
               "  [--call-timeout-ms MS] [--fail once|always] [--crash] [--slow]\n"
               "  [--late-ms MS] [--value-bytes N] [--scenario NAME] [--out FILE]\n"
               "  --scenario hot --rate CALLS_PER_S --duration-ms D: one hot key, open-loop;\n"
               "    -P, -W, --result-ttl-ms, --lock-ttl-ms and --call-timeout-ms apply, -C does\n"
               "    not, and --keys and --late-ms are refused.\n"
               "  --stale-ttl-ms MS, --early-refresh-beta B: the serve-stale and early-refresh\n"
               "    rows' flags; refused (not supported yet) until Options has them.\n",
               error.c_str());
  std::exit(2);
}

long ParseNumber(const std::string& flag, const std::string& text, long min) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < min) Usage("bad value for " + flag + ": " + text);
  return value;
}

// The XFetch beta: a non-negative real (1.0 is the paper's default).
double ParseBeta(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value >= 0)) Usage("bad value for " + flag + ": " + text);
  return value;
}

void ParseRedis(const std::string& text, Config* c) {
  std::string error;
  if (!examples::ParseRedisTarget(text, &c->redis, &error)) Usage(error);
}

Config Parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(flag + " needs a value");
      return argv[++i];
    };
    auto number = [&](long min) { return ParseNumber(flag, value(), min); };
    if (flag == "--redis" || flag == "--redis-url") {
      ParseRedis(value(), &c);
    } else if (flag == "-P" || flag == "--procs") {
      c.procs = static_cast<int>(number(1));
    } else if (flag == "-C" || flag == "--callers") {
      c.callers = static_cast<int>(number(1));
    } else if (flag == "-W" || flag == "--work-ms") {
      c.work_ms = static_cast<uint32_t>(number(0));
    } else if (flag == "--keys") {
      c.keys = static_cast<int>(number(1));
    } else if (flag == "--lock-ttl-ms") {
      c.lock_ttl_ms = static_cast<uint32_t>(number(3));
    } else if (flag == "--result-ttl-ms") {
      c.result_ttl_ms = static_cast<uint32_t>(number(1));
    } else if (flag == "--fallback-ms") {
      c.fallback_ms = static_cast<uint32_t>(number(0));
    } else if (flag == "--call-timeout-ms") {
      c.call_timeout_ms = static_cast<uint32_t>(number(1));
    } else if (flag == "--fail") {
      c.fail = value();
      if (c.fail != "once" && c.fail != "always") Usage("--fail wants once or always");
    } else if (flag == "--crash") {
      c.crash = true;
    } else if (flag == "--slow") {
      c.slow = true;
    } else if (flag == "--late-ms") {
      c.late_ms = static_cast<int>(number(0));
    } else if (flag == "--value-bytes") {
      c.value_bytes = static_cast<size_t>(number(0));
    } else if (flag == "--scenario") {
      c.scenario = value();
    } else if (flag == "--rate") {
      c.rate = number(1);
    } else if (flag == "--duration-ms") {
      c.duration_ms = number(1);
    } else if (flag == "--stale-ttl-ms") {
      number(0);
      Usage("--stale-ttl-ms is not supported yet: Options has no serve-stale TTL");
    } else if (flag == "--early-refresh-beta") {
      ParseBeta(flag, value());
      Usage("--early-refresh-beta is not supported yet: Options has no early refresh");
    } else if (flag == "--index") {
      c.index = static_cast<int>(number(0));
    } else if (flag == "--out") {
      c.out = value();
    } else if (flag == "--prefix") {
      c.prefix = value();
    } else if (flag == "--worker") {
      c.worker = value();
    } else {
      Usage("unknown flag " + flag);
    }
  }
  std::string error;
  if (!examples::RedisTargetFromEnv(&c.redis, &error)) Usage(error);
  if (!c.redis.enabled()) Usage("--redis, --redis-url or SINGLEFLIGHT_REDIS is required");
  // --slow: the work outlives the lock, so only the watchdog keeps it one execution.
  if (c.slow) c.work_ms = c.lock_ttl_ms * 3 / 2;
  if (c.scenario == "hot") {
    if (c.rate == 0 || c.duration_ms == 0) Usage("--scenario hot needs --rate and --duration-ms");
    if (c.keys != 1) Usage("--scenario hot has one key; --keys does not apply");
    if (c.late_ms >= 0) Usage("--scenario hot has no late caller; --late-ms does not apply");
  } else if (c.rate != 0 || c.duration_ms != 0) {
    Usage("--rate and --duration-ms need --scenario hot");
  }
  return c;
}

// Wall-clock microseconds: the one clock every process on this host shares.
int64_t WallUs() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string ExecKey(const Config& c, int key) {
  return c.prefix + "exec:" + std::to_string(key);
}

// --scenario hot's schedule, which the driver and every worker compute alike:
// the fleet's calls, when call j is due (us after the start), and how many of
// them are worker `index`'s (j = index, index + P, ...).
long long HotCalls(const Config& c) {
  return static_cast<long long>(c.duration_ms) * c.rate / 1000;
}
int64_t HotDueUs(const Config& c, long long j) {
  return j * 1000000 / c.rate;
}
int HotCallsOf(const Config& c, int index) {
  long long n = HotCalls(c);
  return index < n ? static_cast<int>((n - 1 - index) / c.procs + 1) : 0;
}

// ============================== the worker ==================================

// One producer run: an INCR, then W ms on a timer.
struct Work {
  explicit Work(singleflight::Done d) : done(std::move(d)) {}
  uv_timer_t timer;
  singleflight::Done done;
  bool fail = false;
  std::string value;
  std::string key;
  int64_t start_us = 0;
};

class Worker {
 public:
  Worker(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {
    singleflight::Options options;
    options.redis = config_.redis.options;
    options.key_prefix = config_.prefix;
    options.lock_ttl_ms = config_.lock_ttl_ms;
    options.result_ttl_ms = config_.result_ttl_ms;
    options.fallback_interval_ms = config_.fallback_ms;
    options.max_value_bytes = std::max<size_t>(options.max_value_bytes, config_.value_bytes);
    group_ = std::make_unique<singleflight::Group>(loop, options);
    std::string error;
    counter_ = bench::ClusterNodes::Connect(config_.redis, &error);
    if (counter_ == nullptr) {
      std::fprintf(stderr, "sf_bench: worker: %s\n", error.c_str());
      std::exit(1);
    }
    hot_ = config_.scenario == "hot";
    callers_ = config_.worker == "late" ? 1 : config_.callers;
    if (hot_) callers_ = HotCallsOf(config_, config_.index);
    uv_timer_init(loop, &start_timer_);
    uv_timer_init(loop, &guard_timer_);
    uv_timer_init(loop, &rate_timer_);
    start_timer_.data = guard_timer_.data = rate_timer_.data = this;
  }

  // One flight of our own, so that both connections are up before "ready".
  void WarmUp() {
    std::string key = "warmup-" + std::to_string(getpid());
    auto call = group_->Do(
        key, [](const singleflight::ProducerContext&, singleflight::Done done) { done("w"); },
        [](const singleflight::Result& r) {
          std::printf("ready %s\n", r.ok() ? "ok" : r.status.ToString().c_str());
          std::fflush(stdout);
        });
    if (!call.ok()) {
      std::printf("ready %s\n", call.status().ToString().c_str());
      std::fflush(stdout);
    }
  }

  // The driver's "go": start at start_us (plus late_ms for the late caller).
  void Go(int64_t start_us) {
    start_us_ = start_us;
    int64_t at = start_us + (config_.worker == "late" ? config_.late_ms * 1000LL : 0);
    int64_t wait_ms = std::max<int64_t>(0, (at - WallUs()) / 1000 - 1);
    arrive_us_ = at;
    uv_timer_start(&start_timer_, OnStartTimer, static_cast<uint64_t>(wait_ms), 0);
    // Past the callers' own deadline plus a grace, a pending call is hung:
    // the library broke its promise to answer by the deadline.
    uint64_t guard = static_cast<uint64_t>(std::max<int64_t>(0, (at - WallUs()) / 1000)) +
                     (hot_ ? config_.duration_ms : 0) + config_.call_timeout_ms + 2000;
    uv_timer_start(&guard_timer_, OnGuardTimer, guard, 0);
  }

  void Quit() { Finish(); }

 private:
  static void OnStartTimer(uv_timer_t* timer) {
    auto* self = static_cast<Worker*>(timer->data);
    // The timer is ms-coarse; spin the last stretch so every process starts together.
    while (WallUs() < self->arrive_us_) {
    }
    if (self->hot_) {
      self->StartHot();
    } else {
      self->StartCallers();
    }
  }

  static void OnGuardTimer(uv_timer_t* timer) {
    auto* self = static_cast<Worker*>(timer->data);
    std::printf("hung %d\n", self->callers_ - self->finished_);
    self->Finish();
  }

  void StartCallers() {
    std::printf("arrive %lld\n", static_cast<long long>(WallUs() - start_us_));
    before_ = group_->stats();  // the warm-up flight is not part of the run
    for (int i = 0; i < callers_; ++i) {
      std::string key = std::to_string(i % config_.keys);
      auto call = group_->Do(
          key,
          [this](const singleflight::ProducerContext& ctx, singleflight::Done done) {
            Produce(std::string(ctx.key), std::move(done));
          },
          [this, key](const singleflight::Result& r) { OnResult(key, r); },
          singleflight::CallOptions{config_.call_timeout_ms});
      if (!call.ok()) {
        std::printf("r %lld rejected none %s\n", static_cast<long long>(WallUs() - start_us_),
                    key.c_str());
        ++finished_;
      }
    }
    if (finished_ == callers_) Finish();
  }

  // --scenario hot: this worker's share of the fleet's schedule, open-loop.
  void StartHot() {
    std::printf("arrive %lld\n", static_cast<long long>(WallUs() - start_us_));
    before_ = group_->stats();
    next_ = config_.index;
    IssueDue();
  }

  static void OnRateTimer(uv_timer_t* timer) { static_cast<Worker*>(timer->data)->IssueDue(); }

  // Issues every call that is due, then sleeps until the next one. The timer
  // is ms-coarse, so a call may leave up to ~1 ms late; its lag is reported.
  void IssueDue() {
    long long total = HotCalls(config_);
    int64_t now_us = WallUs() - start_us_;
    for (; next_ < total && HotDueUs(config_, next_) <= now_us; next_ += config_.procs) {
      IssueHot(now_us - HotDueUs(config_, next_));
    }
    if (next_ >= total) {
      if (finished_ == callers_) Finish();
      return;
    }
    int64_t wait_us = HotDueUs(config_, next_) - (WallUs() - start_us_);
    uv_update_time(loop_);
    uv_timer_start(&rate_timer_, OnRateTimer,
                   static_cast<uint64_t>(std::max<int64_t>(0, (wait_us + 999) / 1000)), 0);
  }

  void IssueHot(int64_t lag_us) {
    int64_t issued_us = WallUs();
    auto call = group_->Do(
        "0",
        [this](const singleflight::ProducerContext& ctx, singleflight::Done done) {
          Produce(std::string(ctx.key), std::move(done));
        },
        [this, issued_us, lag_us](const singleflight::Result& r) {
          if (closing_) return;  // already reported as hung
          PrintHot(issued_us, lag_us, std::string(singleflight::CodeName(r.status.code())),
                   std::string(singleflight::SourceName(r.source)));
          if (++finished_ == callers_) Finish();
        },
        singleflight::CallOptions{config_.call_timeout_ms});
    if (!call.ok()) {
      PrintHot(issued_us, lag_us, "rejected", "none");
      ++finished_;  // IssueDue finishes if this was the last one
    }
  }

  // "h <issued, us after the start> <latency us> <issue lag us> <code> <source>"
  void PrintHot(int64_t issued_us, int64_t lag_us, const std::string& code,
                const std::string& source) {
    std::printf("h %lld %lld %lld %s %s\n", static_cast<long long>(issued_us - start_us_),
                static_cast<long long>(WallUs() - issued_us), static_cast<long long>(lag_us),
                code.c_str(), source.c_str());
  }

  void Produce(const std::string& key, singleflight::Done done) {
    std::string counter = ExecKey(config_, std::stoi(key));
    examples::Reply reply = counter_->Routed({"INCR", counter});
    long long execution = reply.type == examples::Reply::kInteger ? reply.integer : -1;
    auto* work = new Work(std::move(done));
    work->key = key;
    work->start_us = start_us_;
    work->fail = config_.fail == "always" || (config_.fail == "once" && execution == 1);
    work->value.assign(config_.value_bytes, 'v');
    uv_timer_init(loop_, &work->timer);
    work->timer.data = work;
    if (config_.crash && execution == 1) {
      // Die like a real crash: no release, no publish; the lock just lapses.
      std::fflush(stdout);
      uv_timer_start(
          &work->timer, [](uv_timer_t*) { raise(SIGKILL); }, config_.work_ms / 2, 0);
      return;
    }
    uv_timer_start(&work->timer, OnWorkDone, config_.work_ms, 0);
  }

  static void OnWorkDone(uv_timer_t* timer) {
    auto* work = static_cast<Work*>(timer->data);
    // When the result exists: callers cannot get it earlier than this.
    std::printf("done %s %lld\n", work->key.c_str(),
                static_cast<long long>(WallUs() - work->start_us));
    if (work->fail) {
      work->done.Fail("failed on purpose");
    } else {
      work->done(std::move(work->value));
    }
    uv_close(reinterpret_cast<uv_handle_t*>(timer),
             [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
  }

  void OnResult(const std::string& key, const singleflight::Result& r) {
    if (closing_) return;  // already reported as hung
    std::printf("r %lld %s %s %s\n", static_cast<long long>(WallUs() - start_us_),
                std::string(singleflight::CodeName(r.status.code())).c_str(),
                std::string(singleflight::SourceName(r.source)).c_str(), key.c_str());
    if (++finished_ == callers_) Finish();
  }

  void Finish() {
    if (closing_) return;
    closing_ = true;
    singleflight::Stats s = group_->stats();
    auto delta = [](uint64_t now, uint64_t then) {
      return static_cast<unsigned long long>(now - then);
    };
    std::printf(
        "stats leads=%llu takeovers=%llu pubsub=%llu fallback=%llu malformed=%llu "
        "redis_errors=%llu reconnects=%llu\n",
        delta(s.leads, before_.leads), delta(s.takeovers, before_.takeovers),
        delta(s.pubsub_wakes, before_.pubsub_wakes), delta(s.fallback_hits, before_.fallback_hits),
        delta(s.malformed_dropped, before_.malformed_dropped),
        delta(s.redis_errors, before_.redis_errors), delta(s.reconnects, before_.reconnects));
    std::fflush(stdout);
    uv_close(reinterpret_cast<uv_handle_t*>(&start_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&rate_timer_), nullptr);
    group_->Close();
  }

  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<singleflight::Group> group_;
  std::unique_ptr<bench::ClusterNodes> counter_;  // routed to the counter's master
  bool hot_;
  int callers_;  // hot: this worker's calls in the whole schedule
  int finished_ = 0;
  long long next_ = 0;  // hot: the fleet's index of this worker's next call
  bool closing_ = false;
  int64_t start_us_ = 0;
  int64_t arrive_us_ = 0;
  singleflight::Stats before_;
  uv_timer_t start_timer_;
  uv_timer_t guard_timer_;
  uv_timer_t rate_timer_;  // hot: until the next call is due
};

// Reads "go <start_us>" from stdin without blocking the loop.
struct StdinGate {
  uv_pipe_t pipe;
  Worker* worker;
  std::string line;
};

void OnStdin(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
  auto* gate = static_cast<StdinGate*>(stream->data);
  if (n > 0) gate->line.append(buf->base, static_cast<size_t>(n));
  size_t eol = gate->line.find('\n');
  if (n >= 0 && eol == std::string::npos) return;
  uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
  if (gate->line.compare(0, 3, "go ") == 0) {
    gate->worker->Go(std::atoll(gate->line.c_str() + 3));
  } else {
    gate->worker->Quit();  // the driver went away before "go"
  }
}

int RunWorker(const Config& config) {
  std::setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
  uv_loop_t* loop = uv_default_loop();
  int rc = 0;
  {
    Worker worker(loop, config);
    StdinGate gate;
    gate.worker = &worker;
    uv_pipe_init(loop, &gate.pipe, 0);
    uv_pipe_open(&gate.pipe, 0);
    gate.pipe.data = &gate;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&gate.pipe),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char storage[256];
          *buf = uv_buf_init(storage, sizeof storage);
        },
        OnStdin);
    worker.WarmUp();
    std::fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(loop) == 0 ? 0 : 3;
  }
  std::fflush(stdout);
  return rc;
}

// ============================== the driver ==================================

struct Child {
  uv_process_t process;
  uv_pipe_t in;
  uv_pipe_t out;
  class Driver* driver = nullptr;
  std::string role;
  std::string buffer;  // stdout not yet split into lines
  bool ready = false;
  bool exited = false;
  bool out_closed = false;
  int term_signal = 0;
  int callers = 0;
  int results = 0;
  int hung = 0;
  int64_t arrive_us = -1;
  std::vector<std::string> lines;
};

struct CallRecord {
  int64_t us;
  std::string code;
  std::string source;
  std::string key;
  bool late;
};

// One call of --scenario hot.
struct HotRecord {
  int64_t issued_us;  // after the start
  int64_t latency_us;
  int64_t lag_us;  // how late it was issued against its schedule
  std::string code;
  std::string source;
};

class Driver {
 public:
  Driver(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {
    uv_timer_init(loop, &timer_);
    uv_timer_init(loop, &settle_timer_);
    timer_.data = settle_timer_.data = this;
  }

  int Run();

  void OnLine(Child* child, const std::string& line);
  void OnChildDone(Child* child);

 private:
  bool SpawnAll();
  bool Spawn(const std::string& role, int callers, int index);
  void MaybeGo();
  void Go();
  void KillAll();
  static void OnTimer(uv_timer_t* timer);
  std::string Report();
  std::string HotReport();
  std::string Scenario() const;

  uv_loop_t* loop_;
  Config config_;
  uv_timer_t timer_;         // the ready deadline, then the overall deadline
  uv_timer_t settle_timer_;  // between "all ready" and the start
  std::vector<std::unique_ptr<Child>> children_;
  std::unique_ptr<bench::ClusterNodes> redis_;
  // Where commandstats are reset and read: the server, or every master of
  // the cluster as CLUSTER SLOTS named them at the start (asked once, so
  // that the driver's own CLUSTER SLOTS is not counted as the library's).
  std::vector<examples::SyncRedis*> masters_;
  bool started_ = false;
  bool failed_ = false;
  int64_t start_us_ = 0;
  int64_t end_us_ = 0;
  std::vector<CallRecord> calls_;
  std::map<std::string, long long> worker_stats_;
  std::map<std::string, int64_t> done_us_;  // key -> when its (last) producer called done
  std::vector<int64_t> produced_us_;        // when every producer called done, any key
  std::vector<HotRecord> hot_calls_;
};

void OnChildRead(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
  auto* child = static_cast<Child*>(stream->data);
  if (n > 0) {
    child->buffer.append(buf->base, static_cast<size_t>(n));
    size_t eol;
    while ((eol = child->buffer.find('\n')) != std::string::npos) {
      std::string line = child->buffer.substr(0, eol);
      child->buffer.erase(0, eol + 1);
      child->driver->OnLine(child, line);
    }
  }
  delete[] buf->base;
  if (n < 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
    child->out_closed = true;
    if (child->exited) child->driver->OnChildDone(child);
  }
}

void OnChildExit(uv_process_t* process, int64_t, int term_signal) {
  auto* child = static_cast<Child*>(process->data);
  child->exited = true;
  child->term_signal = term_signal;
  uv_close(reinterpret_cast<uv_handle_t*>(process), nullptr);
  if (child->out_closed) child->driver->OnChildDone(child);
}

bool Driver::Spawn(const std::string& role, int callers, int index) {
  auto child = std::make_unique<Child>();
  child->driver = this;
  child->role = role;
  child->callers = callers;
  char exe[4096];
  size_t size = sizeof exe;
  if (uv_exepath(exe, &size) != 0) return false;
  std::vector<std::string> args = {exe,
                                   "--redis-url",
                                   config_.redis.url,
                                   "-C",
                                   std::to_string(config_.callers),
                                   "-W",
                                   std::to_string(config_.work_ms),
                                   "--keys",
                                   std::to_string(config_.keys),
                                   "--lock-ttl-ms",
                                   std::to_string(config_.lock_ttl_ms),
                                   "--result-ttl-ms",
                                   std::to_string(config_.result_ttl_ms),
                                   "--fallback-ms",
                                   std::to_string(config_.fallback_ms),
                                   "--call-timeout-ms",
                                   std::to_string(config_.call_timeout_ms),
                                   "--value-bytes",
                                   std::to_string(config_.value_bytes),
                                   "--prefix",
                                   config_.prefix,
                                   "--worker",
                                   role};
  if (!config_.fail.empty()) args.insert(args.end(), {"--fail", config_.fail});
  if (config_.crash) args.push_back("--crash");
  if (config_.late_ms >= 0) args.insert(args.end(), {"--late-ms", std::to_string(config_.late_ms)});
  if (config_.scenario == "hot") {
    args.insert(args.end(), {"--scenario", "hot", "--rate", std::to_string(config_.rate),
                             "--duration-ms", std::to_string(config_.duration_ms), "-P",
                             std::to_string(config_.procs), "--index", std::to_string(index)});
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  uv_pipe_init(loop_, &child->in, 0);
  uv_pipe_init(loop_, &child->out, 0);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE);
  stdio[0].data.stream = reinterpret_cast<uv_stream_t*>(&child->in);
  stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&child->out);
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t options{};
  options.file = exe;
  options.args = argv.data();
  options.exit_cb = OnChildExit;
  options.stdio_count = 3;
  options.stdio = stdio;
  child->process.data = child->out.data = child->in.data = child.get();
  int rc = uv_spawn(loop_, &child->process, &options);
  if (rc != 0) {
    std::fprintf(stderr, "sf_bench: spawn: %s\n", uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&child->in), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&child->out), nullptr);
    child->exited = child->out_closed = true;  // nothing to wait for
    children_.push_back(std::move(child));     // the handles close from the loop
    return false;
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&child->out),
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
      },
      OnChildRead);
  children_.push_back(std::move(child));
  return true;
}

bool Driver::SpawnAll() {
  for (int i = 0; i < config_.procs; ++i) {
    int callers = config_.scenario == "hot" ? HotCallsOf(config_, i) : config_.callers;
    if (!Spawn("main", callers, i)) return false;
  }
  // The late caller's process starts now and warms up with the others, so
  // only its call arrives late, not its connection setup.
  if (config_.late_ms >= 0 && !Spawn("late", 1, config_.procs)) return false;
  return true;
}

void Driver::OnLine(Child* child, const std::string& line) {
  std::istringstream in(line);
  std::string kind;
  in >> kind;
  if (kind == "ready") {
    std::string how;
    in >> how;
    if (how != "ok") {
      std::fprintf(stderr, "sf_bench: a worker could not warm up: %s\n", line.c_str());
      failed_ = true;
    }
    child->ready = true;
    MaybeGo();
  } else if (kind == "r") {
    CallRecord record{0, "", "", "", child->role == "late"};
    in >> record.us >> record.code >> record.source >> record.key;
    calls_.push_back(record);
    ++child->results;
  } else if (kind == "h") {
    HotRecord record{0, 0, 0, "", ""};
    in >> record.issued_us >> record.latency_us >> record.lag_us >> record.code >> record.source;
    hot_calls_.push_back(record);
    ++child->results;
  } else if (kind == "done") {
    std::string key;
    int64_t us = 0;
    in >> key >> us;
    done_us_[key] = std::max(done_us_[key], us);
    produced_us_.push_back(us);
  } else if (kind == "arrive") {
    in >> child->arrive_us;
  } else if (kind == "hung") {
    in >> child->hung;
  } else if (kind == "stats") {
    std::string field;
    while (in >> field) {
      size_t eq = field.find('=');
      if (eq != std::string::npos) {
        worker_stats_[field.substr(0, eq)] += std::atoll(field.c_str() + eq + 1);
      }
    }
  }
}

// Everyone is warm. The warm-up flights' last script (complete) is sent but
// not awaited, so give it a moment to land before Redis's counters reset.
void Driver::MaybeGo() {
  for (auto& child : children_) {
    if (!child->ready) return;
  }
  if (failed_) return KillAll();
  uv_timer_start(
      &settle_timer_, [](uv_timer_t* t) { static_cast<Driver*>(t->data)->Go(); }, 50, 0);
}

// Resets Redis's counters and names the start instant.
void Driver::Go() {
  uv_close(reinterpret_cast<uv_handle_t*>(&settle_timer_), nullptr);
  masters_ = redis_->Masters();
  for (examples::SyncRedis* master : masters_) master->Command({"CONFIG", "RESETSTAT"});
  start_us_ = WallUs() + 100 * 1000;  // room for every worker to read "go"
  started_ = true;
  static std::string message;
  message = "go " + std::to_string(start_us_) + "\n";
  for (auto& child : children_) {
    auto* req = new uv_write_t;
    uv_buf_t buf = uv_buf_init(message.data(), static_cast<unsigned>(message.size()));
    uv_write(req, reinterpret_cast<uv_stream_t*>(&child->in), &buf, 1,
             [](uv_write_t* r, int) { delete r; });
  }
  // The driver never runs longer than the calls' span and timeout plus 10 s.
  uint64_t limit = 100 + (config_.late_ms > 0 ? config_.late_ms : 0) +
                   static_cast<uint64_t>(config_.duration_ms) + config_.call_timeout_ms + 10000;
  uv_timer_start(&timer_, OnTimer, limit, 0);
}

void Driver::OnChildDone(Child* child) {
  uv_close(reinterpret_cast<uv_handle_t*>(&child->in), nullptr);
  for (auto& c : children_) {
    if (!c->exited || !c->out_closed) return;
  }
  end_us_ = WallUs();
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  auto* settle = reinterpret_cast<uv_handle_t*>(&settle_timer_);
  if (!uv_is_closing(settle)) uv_close(settle, nullptr);
}

void Driver::KillAll() {
  for (auto& child : children_) {
    if (!child->exited) uv_process_kill(&child->process, SIGKILL);
  }
}

void Driver::OnTimer(uv_timer_t* timer) {
  auto* self = static_cast<Driver*>(timer->data);
  std::fprintf(stderr, "sf_bench: %s; killing the workers\n",
               self->started_ ? "the run outlived its deadline" : "workers not ready in 15 s");
  self->failed_ = !self->started_;
  self->KillAll();
}

int Driver::Run() {
  std::string error;
  redis_ = bench::ClusterNodes::Connect(config_.redis, &error);
  if (redis_ == nullptr) {
    std::fprintf(stderr, "sf_bench: %s\n", error.c_str());
    return 1;
  }
  uv_timer_start(&timer_, OnTimer, 15000, 0);
  if (!SpawnAll()) {
    failed_ = true;
    KillAll();
  }
  uv_run(loop_, UV_RUN_DEFAULT);
  int rc = 1;
  if (!failed_ && started_) {
    std::string line = config_.scenario == "hot" ? HotReport() : Report();
    std::printf("%s\n", line.c_str());
    if (!config_.out.empty()) {
      if (FILE* f = std::fopen(config_.out.c_str(), "a")) {
        std::fprintf(f, "%s\n", line.c_str());
        std::fclose(f);
      }
    }
    rc = 0;
  }
  redis_.reset();
  return rc;
}

// ------------------------------ the report ----------------------------------

// Commands the driver itself sends, or that only its workers' bookkeeping
// does; none of them is ever sent by the library.
bool IsBookkeeping(const std::string& command) {
  return command == "incr" || command == "info" || command.rfind("config", 0) == 0;
}

// Commands the library only ever runs inside its Lua scripts; Redis counts
// them in commandstats too, so requests = the rest.
bool IsInsideScripts(const std::string& command) {
  static const char* const kInside[] = {"get",  "set",     "del",     "pexpire",
                                        "pttl", "publish", "spublish"};
  return std::find_if(std::begin(kInside), std::end(kInside),
                      [&](const char* c) { return command == c; }) != std::end(kInside);
}

std::map<std::string, long long> CommandStats(examples::SyncRedis& redis) {
  std::map<std::string, long long> calls;
  examples::Reply reply = redis.Command({"INFO", "commandstats"});
  if (reply.type != examples::Reply::kString) return calls;
  std::istringstream in(reply.str);
  std::string line;
  while (std::getline(in, line)) {
    // cmdstat_evalsha:calls=12,usec=...
    if (line.rfind("cmdstat_", 0) != 0) continue;
    size_t colon = line.find(':');
    size_t eq = line.find("calls=");
    if (colon == std::string::npos || eq == std::string::npos) continue;
    calls[line.substr(8, colon - 8)] = std::atoll(line.c_str() + eq + 6);
  }
  return calls;
}

long long Executions(bench::ClusterNodes& redis, const Config& c) {
  long long total = 0;
  for (int k = 0; k < c.keys; ++k) {
    std::string key = ExecKey(c, k);
    examples::Reply reply = redis.Routed({"GET", key});
    if (reply.type == examples::Reply::kString) total += std::atoll(reply.str.c_str());
    redis.Routed({"DEL", key});
  }
  return total;
}

double Percentile(const std::vector<int64_t>& sorted_us, double p) {
  if (sorted_us.empty()) return 0;
  size_t rank = static_cast<size_t>(p * static_cast<double>(sorted_us.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted_us.size());
  return static_cast<double>(sorted_us[rank - 1]) / 1000.0;
}

std::string Ms(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", ms);
  return text;
}

std::string JsonCounts(const std::map<std::string, long long>& counts) {
  std::string out = "{";
  for (const auto& [name, n] : counts) {
    if (out.size() > 1) out += ",";
    out += "\"" + name + "\":" + std::to_string(n);
  }
  return out + "}";
}

std::string Driver::Scenario() const {
  if (!config_.scenario.empty()) return config_.scenario;
  std::vector<std::string> parts;
  if (!config_.fail.empty()) parts.push_back("fail-" + config_.fail);
  if (config_.crash) parts.push_back("crash");
  if (config_.slow) parts.push_back("slow");
  if (config_.late_ms >= 0) parts.push_back("late");
  if (parts.empty()) return "base";
  std::string name = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) name += "+" + parts[i];
  return name;
}

// What Redis processed for the library during the run (see IsBookkeeping).
struct RedisLoad {
  long long cmds = 0;
  long long requests = 0;
  std::map<std::string, long long> breakdown;
};

// Summed over `masters` (one server, or every master of a cluster).
RedisLoad LibraryLoad(const std::vector<examples::SyncRedis*>& masters) {
  RedisLoad load;
  for (examples::SyncRedis* master : masters) {
    for (const auto& [name, n] : CommandStats(*master)) {
      if (IsBookkeeping(name)) continue;
      load.breakdown[name] += n;
      load.cmds += n;
      if (!IsInsideScripts(name)) load.requests += n;
    }
  }
  return load;
}

std::string Driver::Report() {
  RedisLoad load = LibraryLoad(masters_);
  long long executions = Executions(*redis_, config_);
  long long redis_cmds = load.cmds, requests = load.requests;
  const std::map<std::string, long long>& breakdown = load.breakdown;
  std::map<std::string, long long> by_status, by_source;
  std::vector<int64_t> latencies;
  std::vector<int64_t> after_done;  // callback time minus the producer's done time
  long long errors = 0, hung = 0, killed = 0;
  const CallRecord* late = nullptr;
  for (const CallRecord& call : calls_) {
    ++by_status[call.code];
    ++by_source[call.source];
    if (call.code != "ok") ++errors;
    if (call.late) {
      late = &call;
      continue;
    }
    latencies.push_back(call.us);
    auto done = done_us_.find(call.key);
    if (done != done_us_.end() && call.us >= done->second) {
      after_done.push_back(call.us - done->second);
    }
  }
  const Child* late_child = nullptr;
  for (const auto& child : children_) {
    hung += child->hung;
    if (child->role == "late") late_child = child.get();
    // A worker that died (the --crash leader) takes its callers with it.
    int missing = child->callers - child->results - child->hung;
    if (missing > 0) (child->term_signal != 0 ? killed : hung) += missing;
  }
  if (killed > 0) by_status["killed"] = killed;
  std::sort(latencies.begin(), latencies.end());
  std::sort(after_done.begin(), after_done.end());
  double p50 = Percentile(latencies, 0.50), p99 = Percentile(latencies, 0.99);
  double max = latencies.empty() ? 0 : static_cast<double>(latencies.back()) / 1000.0;

  std::string j = "{\"impl\":\"singleflight\",\"scenario\":\"" + Scenario() + "\"";
  j += ",\"procs\":" + std::to_string(config_.procs);
  j += ",\"callers\":" + std::to_string(config_.callers);
  j += ",\"keys\":" + std::to_string(config_.keys);
  j += ",\"work_ms\":" + std::to_string(config_.work_ms);
  j += ",\"lock_ttl_ms\":" + std::to_string(config_.lock_ttl_ms);
  j += ",\"result_ttl_ms\":" + std::to_string(config_.result_ttl_ms);
  j += ",\"fallback_ms\":" + std::to_string(config_.fallback_ms);
  j += ",\"executions\":" + std::to_string(executions);
  j += ",\"errors\":" + std::to_string(errors);
  j += ",\"hung\":" + std::to_string(hung);
  j += ",\"killed\":" + std::to_string(killed);
  j += ",\"outcomes\":{\"status\":" + JsonCounts(by_status) +
       ",\"source\":" + JsonCounts(by_source) + "}";
  j += ",\"lat_ms\":{\"p50\":" + Ms(p50) + ",\"p99\":" + Ms(p99) + ",\"max\":" + Ms(max) +
       ",\"n\":" + std::to_string(latencies.size()) + "}";
  j += ",\"overhead_ms_p50\":" + Ms(p50 - config_.work_ms);
  j += ",\"overhead_ms_p99\":" + Ms(p99 - config_.work_ms);
  j += ",\"after_done_ms\":{\"p50\":" + Ms(Percentile(after_done, 0.5)) +
       ",\"p99\":" + Ms(Percentile(after_done, 0.99)) +
       ",\"n\":" + std::to_string(after_done.size()) + "}";
  j += ",\"redis_cmds\":" + std::to_string(redis_cmds);
  j += ",\"redis_requests\":" + std::to_string(requests);
  j += ",\"redis_cmd_breakdown\":" + JsonCounts(breakdown);
  j += ",\"worker_stats\":" + JsonCounts(worker_stats_);
  j += ",\"wall_ms\":" + Ms(static_cast<double>(end_us_ - start_us_) / 1000.0);
  if (config_.late_ms >= 0) {
    j += ",\"late_caller\":{\"arrive_ms\":" +
         Ms(late_child != nullptr ? static_cast<double>(late_child->arrive_us) / 1000.0 : -1);
    if (late != nullptr) {
      j += ",\"outcome\":\"" + late->code + "/" + late->source +
           "\",\"return_ms\":" + Ms(static_cast<double>(late->us) / 1000.0) +
           ",\"executed\":" + (late->source == "led" ? "true" : "false");
    } else {
      j += ",\"outcome\":\"none\",\"return_ms\":null,\"executed\":false";
    }
    j += "}";
  }
  return j + "}";
}

// --scenario hot. Beyond the usual fields: the calls slower than W/2 and the
// spikes they form (runs of slow calls, by issue time, more than
// result_ttl_ms/2 apart: one per expiry), latency by source, when each
// producer called done, and how late the open-loop schedule issued its calls
// (a large lag means the machine, not the library, set the numbers).
std::string Driver::HotReport() {
  RedisLoad load = LibraryLoad(masters_);
  long long executions = Executions(*redis_, config_);
  std::map<std::string, long long> by_status, by_source;
  std::map<std::string, std::vector<int64_t>> by_source_us;
  std::vector<int64_t> latencies, lags, slow_issued;
  long long errors = 0, hung = 0, killed = 0;
  const int64_t slow_us = static_cast<int64_t>(config_.work_ms) * 500;
  for (const HotRecord& call : hot_calls_) {
    ++by_status[call.code];
    ++by_source[call.source];
    if (call.code != "ok") ++errors;
    latencies.push_back(call.latency_us);
    by_source_us[call.source].push_back(call.latency_us);
    lags.push_back(call.lag_us);
    if (call.latency_us > slow_us) slow_issued.push_back(call.issued_us);
  }
  for (const auto& child : children_) {
    hung += child->hung;
    int missing = child->callers - child->results - child->hung;
    if (missing > 0) (child->term_signal != 0 ? killed : hung) += missing;
  }
  if (killed > 0) by_status["killed"] = killed;
  std::sort(latencies.begin(), latencies.end());
  std::sort(lags.begin(), lags.end());
  std::sort(slow_issued.begin(), slow_issued.end());
  std::sort(produced_us_.begin(), produced_us_.end());
  long long spikes = 0;
  for (size_t i = 0; i < slow_issued.size(); ++i) {
    if (i == 0 || slow_issued[i] - slow_issued[i - 1] > config_.result_ttl_ms * 500LL) ++spikes;
  }
  auto max_ms = [](const std::vector<int64_t>& sorted_us) {
    return sorted_us.empty() ? 0 : static_cast<double>(sorted_us.back()) / 1000.0;
  };

  std::string j = "{\"impl\":\"singleflight\",\"scenario\":\"hot\"";
  j += ",\"procs\":" + std::to_string(config_.procs);
  j += ",\"rate\":" + std::to_string(config_.rate);
  j += ",\"duration_ms\":" + std::to_string(config_.duration_ms);
  j += ",\"calls\":" + std::to_string(HotCalls(config_));
  j += ",\"work_ms\":" + std::to_string(config_.work_ms);
  j += ",\"lock_ttl_ms\":" + std::to_string(config_.lock_ttl_ms);
  j += ",\"result_ttl_ms\":" + std::to_string(config_.result_ttl_ms);
  j += ",\"executions\":" + std::to_string(executions);
  j += ",\"errors\":" + std::to_string(errors);
  j += ",\"hung\":" + std::to_string(hung);
  j += ",\"killed\":" + std::to_string(killed);
  j += ",\"outcomes\":{\"status\":" + JsonCounts(by_status) +
       ",\"source\":" + JsonCounts(by_source) + "}";
  j += ",\"lat_ms\":{\"p50\":" + Ms(Percentile(latencies, 0.50)) +
       ",\"p99\":" + Ms(Percentile(latencies, 0.99)) +
       ",\"p999\":" + Ms(Percentile(latencies, 0.999)) + ",\"max\":" + Ms(max_ms(latencies)) +
       ",\"n\":" + std::to_string(latencies.size()) + "}";
  j += ",\"lat_ms_by_source\":{";
  for (auto& [source, us] : by_source_us) {
    std::sort(us.begin(), us.end());
    if (j.back() != '{') j += ",";
    j += "\"" + source + "\":{\"p50\":" + Ms(Percentile(us, 0.50)) + ",\"max\":" + Ms(max_ms(us)) +
         ",\"n\":" + std::to_string(us.size()) + "}";
  }
  j += "}";
  j += ",\"slow_ms\":" + Ms(static_cast<double>(slow_us) / 1000.0);
  j += ",\"slow_calls\":" + std::to_string(slow_issued.size());
  j += ",\"spikes\":" + std::to_string(spikes);
  j += ",\"produced_at_ms\":[";
  for (size_t i = 0; i < produced_us_.size(); ++i) {
    j += (i == 0 ? "" : ",") + Ms(static_cast<double>(produced_us_[i]) / 1000.0);
  }
  j += "]";
  j += ",\"issue_lag_ms\":{\"p99\":" + Ms(Percentile(lags, 0.99)) + ",\"max\":" + Ms(max_ms(lags)) +
       "}";
  j += ",\"redis_cmds\":" + std::to_string(load.cmds);
  j += ",\"redis_requests\":" + std::to_string(load.requests);
  j += ",\"redis_cmd_breakdown\":" + JsonCounts(load.breakdown);
  j += ",\"worker_stats\":" + JsonCounts(worker_stats_);
  j += ",\"wall_ms\":" + Ms(static_cast<double>(end_us_ - start_us_) / 1000.0);
  return j + "}";
}

std::string UniquePrefix() {
  return "sfb:" + std::to_string(getpid()) + "-" + std::to_string(WallUs() % 1000000000) + ":";
}

}  // namespace

int main(int argc, char** argv) {
  Config config = Parse(argc, argv);
  if (!config.worker.empty()) return RunWorker(config);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  config.prefix = UniquePrefix();
  uv_loop_t* loop = uv_default_loop();
  int rc;
  {
    Driver driver(loop, config);
    rc = driver.Run();
  }
  uv_loop_close(loop);
  return rc;
}
