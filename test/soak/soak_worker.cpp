// sf_soak_worker: one process of the chaos soak (sf_soak starts several).
//
// It runs C callers in a loop over a rolling key set until "stop" arrives on
// stdin; each call has a random deadline. Its producer randomly succeeds,
// fails, outlives the lock TTL, or never calls done. Every execution is
// appended to this process's execution log (soak_common.h). After "stop" it
// waits for the calls still out (each bounded by its deadline), then prints
// one "summary" line and exits 0.
//
// What a caller checks: its callback runs once, no later than its deadline
// plus --slack-ms; the result is a value for the key it asked for, or a
// clear status (producer_error naming the key, timeout, unavailable).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "singleflight/group.h"
#include "soak_common.h"

namespace singleflight::soak {
namespace {

struct Config {
  std::string host = "127.0.0.1";
  int port = 6379;
  int callers = 16;
  int keys = 8;
  uint64_t epoch_ms = 0;  // the driver's start, on MonoMs()
  uint32_t roll_ms = 4000;
  uint32_t lock_ttl_ms = 600;
  uint32_t result_ttl_ms = 1500;
  uint32_t producer_timeout_ms = 2000;
  uint32_t min_wait_ms = 300;
  uint32_t max_wait_ms = 3000;
  uint32_t slack_ms = 500;
  uint32_t hang_grace_ms = 20000;  // see the driver's Config
  size_t max_value_bytes = 64 * 1024;
  std::string exec_log;
  unsigned seed = 1;
};

Config Parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string name = argv[i];
    std::string value = argv[i + 1];
    auto number = [&] { return std::strtoull(value.c_str(), nullptr, 10); };
    if (name == "--redis") {
      c.host = value.substr(0, value.rfind(':'));
      c.port = std::atoi(value.substr(value.rfind(':') + 1).c_str());
    } else if (name == "--callers") {
      c.callers = static_cast<int>(number());
    } else if (name == "--keys") {
      c.keys = static_cast<int>(number());
    } else if (name == "--epoch-ms") {
      c.epoch_ms = number();
    } else if (name == "--roll-ms") {
      c.roll_ms = static_cast<uint32_t>(number());
    } else if (name == "--lock-ttl-ms") {
      c.lock_ttl_ms = static_cast<uint32_t>(number());
    } else if (name == "--result-ttl-ms") {
      c.result_ttl_ms = static_cast<uint32_t>(number());
    } else if (name == "--producer-timeout-ms") {
      c.producer_timeout_ms = static_cast<uint32_t>(number());
    } else if (name == "--min-wait-ms") {
      c.min_wait_ms = static_cast<uint32_t>(number());
    } else if (name == "--max-wait-ms") {
      c.max_wait_ms = static_cast<uint32_t>(number());
    } else if (name == "--slack-ms") {
      c.slack_ms = static_cast<uint32_t>(number());
    } else if (name == "--hang-grace-ms") {
      c.hang_grace_ms = static_cast<uint32_t>(number());
    } else if (name == "--max-value-bytes") {
      c.max_value_bytes = number();
    } else if (name == "--exec-log") {
      c.exec_log = value;
    } else if (name == "--seed") {
      c.seed = static_cast<unsigned>(number());
    }
  }
  return c;
}

Options GroupOptions(const Config& c) {
  Options options;
  options.redis.host = c.host;
  options.redis.port = c.port;
  options.redis.connect_timeout_ms = 1000;
  options.redis.command_timeout_ms = 1000;
  options.redis.reconnect_min_ms = 50;
  options.redis.reconnect_max_ms = 500;
  options.lock_ttl_ms = c.lock_ttl_ms;
  options.result_ttl_ms = c.result_ttl_ms;
  options.l1_ttl_ms = 200;
  options.fallback_interval_ms = 0;  // v2: no polling; the invariants must hold without it
  options.producer_timeout_ms = c.producer_timeout_ms;
  options.max_value_bytes = c.max_value_bytes;
  return options;
}

// What the producer of one execution does.
enum class Behaviour { kOk, kFail, kSlow, kHang };

const char* BehaviourName(Behaviour b) {
  switch (b) {
    case Behaviour::kOk: return "ok";
    case Behaviour::kFail: return "fail";
    case Behaviour::kSlow: return "slow";
    case Behaviour::kHang: return "hang";
  }
  return "?";
}

