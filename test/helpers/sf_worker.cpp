// sf_worker: one process of a multi-process test. It joins a fleet through
// Redis, waits for "go" on stdin (so every process starts together), runs C
// callers over K keys, prints one line per result and a stats line, closes
// its group and exits 0.
//
//   sf_worker --redis HOST:PORT [--callers C] [--keys K] [--work-ms W]
//             [--lock-ttl-ms L] [--fallback-ms F] [--timeout-ms T]
//             [--fail] [--crash] [--prefix P]
//
// The producer INCRs "<prefix>exec:<key>" first, so executions are counted in
// Redis even if this process is then SIGKILLed (--crash kills the process
// that runs the first execution of a key, halfway through its work).
//
// Output: "result <i> <key> <code> <source> <value-or-message>" per caller,
// then "stats leads=N takeovers=N pubsub=N fallback=N malformed=N".
#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
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
  uint32_t fallback_ms = 200;
  uint32_t timeout_ms = 20000;
  bool fail = false;
  bool crash = false;
  std::string prefix = "sf:";
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
    group_ = std::make_unique<singleflight::Group>(loop, options);
    counter_ = redisConnect(config_.host.c_str(), config_.port);
  }

  void Start() {
    for (int i = 0; i < config_.callers; ++i) {
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

  void Quit() {
    closing_ = true;
    group_->Close([this] { redisFree(counter_); });
  }

 private:
  void Produce(const std::string& key, singleflight::Done done) {
    auto* reply = static_cast<redisReply*>(
        redisCommand(counter_, "INCR %s", (config_.prefix + "exec:" + key).c_str()));
    long long execution = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    freeReplyObject(reply);
    auto* work =
        new Work{{}, std::move(done), "v:" + key + ":" + std::to_string(getpid()), config_.fail};
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
    if (finished_ != config_.callers || closing_) return;
    closing_ = true;
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
  bool closing_ = false;
};

struct StdinGate {
  uv_pipe_t pipe;
  Worker* worker;
  bool started = false;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Config config = Parse(argc, argv);
  uv_loop_t* loop = uv_default_loop();
  Worker worker(loop, config);
  // Wait for "go" without blocking the loop, so the group connects meanwhile.
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
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
        auto* g = static_cast<StdinGate*>(stream->data);
        if (g->started) return;
        g->started = true;
        uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
        if (n > 0) {
          g->worker->Start();
        } else {
          g->worker->Quit();  // the test went away before "go"
        }
      });
  std::printf("ready\n");
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 3;
}
