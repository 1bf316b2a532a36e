// sf_worker: one process of a multi-process test. It joins a fleet through
// Redis, waits for "go" on stdin (so every process starts together), runs C
// callers over K keys, prints one line per result and a stats line, closes
// its group and exits 0.
//
//   sf_worker --redis HOST:PORT [--callers C] [--keys K] [--work-ms W]
//             [--lock-ttl-ms L] [--fallback-ms F] [--timeout-ms T]
//             [--fail] [--crash] [--prefix P] [--rounds R] [--l1-ttl-ms T]
//             [--duration-ms D] [--park] [--report-checks] [--cluster]
//
// With --cluster, HOST:PORT is one node of a Redis Cluster (RedisOptions::
// cluster), and the execution counter follows MOVED to the node that owns
// its key (one connection per node), so it counts on any shard.
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
// With --duration-ms D every caller calls again as soon as it has its result,
// for D ms after "go" (a hot key under constant load); then the process ends
// as usual once the last calls are answered. Instead of a line per call it
// prints one "codes <code>=<calls> ..." line before the stats line (thousands
// of lines would fill the pipe while the test reads another worker).
//
// With --park the producer does not finish by itself: it prints
// "leading <key>" and waits for the test. The stdin line "finish <value>"
// completes the oldest parked production with <value>, then makes one more
// call on a fresh key through the same connection and prints
// "finished <done-accepted 0|1>" when that call is answered: replies come in
// order on one connection, so by then Redis has answered the completion.
// The process does not close by itself: "quit" prints the stats line, closes
// the group and exits (EOF on stdin does the same).
//
// With --report-checks it prints "checks <n>" whenever Stats::checks grows: a
// follower has subscribed and re-checked once it reaches 2, so a test can
// finish the leader knowing the wake-up will come by pub/sub.
//
// Output: "result <i> <key> <code> <source> <value-or-message>" per call,
// then "stats leads=N takeovers=N pubsub=N fallback=N malformed=N ..." (every
// field is name=value, see PrintStats).
#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
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
  uint32_t duration_ms = 0;  // 0: each caller calls once per round
  bool park = false;
  bool report_checks = false;
  bool cluster = false;
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
    } else if (a == "--duration-ms") {
      c.duration_ms = std::atoi(next().c_str());
    } else if (a == "--park") {
      c.park = true;
    } else if (a == "--report-checks") {
      c.report_checks = true;
    } else if (a == "--prefix") {
      c.prefix = next();
    } else if (a == "--fail") {
      c.fail = true;
    } else if (a == "--crash") {
      c.crash = true;
    } else if (a == "--cluster") {
      c.cluster = true;
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
    options.redis.cluster = config_.cluster;
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
    started_at_ = uv_now(loop_);
    Start();
  }

  // One line from the test: "go", "finish <value>" or "quit".
  void OnLine(const std::string& line) {
    if (line.empty() || line == "go") return Go();
    if (line == "quit") return Quit();
    if (line.rfind("finish ", 0) == 0) return FinishParked(line.substr(7));
  }

  // Reports Forget broadcasts from other processes as they arrive (and, with
  // --report-checks, answered checks); runs after each loop iteration's I/O,
  // so no polling interval is involved.
  void WatchInvalidations() {
    uv_check_init(loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, [](uv_check_t* handle) {
      auto* self = static_cast<Worker*>(handle->data);
      self->ReportChecks();
      uint64_t seen = self->group_->stats().invalidations;
      if (seen == self->invalidations_) return;
      self->invalidations_ = seen;
      std::printf("invalidated %llu\n", static_cast<unsigned long long>(seen));
    });
    uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  }

  void Start() {
    for (int i = (round_ - 1) * config_.callers; i < round_ * config_.callers; ++i) {
      CallOnce(i);
    }
    MaybeFinish();
  }

  void CallOnce(int i) {
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

  std::function<void()> on_done;  // the last round is answered

  void Quit() {
    if (quitting_) return;
    quitting_ = true;
    if (!closing_) {
      closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
      PrintStats();
    }
    if (on_done) on_done();
    CloseGroup();
  }

 private:
  void Produce(const std::string& key, singleflight::Done done) {
    long long execution = CountExecution(config_.prefix + "exec:" + key);
    if (config_.park) {
      std::printf("leading %s\n", key.c_str());
      parked_.push_back(std::move(done));
      return;
    }
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

  void ReportChecks() {
    uint64_t checks = group_->stats().checks;
    if (!config_.report_checks || checks == checks_) return;
    checks_ = checks;
    std::printf("checks %llu\n", static_cast<unsigned long long>(checks));
  }

  // --park: completes the oldest parked production, then fences (see the
  // header comment).
  void FinishParked(const std::string& value) {
    if (parked_.empty() || closing_) {
      std::printf("finished none\n");
      return;
    }
    singleflight::Done done = std::move(parked_.front());
    parked_.pop_front();
    bool accepted = done(value);
    std::string fence = "fence-" + std::to_string(++fences_);
    singleflight::Call call = group_->Do(
        fence, [](const singleflight::ProducerContext&, singleflight::Done d) { d("fence"); },
        [accepted](const singleflight::Result&) { std::printf("finished %d\n", accepted); },
        singleflight::CallOptions{config_.timeout_ms});
    if (!call.ok()) std::printf("finished %d\n", accepted);
  }

  void OnResult(int i, const std::string& key, const singleflight::Result& r) {
    std::string text = r.ok() ? std::string(r.value()) : r.status.message();
    if (config_.duration_ms > 0) {
      ++codes_[std::string(singleflight::CodeName(r.status.code()))];
    } else {
      std::printf("result %d %s %s %s %s\n", i, key.c_str(),
                  std::string(singleflight::CodeName(r.status.code())).c_str(),
                  std::string(singleflight::SourceName(r.source)).c_str(), text.c_str());
    }
    if (config_.duration_ms > 0 && !closing_ && uv_now(loop_) - started_at_ < config_.duration_ms) {
      return CallOnce(i);  // the key stays hot until the duration is over
    }
    ++finished_;
    MaybeFinish();
  }

  void MaybeFinish() {
    if (finished_ != round_ * config_.callers || closing_) return;
    if (round_ < config_.rounds || config_.park) {
      std::printf("round %d done\n", round_);
      return;  // the next "go" starts the next round; --park waits for "quit"
    }
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    if (on_done) on_done();
    PrintStats();
    CloseGroup();
  }

  // INCR on the counter's node; on a cluster, a MOVED names the node that
  // owns the key (followed up to 3 times, for a slot that moved meanwhile).
  long long CountExecution(const std::string& counter) {
    redisContext* context = counter_;
    for (int hop = 0; hop < 4 && context != nullptr && context->err == 0; ++hop) {
      auto* reply = static_cast<redisReply*>(redisCommand(context, "INCR %s", counter.c_str()));
      if (reply == nullptr) return -1;
      std::string error = reply->type == REDIS_REPLY_ERROR ? reply->str : "";
      long long value = reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
      freeReplyObject(reply);
      if (error.rfind("MOVED ", 0) != 0) return value;
      std::string address = error.substr(error.rfind(' ') + 1);
      redisContext*& node = nodes_[address];
      if (node == nullptr) {
        size_t colon = address.rfind(':');
        node =
            redisConnect(address.substr(0, colon).c_str(), std::atoi(address.c_str() + colon + 1));
      }
      context = node;
    }
    return -1;
  }

  void CloseGroup() {
    if (group_closed_) return;
    group_closed_ = true;
    group_->Close([this] {
      redisFree(counter_);
      for (auto& entry : nodes_) {
        if (entry.second != nullptr) redisFree(entry.second);
      }
    });
  }

  void PrintStats() {
    if (config_.duration_ms > 0) {
      std::string line = "codes";
      for (auto& [code, calls] : codes_) line += " " + code + "=" + std::to_string(calls);
      std::printf("%s\n", line.c_str());
    }
    singleflight::Stats s = group_->stats();
    auto n = [](uint64_t v) { return static_cast<unsigned long long>(v); };
    std::printf(
        "stats leads=%llu takeovers=%llu pubsub=%llu fallback=%llu malformed=%llu "
        "leases_lost=%llu leases_released=%llu leases_abandoned=%llu foreign_dropped=%llu "
        "unknown_outcomes=%llu error_replies_retryable=%llu error_replies_fatal=%llu "
        "undecodable_results=%llu timeouts=%llu inflight=%llu redis_errors=%llu reconnects=%llu\n",
        n(s.leads), n(s.takeovers), n(s.pubsub_wakes), n(s.fallback_hits), n(s.malformed_dropped),
        n(s.leases_lost), n(s.leases_released), n(s.leases_abandoned), n(s.foreign_dropped),
        n(s.unknown_outcomes), n(s.error_replies_retryable), n(s.error_replies_fatal),
        n(s.undecodable_results), n(s.timeouts), n(s.inflight), n(s.redis_errors), n(s.reconnects));
    std::fflush(stdout);
  }

  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<singleflight::Group> group_;
  redisContext* counter_;
  std::map<std::string, redisContext*> nodes_;  // --cluster: counters' other nodes
  int finished_ = 0;
  int round_ = 0;
  bool closing_ = false;   // no more rounds; the stats line is out
  bool quitting_ = false;  // Close was asked for by "quit" or EOF
  bool group_closed_ = false;
  uint64_t started_at_ = 0;
  std::deque<singleflight::Done> parked_;  // --park: productions the test finishes
  int fences_ = 0;
  std::map<std::string, int> codes_;  // --duration-ms: calls per result code
  uv_check_t check_;
  uint64_t invalidations_ = 0;
  uint64_t checks_ = 0;  // --report-checks: the last count printed
};

// Reads "go" lines from the test without blocking the loop, so the group
// connects meanwhile; EOF before the last round means the test went away.
struct StdinGate {
  uv_pipe_t pipe;
  Worker* worker;
  std::string partial;  // a line not yet ended by '\n'
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
          if (buf->base[i] != '\n') {
            g->partial += buf->base[i];
            continue;
          }
          std::string line = std::move(g->partial);
          g->partial.clear();
          g->worker->OnLine(line);
        }
      });
  std::printf("ready\n");
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 3;
}