// Counters the summary line reports.
struct Tally {
  uint64_t calls = 0, rejected = 0, ok = 0, producer_error = 0, timeout = 0, unavailable = 0;
  uint64_t unexpected = 0, late = 0, hung = 0, max_over_ms = 0;
  std::map<std::string, uint64_t> sources;
};

class Worker;

// One execution's pending completion: a uv timer that calls done.
struct Work {
  uv_timer_t timer;
  Worker* worker;
  Done done;
  std::string key;
  uint64_t seq;
  Behaviour behaviour;
};

// One caller: a loop of calls, with a short pause between them.
struct Caller {
  uv_timer_t pause;
  Worker* worker;
  int index;
};

struct Pending {
  std::string key;
  uint64_t deadline_ms;
};

class Worker {
 public:
  Worker(uv_loop_t* loop, Config config)
      : loop_(loop), config_(std::move(config)), random_(config_.seed ^ getpid()) {
    group_ = std::make_unique<Group>(loop_, GroupOptions(config_));
    log_fd_ = open(config_.exec_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd_ < 0) std::perror("soak worker: exec log");
  }

  void Start() {
    for (int i = 0; i < config_.callers; ++i) {
      auto* caller = new Caller{{}, this, i};
      uv_timer_init(loop_, &caller->pause);
      caller->pause.data = caller;
      callers_.push_back(caller);
      StartCall(caller);
    }
  }

