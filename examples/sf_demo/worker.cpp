// The worker half of sf_demo: one process, one loop, one Group.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/sync_redis.h"
#include "demo.h"
#include "singleflight/group.h"

namespace sfdemo {
namespace {

using singleflight::Done;
using singleflight::Group;
using singleflight::ProducerContext;
using singleflight::Result;
using singleflight::Stats;

// One execution of the slow backend, finishing on a uv timer.
struct Work {
  uv_timer_t timer;
  Done done;
  std::string key;
  std::string value;
};

class Worker {
 public:
  explicit Worker(uv_loop_t* loop, const Config& config) : loop_(loop), config_(config) {
    singleflight::Options options;
    options.redis = config.redis.options;
    options.key_prefix = config.prefix;
    options.lock_ttl_ms = config.lock_ttl_ms;
    options.result_ttl_ms = config.result_ttl_ms;
    options.fallback_interval_ms = config.fallback_ms;
    group_ = std::make_unique<Group>(loop, options);
  }

  bool Init() {
    // A blocking connection for the execution counter, see Produce.
    std::string error;
    counter_ = examples::SyncRedis::Connect(config_.redis, 2000, &error);
    if (!counter_) {
      Fail("counter connection: " + error);
      return false;
    }
    return true;
  }

  // One call on a key of its own, so "ready" means the group has reached
  // Redis: the burst then measures flights, not connection set-up. Its
  // counters are left out of the burst's stats line.
  void WarmUp(std::function<void()> ready) {
    auto call = group_->Do(
        "warmup:" + std::to_string(getpid()),
        [](const ProducerContext&, Done done) { done("warm"); },
        [this, ready](const Result&) {
          baseline_ = group_->stats();
          ready();
        });
    if (!call.ok()) Fail("warm-up refused: " + call.status().ToString());
  }

  void Start(uint64_t t0) {
    t0_ = t0;
    for (int i = 0; i < config_.callers; ++i) {
      std::string key = KeyName((i + config_.index) % config_.keys);
      auto call = group_->Do(
          key, [this](const ProducerContext& ctx, Done done) { Produce(ctx.key, done); },
          [this, key](const Result& r) { OnResult(key, r); },
          singleflight::CallOptions{config_.wait_timeout_ms});
      if (!call.ok()) {
        std::printf("result %s rejected none 0 %s\n", key.c_str(), call.status().message().c_str());
        ++answered_;
      }
    }
    MaybeFinish();
  }

  // The parent went away before "go": leave quietly.
  void Quit() { Close(); }

 private:
  void Fail(const std::string& why) {
    std::fprintf(stderr, "worker %d: %s\n", getpid(), why.c_str());
    exit_code_ = 1;
    Close();
  }

  // The counter is INCRed synchronously, before the work starts: it is one
  // ~50 us round trip per execution (not per caller), and a SIGKILL during the
  // work can then never lose the count, which the takeover check relies on.
  void Produce(std::string_view key_view, Done done) {
    std::string key(key_view);
    std::string counter = ExecutionCounter(config_, config_.burst, key);
    examples::Reply reply = counter_->Command({"INCR", counter});
    long long execution = reply.type == examples::Reply::kInteger ? reply.integer : -1;
    std::printf("lead %s %lld\n", key.c_str(), execution);
    auto* work = new Work{
        {},
        std::move(done),
        key,
        "v:" + key + ":pid" + std::to_string(getpid()) + ":exec" + std::to_string(execution)};
    uv_timer_init(loop_, &work->timer);
    work->timer.data = work;
    uv_timer_start(&work->timer, OnWorkDone, config_.work_ms, 0);
  }

