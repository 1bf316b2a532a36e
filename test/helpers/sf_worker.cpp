// sf_worker: one process of a multi-process test. It joins a fleet through
// Redis, waits for "go" on stdin (so every process starts together), runs C
// callers over K keys, prints one line per result and a stats line, closes
// its group and exits 0.
//
//   sf_worker --redis HOST:PORT [--callers C] [--keys K] [--work-ms W]
//             [--lock-ttl-ms L] [--fallback-ms F] [--timeout-ms T]
//             [--fail] [--crash] [--prefix P] [--rounds R] [--l1-ttl-ms T]
//
// The producer INCRs "<prefix>exec:<key>" first, so executions are counted in
// Redis even if this process is then SIGKILLed (--crash kills the process
// that runs the first execution of a key, halfway through its work).
//
// With --rounds R it runs R rounds of callers, each after its own "go" line,
// printing "round <r> done" between them, and "invalidated <n>" whenever a
// Forget from another process reaches it (so a test can wait for that event).
// Values are "v:<key>:<pid>:<execution>", so a re-execution is visible.
//
// Output: "result <i> <key> <code> <source> <value-or-message>" per caller,
// then "stats leads=N takeovers=N pubsub=N fallback=N malformed=N".
#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "singleflight/group.h"

namespace {

struct Config {
  std::string host = "127.0.0.1";
  int port = 6379;
  int callers = 1;
  int keys = 1;
  uint32_t work_ms = 50;
  uint32_t lock_ttl_ms = 2000;
  uint32_t fallback_ms = 0;  // v2: no polling, as shipped
  uint32_t timeout_ms = 20000;
  bool fail = false;
  bool crash = false;
  std::string prefix = "sf:";
  int rounds = 1;
  uint32_t l1_ttl_ms = 1000;
};

Config Parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--redis") {
      std::string hp = next();
      c.host = hp.substr(0, hp.rfind(':'));
      c.port = std::atoi(hp.substr(hp.rfind(':') + 1).c_str());
    } else if (a == "--callers") {
      c.callers = std::atoi(next().c_str());
    } else if (a == "--keys") {
      c.keys = std::atoi(next().c_str());
    } else if (a == "--work-ms") {
      c.work_ms = std::atoi(next().c_str());
    } else if (a == "--lock-ttl-ms") {
      c.lock_ttl_ms = std::atoi(next().c_str());
    } else if (a == "--fallback-ms") {
      c.fallback_ms = std::atoi(next().c_str());
    } else if (a == "--timeout-ms") {
      c.timeout_ms = std::atoi(next().c_str());
    } else if (a == "--rounds") {
      c.rounds = std::atoi(next().c_str());
    } else if (a == "--l1-ttl-ms") {
      c.l1_ttl_ms = std::atoi(next().c_str());
    } else if (a == "--prefix") {
      c.prefix = next();
    } else if (a == "--fail") {
      c.fail = true;
    } else if (a == "--crash") {
      c.crash = true;
    }
  }
  return c;
}

struct Work {
  uv_timer_t timer;
  singleflight::Done done;
  std::string value;
  bool fail;
};