  // No new calls; the summary follows once every call out has its result,
  // or after the longest deadline plus slack and the hang grace (the rest
  // count as hung).
  void Stop() {
    if (stopping_) return;
    stopping_ = true;
    for (Caller* caller : callers_) uv_timer_stop(&caller->pause);
    uv_timer_init(loop_, &guard_);
    uv_timer_start(
        &guard_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->Finish(); },
        config_.max_wait_ms + 2 * config_.slack_ms + config_.hang_grace_ms, 0);
    guard_.data = this;
    MaybeFinish();
  }

  void ForgetWork(Work* work) { works_.erase(work); }

 private:
  uint64_t Pick(uint64_t low, uint64_t high) {
    return std::uniform_int_distribution<uint64_t>(low, high)(random_);
  }

  std::string PickKey() {
    uint64_t now = MonoMs();
    uint64_t generation = (now - std::min(now, config_.epoch_ms)) / config_.roll_ms;
    if (generation > 0 && Pick(0, 9) == 0) --generation;  // a straggler
    return RollingKey(generation, static_cast<int>(Pick(0, config_.keys - 1)));
  }

  void StartCall(Caller* caller) {
    if (stopping_) return;
    std::string key = PickKey();
    uint32_t wait_ms = static_cast<uint32_t>(Pick(config_.min_wait_ms, config_.max_wait_ms));
    uint64_t id = ++call_seq_;
    Call call = group_->Do(
        key, [this](const ProducerContext& ctx, Done done) { Produce(ctx.key, std::move(done)); },
        [this, caller, id](const Result& r) { OnResult(caller, id, r); }, CallOptions{wait_ms});
    if (!call.ok()) {
      ++tally_.rejected;
      return Pause(caller);
    }
    ++tally_.calls;
    pending_[id] = Pending{key, MonoMs() + wait_ms};
  }

  void Pause(Caller* caller) {
    if (stopping_) return;
    uv_timer_start(
        &caller->pause,
        [](uv_timer_t* t) {
          auto* c = static_cast<Caller*>(t->data);
          c->worker->StartCall(c);
        },
        Pick(0, 50), 0);
  }

  void OnResult(Caller* caller, uint64_t id, const Result& r) {
    if (finished_) return;  // a hung call answered by Close: already counted
    uint64_t now = MonoMs();
    auto found = pending_.find(id);
    if (found == pending_.end()) {
      Unexpected("a second callback for one call", "?", r);
    } else {
      CheckTiming(now, found->second.deadline_ms);
      CheckResult(found->second.key, r);
      pending_.erase(found);
    }
    Pause(caller);
    MaybeFinish();
  }

  void CheckTiming(uint64_t now, uint64_t deadline) {
    if (now <= deadline) return;
    tally_.max_over_ms = std::max(tally_.max_over_ms, now - deadline);
    if (now > deadline + config_.slack_ms) ++tally_.late;
  }

  // A value must be for the key asked; an error must say what it is.
  void CheckResult(const std::string& key, const Result& r) {
    ++tally_.sources[std::string(SourceName(r.source))];
    const std::string& message = r.status.message();
    switch (r.status.code()) {
      case Code::kOk:
        if (r.value().rfind("v|" + key + "|", 0) != 0) return Unexpected("foreign value", key, r);
        ++tally_.ok;
        return;
      case Code::kProducerError:
        if (message.rfind("fail|" + key + "|", 0) != 0) {
          return Unexpected("foreign error", key, r);
        }
        ++tally_.producer_error;
        return;
      case Code::kTimeout:
        if (message.empty()) return Unexpected("empty message", key, r);
        ++tally_.timeout;
        return;
      case Code::kUnavailable:
        if (message.empty()) return Unexpected("empty message", key, r);
        ++tally_.unavailable;
        return;
      default: return Unexpected("unexpected code", key, r);
    }
  }

  void Unexpected(const char* what, const std::string& key, const Result& r) {
    ++tally_.unexpected;
    if (tally_.unexpected <= 5) {
      std::printf("bad %s key=%s status=%s source=%s value=%.60s\n", what, key.c_str(),
                  r.status.ToString().c_str(), std::string(SourceName(r.source)).c_str(),
                  std::string(r.value()).c_str());
    }
  }

  Behaviour PickBehaviour() {
    uint64_t roll = Pick(0, 99);
    if (roll < 70) return Behaviour::kOk;
    if (roll < 80) return Behaviour::kFail;
    if (roll < 92) return Behaviour::kSlow;
    return Behaviour::kHang;
  }

  void Produce(std::string_view key, Done done) {
    Behaviour behaviour = PickBehaviour();
    uint64_t seq = ++exec_seq_;
    // The group counts a degraded flight just before it runs the producer:
    // a change since the last execution means this one runs local-only (Redis
    // was unreachable at its first check), so it stores and publishes nothing.
    uint64_t degraded = group_->stats().degraded_calls;
    std::string detail = BehaviourName(behaviour);
    if (degraded != degraded_seen_) detail += " degraded";
    degraded_seen_ = degraded;
    LogExec("start", seq, key, detail.c_str());
    if (behaviour == Behaviour::kHang) return;  // done is dropped: never called
    uint64_t work_ms = Pick(10, 150);
    // Slow work outlives the lease; only the watchdog keeps it one execution.
    if (behaviour == Behaviour::kSlow)
      work_ms = Pick(config_.lock_ttl_ms + 100, config_.lock_ttl_ms * 2);
    auto* work = new Work{{}, this, std::move(done), std::string(key), seq, behaviour};
    works_.insert(work);
    uv_timer_init(loop_, &work->timer);
    work->timer.data = work;
    uv_timer_start(&work->timer, OnWorkDone, work_ms, 0);
  }

  static void OnWorkDone(uv_timer_t* timer) {
    auto* work = static_cast<Work*>(timer->data);
    work->worker->Complete(work);
  }

  void Complete(Work* work) {
    std::string tail = work->key + "|" + std::to_string(getpid()) + "|" + std::to_string(work->seq);
    bool fail = work->behaviour == Behaviour::kFail;
    LogExec("end", work->seq, work->key, fail ? "fail" : "ok");
    if (fail) {
      work->done.Fail("fail|" + tail);
    } else {
      work->done("v|" + tail);
    }
    CloseWork(work);
  }

  void CloseWork(Work* work) {
    works_.erase(work);
    uv_close(reinterpret_cast<uv_handle_t*>(&work->timer),
             [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
  }

  void LogExec(const char* what, uint64_t seq, std::string_view key, const char* detail) {
    std::string line = std::string(what) + " " + std::to_string(getpid()) + " " +
                       std::to_string(seq) + " " + std::to_string(MonoMs()) + " " +
                       std::string(key) + " " + detail + "\n";
    if (log_fd_ >= 0 && write(log_fd_, line.data(), line.size()) < 0) std::perror("exec log");
  }

  void MaybeFinish() {
    if (stopping_ && pending_.empty()) Finish();
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    tally_.hung = pending_.size();
    for (auto& [id, call] : pending_) std::printf("hung key=%s\n", call.key.c_str());
    PrintSummary();
    uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
    for (Caller* caller : callers_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&caller->pause),
               [](uv_handle_t* h) { delete static_cast<Caller*>(h->data); });
    }
    callers_.clear();
    // Work still timed: close it (its done would be ignored after Close).
    std::vector<Work*> left(works_.begin(), works_.end());
    for (Work* work : left) CloseWork(work);
    // Close releases the leases this worker still holds, so another worker
    // may take over a key it was producing: the driver needs to know when.
    LogExec("close", 0, "-", "-");
    group_->Close([this] {
      if (log_fd_ >= 0) close(log_fd_);
    });
  }

  void PrintSummary() {
    Stats s = group_->stats();
    std::string sources;
    for (auto& [name, count] : tally_.sources) {
      sources += " src_" + name + "=" + std::to_string(count);
    }
    std::printf(
        "summary pid=%d calls=%llu rejected=%llu ok=%llu producer_error=%llu timeout=%llu "
        "unavailable=%llu unexpected=%llu late=%llu hung=%llu max_over_ms=%llu leads=%llu "
        "takeovers=%llu malformed=%llu reconnects=%llu producer_timeouts=%llu degraded=%llu "
        "redis_errors=%llu%s\n",
        getpid(), ull(tally_.calls), ull(tally_.rejected), ull(tally_.ok),
        ull(tally_.producer_error), ull(tally_.timeout), ull(tally_.unavailable),
        ull(tally_.unexpected), ull(tally_.late), ull(tally_.hung), ull(tally_.max_over_ms),
        ull(s.leads), ull(s.takeovers), ull(s.malformed_dropped), ull(s.reconnects),
        ull(s.producer_timeouts), ull(s.degraded_calls), ull(s.redis_errors), sources.c_str());
    std::fflush(stdout);
  }

  static unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

  uv_loop_t* loop_;
  Config config_;
  std::mt19937_64 random_;
  std::unique_ptr<Group> group_;
  int log_fd_ = -1;
  std::vector<Caller*> callers_;
  std::unordered_set<Work*> works_;                // executions whose timer has not fired
  std::unordered_map<uint64_t, Pending> pending_;  // calls without a result yet
  uv_timer_t guard_{};
  uint64_t call_seq_ = 0;
  uint64_t exec_seq_ = 0;
  uint64_t degraded_seen_ = 0;
  bool stopping_ = false;
  bool finished_ = false;
  Tally tally_;
};