  static void OnWorkDone(uv_timer_t* timer) {
    auto* work = static_cast<Work*>(timer->data);
    std::printf("produced %s\n", work->key.c_str());
    work->done(work->value);
    uv_close(reinterpret_cast<uv_handle_t*>(timer),
             [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
  }

  void OnResult(const std::string& key, const Result& r) {
    uint64_t latency_us = (uv_hrtime() - t0_) / 1000;
    std::string text = r.ok() ? std::string(r.value()) : r.status.message();
    std::printf("result %s %s %s %llu %s\n", key.c_str(),
                std::string(singleflight::CodeName(r.status.code())).c_str(),
                std::string(singleflight::SourceName(r.source)).c_str(),
                static_cast<unsigned long long>(latency_us), text.c_str());
    ++answered_;
    MaybeFinish();
  }

  void MaybeFinish() {
    if (answered_ < config_.callers || closing_) return;
    PrintStats();
    Close();
  }

  void PrintStats() {
    Stats s = group_->stats();
    const Stats& b = baseline_;
    auto d = [](uint64_t now, uint64_t then) {
      return static_cast<unsigned long long>(now - then);
    };
    std::printf(
        "stats calls=%llu l1_hits=%llu joins=%llu redis_hits=%llu leads=%llu pubsub_wakes=%llu "
        "fallback_hits=%llu takeovers=%llu timeouts=%llu producer_errors=%llu "
        "malformed_dropped=%llu reconnects=%llu\n",
        d(s.calls, b.calls), d(s.l1_hits, b.l1_hits), d(s.joins, b.joins),
        d(s.redis_hits, b.redis_hits), d(s.leads, b.leads), d(s.pubsub_wakes, b.pubsub_wakes),
        d(s.fallback_hits, b.fallback_hits), d(s.takeovers, b.takeovers), d(s.timeouts, b.timeouts),
        d(s.producer_errors, b.producer_errors), d(s.malformed_dropped, b.malformed_dropped),
        d(s.reconnects, b.reconnects));
  }

  void Close() {
    if (closing_) return;
    closing_ = true;
    group_->Close([this] { counter_.reset(); });
  }

 public:
  int exit_code() const { return exit_code_; }

 private:
  uv_loop_t* loop_;
  const Config& config_;
  std::unique_ptr<Group> group_;
  std::unique_ptr<examples::SyncRedis> counter_;  // blocking; used only inside Produce
  Stats baseline_;                                // counters after the warm-up call
  uint64_t t0_ = 0;                               // the shared start, in uv_hrtime() nanoseconds
  int answered_ = 0;
  bool closing_ = false;
  int exit_code_ = 0;
};

// Reads the parent's "go <t0>" from stdin without blocking the loop.
struct Gate {
  uv_pipe_t pipe;
  Worker* worker;
  std::string line;
  char buffer[128];
};

void OnGateRead(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
  auto* gate = static_cast<Gate*>(stream->data);
  if (n > 0) {
    gate->line.append(gate->buffer, static_cast<size_t>(n));
    if (gate->line.find('\n') == std::string::npos) return;
  }
  uv_read_stop(stream);
  uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
  unsigned long long t0 = 0;
  if (n > 0 && std::sscanf(gate->line.c_str(), "go %llu", &t0) == 1) {
    gate->worker->Start(t0);
  } else {
    gate->worker->Quit();
  }
}

}  // namespace

int RunWorker(const Config& config) {
  // Never outlive a parent that was killed: the demo must leave nothing behind.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = 1;
  {
    Worker worker(&loop, config);
    Gate gate;
    gate.worker = &worker;
    uv_pipe_init(&loop, &gate.pipe, 0);
    uv_pipe_open(&gate.pipe, STDIN_FILENO);
    gate.pipe.data = &gate;
    if (worker.Init()) {
      worker.WarmUp([&gate] {
        std::printf("ready\n");
        uv_read_start(
            reinterpret_cast<uv_stream_t*>(&gate.pipe),
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
              auto* g = static_cast<Gate*>(h->data);
              *buf = uv_buf_init(g->buffer, sizeof g->buffer);
            },
            OnGateRead);
      });
    } else {
      uv_close(reinterpret_cast<uv_handle_t*>(&gate.pipe), nullptr);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    exit_code = worker.exit_code();
  }
  // The group's memory is reclaimed from close callbacks that its destructor
  // may still queue: let them run before checking that the loop is empty.
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    std::fprintf(stderr, "worker %d: handles left open on the loop\n", getpid());
    return 3;
  }
  return exit_code;
}

}  // namespace sfdemo