class Worker {
 public:
  Worker(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {
    singleflight::Options options;
    options.redis.host = config_.host;
    options.redis.port = config_.port;
    options.key_prefix = config_.prefix;
    options.lock_ttl_ms = config_.lock_ttl_ms;
    options.fallback_interval_ms = config_.fallback_ms;
    options.l1_ttl_ms = config_.l1_ttl_ms;
    options.result_ttl_ms = std::max(options.result_ttl_ms, config_.l1_ttl_ms);
    group_ = std::make_unique<singleflight::Group>(loop, options);
    counter_ = redisConnect(config_.host.c_str(), config_.port);
  }

  // One "go" line: the next round of callers.
  void Go() {
    if (closing_ || round_ >= config_.rounds || finished_ < round_ * config_.callers) return;
    ++round_;
    Start();
  }

  // Reports Forget broadcasts from other processes as they arrive; runs
  // after each loop iteration's I/O, so no polling interval is involved.
  void WatchInvalidations() {
    uv_check_init(loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, [](uv_check_t* handle) {
      auto* self = static_cast<Worker*>(handle->data);
      uint64_t seen = self->group_->stats().invalidations;
      if (seen == self->invalidations_) return;
      self->invalidations_ = seen;
      std::printf("invalidated %llu\n", static_cast<unsigned long long>(seen));
    });
    uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  }

  void Start() {
    for (int i = (round_ - 1) * config_.callers; i < round_ * config_.callers; ++i) {
      std::string key = "key-" + std::to_string(i % config_.keys);
      singleflight::Call call = group_->Do(
          key,
          [this](const singleflight::ProducerContext& ctx, singleflight::Done done) {
            Produce(std::string(ctx.key), std::move(done));
          },
          [this, i, key](const singleflight::Result& r) { OnResult(i, key, r); },
          singleflight::CallOptions{config_.timeout_ms});
      if (!call.ok()) {
        std::printf("result %d %s rejected none %s\n", i, key.c_str(),
                    call.status().message().c_str());
        ++finished_;
      }
    }
    MaybeFinish();
  }

  std::function<void()> on_done;  // the last round is answered

  void Quit() {
    if (closing_) return;
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    group_->Close([this] { redisFree(counter_); });
  }

 private:
  void Produce(const std::string& key, singleflight::Done done) {
    auto* reply = static_cast<redisReply*>(
        redisCommand(counter_, "INCR %s", (config_.prefix + "exec:" + key).c_str()));
    long long execution = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    freeReplyObject(reply);
    auto* work =
        new Work{{},
                 std::move(done),
                 "v:" + key + ":" + std::to_string(getpid()) + ":" + std::to_string(execution),
                 config_.fail};
    uv_timer_init(loop_, &work->timer);
    work->timer.data = work;
    if (config_.crash && execution == 1) {
      // Die like a real crash: no release, no publish, the lock just lapses.
      uv_timer_start(
          &work->timer, [](uv_timer_t*) { raise(SIGKILL); }, config_.work_ms / 2, 0);
      return;
    }
    uv_timer_start(&work->timer, OnWorkDone, config_.work_ms, 0);
  }

  static void OnWorkDone(uv_timer_t* timer) {
    auto* work = static_cast<Work*>(timer->data);
    if (work->fail) {
      work->done.Fail("failed by " + std::to_string(getpid()));
    } else {
      work->done(work->value);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(timer),
             [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
  }

  void OnResult(int i, const std::string& key, const singleflight::Result& r) {
    std::string text = r.ok() ? std::string(r.value()) : r.status.message();
    std::printf("result %d %s %s %s %s\n", i, key.c_str(),
                std::string(singleflight::CodeName(r.status.code())).c_str(),
                std::string(singleflight::SourceName(r.source)).c_str(), text.c_str());
    ++finished_;
    MaybeFinish();
  }

  void MaybeFinish() {
    if (finished_ != round_ * config_.callers || closing_) return;
    if (round_ < config_.rounds) {
      std::printf("round %d done\n", round_);
      return;  // the next "go" starts the next round
    }
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    if (on_done) on_done();
    singleflight::Stats s = group_->stats();
    std::printf("stats leads=%llu takeovers=%llu pubsub=%llu fallback=%llu malformed=%llu\n",
                (unsigned long long)s.leads, (unsigned long long)s.takeovers,
                (unsigned long long)s.pubsub_wakes, (unsigned long long)s.fallback_hits,
                (unsigned long long)s.malformed_dropped);
    std::fflush(stdout);
    group_->Close([this] { redisFree(counter_); });
  }

  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<singleflight::Group> group_;
  redisContext* counter_;
  int finished_ = 0;
  int round_ = 0;
  bool closing_ = false;
  uv_check_t check_;
  uint64_t invalidations_ = 0;
};

// Reads "go" lines from the test without blocking the loop, so the group
// connects meanwhile; EOF before the last round means the test went away.
struct StdinGate {
  uv_pipe_t pipe;
  Worker* worker;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Config config = Parse(argc, argv);
  uv_loop_t* loop = uv_default_loop();
  Worker worker(loop, config);
  worker.WatchInvalidations();
  StdinGate gate;
  gate.worker = &worker;
  uv_pipe_init(loop, &gate.pipe, 0);
  uv_pipe_open(&gate.pipe, 0);
  gate.pipe.data = &gate;
  uv_unref(reinterpret_cast<uv_handle_t*>(&gate.pipe));  // the group keeps the loop alive
  worker.on_done = [&gate] {
    auto* handle = reinterpret_cast<uv_handle_t*>(&gate.pipe);
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
  };
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&gate.pipe),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char storage[256];
        *buf = uv_buf_init(storage, sizeof storage);
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
        auto* g = static_cast<StdinGate*>(stream->data);
        if (n < 0) {
          if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(stream))) {
            uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
          }
          g->worker->Quit();
          return;
        }
        for (ssize_t i = 0; i < n; ++i) {
          if (buf->base[i] == '\n') g->worker->Go();
        }
      });
  std::printf("ready\n");
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 3;
}