// Reads "go" and "stop" lines from the driver without blocking the loop. EOF
// (the driver died) stops the worker too.
struct StdinCommands {
  uv_pipe_t pipe;
  Worker* worker;
  std::string buffer;
  bool started = false;
  bool stopped = false;

  void OnLine(const std::string& line) {
    if (line == "go" && !started) {
      started = true;
      worker->Start();
    } else if (line == "stop" && !stopped) {
      stopped = true;
      worker->Stop();
      uv_close(reinterpret_cast<uv_handle_t*>(&pipe), nullptr);
    }
  }
};

void ReadCommands(uv_loop_t* loop, StdinCommands* commands) {
  uv_pipe_init(loop, &commands->pipe, 0);
  uv_pipe_open(&commands->pipe, 0);
  commands->pipe.data = commands;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&commands->pipe),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char storage[256];
        *buf = uv_buf_init(storage, sizeof storage);
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
        auto* c = static_cast<StdinCommands*>(stream->data);
        if (n < 0) return c->OnLine("stop");  // EOF: the driver is gone
        c->buffer.append(buf->base, static_cast<size_t>(n));
        for (size_t at; (at = c->buffer.find('\n')) != std::string::npos;) {
          std::string line = c->buffer.substr(0, at);
          c->buffer.erase(0, at + 1);
          c->OnLine(line);
          if (uv_is_closing(reinterpret_cast<uv_handle_t*>(stream))) return;
        }
      });
}

}  // namespace
}  // namespace singleflight::soak

int main(int argc, char** argv) {
  using namespace singleflight::soak;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Config config = Parse(argc, argv);
  if (config.exec_log.empty()) {
    std::fprintf(stderr, "usage: sf_soak_worker --exec-log PATH --redis HOST:PORT ...\n");
    return 2;
  }
  uv_loop_t* loop = uv_default_loop();
  Worker worker(loop, config);
  StdinCommands commands;
  commands.worker = &worker;
  ReadCommands(loop, &commands);
  std::printf("ready\n");
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 3;
}
