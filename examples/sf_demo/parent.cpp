// The parent half of sf_demo: spawns the workers of each burst, starts them
// at one instant, optionally SIGKILLs a leader, and checks the outcome.
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/spawn.h"
#include "common/sync_redis.h"
#include "demo.h"

namespace sfdemo {
namespace {

// The key whose leader burst 3 kills.
const char* const kVictimKey = "key-0";

struct Answer {
  std::string key, code, source, value;
  uint64_t latency_us = 0;
};

class Burst;

// One worker process and the two pipes the parent holds to it.
struct Proc {
  Burst* burst = nullptr;
  int index = 0;
  uv_process_t process;
  uv_pipe_t in;   // the worker's stdin: "go"
  uv_pipe_t out;  // the worker's stdout: its report lines
  uv_write_t write_req;
  std::string go_line;
  std::string buffer;  // bytes of an unfinished line
  char chunk[4096];
  bool spawned = false, ready = false, exited = false, out_closed = false, in_closed = false;
  bool killed = false;
  int pid = 0;
  int64_t exit_status = -1;
  int term_signal = 0;
  std::vector<Answer> answers;
  std::set<std::string> producing;  // keys whose producer started and has not finished
  std::set<std::string> cut_short;  // keys it was producing when it was killed
  std::map<std::string, uint64_t> stats;
};

struct Summary {
  bool ok = true;
  std::vector<std::string> failures;
};

class Burst {
 public:
  Burst(const Config& config, const std::string& exe, int number, bool kill_a_leader)
      : config_(config), exe_(exe), number_(number), kill_a_leader_(kill_a_leader) {}

  // Runs the burst to the end on its own loop; false if the loop could not
  // be closed cleanly (a bug in this program, reported as a failure).
  bool Run() {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &guard_);
    uv_timer_init(&loop_, &kill_timer_);
    guard_.data = kill_timer_.data = this;
    // A hang guard, not a timing check: past it every worker is killed.
    uv_timer_start(&guard_, OnGuard, config_.wait_timeout_ms + 30000, 0);
    procs_.resize(static_cast<size_t>(config_.workers));
    for (size_t i = 0; i < procs_.size(); ++i) {
      procs_[i] = std::make_unique<Proc>();
      Spawn(procs_[i].get(), static_cast<int>(i));
    }
    MaybeFinish();
    uv_run(&loop_, UV_RUN_DEFAULT);
    return uv_loop_close(&loop_) == 0;
  }

  Summary Report(examples::SyncRedis& redis) const;

 private:
  std::vector<std::string> WorkerArgs(int index) const {
    return {exe_,
            "--index",
            std::to_string(index + 1),
            "--worker",
            "--redis-url",
            config_.redis.url,
            "--callers",
            std::to_string(config_.callers),
            "--keys",
            std::to_string(config_.keys),
            "--work-ms",
            std::to_string(config_.work_ms),
            "--result-ttl-ms",
            std::to_string(config_.result_ttl_ms),
            "--lock-ttl-ms",
            std::to_string(config_.lock_ttl_ms),
            "--prefix",
            config_.prefix,
            "--burst",
            std::to_string(number_)};
  }

  void Spawn(Proc* p, int index) {
    p->burst = this;
    p->index = index;
    uv_pipe_init(&loop_, &p->in, 0);
    uv_pipe_init(&loop_, &p->out, 0);
    p->in.data = p->out.data = p->process.data = p;
    int rc =
        examples::SpawnPiped(&loop_, &p->process, exe_, WorkerArgs(index), &p->in, &p->out, OnExit);
    if (rc != 0) {
      Fail("cannot start worker: " + std::string(uv_strerror(rc)));
      // The handles were initialized either way and must be closed.
      p->exited = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&p->process), nullptr);
      CloseOut(p);
      CloseIn(p);
      return;
    }
    p->spawned = true;
    p->pid = p->process.pid;
    uv_read_start(reinterpret_cast<uv_stream_t*>(&p->out), OnAlloc, OnRead);
  }

  static void OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    auto* p = static_cast<Proc*>(handle->data);
    *buf = uv_buf_init(p->chunk, sizeof p->chunk);
  }

  static void OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
    auto* p = static_cast<Proc*>(stream->data);
    if (n < 0) {
      p->burst->CloseOut(p);
      return;
    }
    p->buffer.append(p->chunk, static_cast<size_t>(n));
    size_t newline;
    while ((newline = p->buffer.find('\n')) != std::string::npos) {
      std::string line = p->buffer.substr(0, newline);
      p->buffer.erase(0, newline + 1);
      p->burst->OnLine(p, line);
    }
  }

  void OnLine(Proc* p, const std::string& line) {
    std::istringstream in(line);
    std::string word;
    in >> word;
    if (word == "ready") {
      p->ready = true;
      MaybeGo();
    } else if (word == "lead") {
      std::string key;
      in >> key;
      p->producing.insert(key);
      if (kill_a_leader_ && victim_ == nullptr && key == kVictimKey) ScheduleKill(p);
    } else if (word == "produced") {
      std::string key;
      in >> key;
      p->producing.erase(key);
    } else if (word == "result") {
      Answer a;
      in >> a.key >> a.code >> a.source >> a.latency_us;
      std::getline(in >> std::ws, a.value);
      p->answers.push_back(std::move(a));
    } else if (word == "stats") {
      while (in >> word) {
        size_t eq = word.find('=');
        if (eq != std::string::npos) {
          p->stats[word.substr(0, eq)] = std::strtoull(word.c_str() + eq + 1, nullptr, 10);
        }
      }
    }
  }

  // Every worker has reached Redis: release them all at one instant. The
  // instant travels with "go", so each worker measures its callers' latency
  // from the same start (uv_hrtime is CLOCK_MONOTONIC, shared by processes).
  void MaybeGo() {
    for (auto& p : procs_) {
      if (!p->ready) return;
    }
    uint64_t t0 = uv_hrtime();
    for (auto& p : procs_) {
      p->go_line = "go " + std::to_string(t0) + "\n";
      uv_buf_t buf = uv_buf_init(p->go_line.data(), static_cast<unsigned>(p->go_line.size()));
      p->write_req.data = p.get();
      uv_write(&p->write_req, reinterpret_cast<uv_stream_t*>(&p->in), &buf, 1,
               [](uv_write_t* req, int) {
                 auto* proc = static_cast<Proc*>(req->data);
                 proc->burst->CloseIn(proc);
               });
    }
  }

  // Kill the leader halfway through its work, like a crash: no release, no
  // publish; its lock just lapses and a follower elsewhere takes over.
  void ScheduleKill(Proc* p) {
    victim_ = p;
    uv_timer_start(
        &kill_timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<Burst*>(t->data);
          Proc* victim = self->victim_;
          if (victim->exited) return;
          victim->cut_short = victim->producing;
          victim->killed = true;
          uv_process_kill(&victim->process, SIGKILL);
        },
        config_.work_ms / 2, 0);
  }

  static void OnGuard(uv_timer_t* t) {
    auto* self = static_cast<Burst*>(t->data);
    self->Fail("the burst did not finish in time; killing the workers");
    for (auto& p : self->procs_) {
      if (!p->exited) uv_process_kill(&p->process, SIGKILL);
    }
  }

  static void OnExit(uv_process_t* process, int64_t exit_status, int term_signal) {
    auto* p = static_cast<Proc*>(process->data);
    p->exited = true;
    p->exit_status = exit_status;
    p->term_signal = term_signal;
    uv_close(reinterpret_cast<uv_handle_t*>(process), nullptr);
    // A worker that dies before "go" would hold the others back forever.
    if (!p->ready) p->burst->Fail("a worker exited before it was ready");
    p->burst->CloseIn(p);
    p->burst->MaybeFinish();
  }

  void CloseOut(Proc* p) {
    if (p->out_closed) return;
    p->out_closed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->out), nullptr);
    MaybeFinish();
  }

  void CloseIn(Proc* p) {
    if (p->in_closed) return;
    p->in_closed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->in), nullptr);
  }

  void MaybeFinish() {
    if (finished_) return;
    for (auto& p : procs_) {
      if (!p->exited || !p->out_closed) return;
    }
    finished_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&kill_timer_), nullptr);
  }

  void Fail(const std::string& why) { early_failures_.push_back(why); }

  void PrintTable(const std::map<std::string, long long>& executions,
                  const std::map<std::string, long long>& expected) const;

  const Config& config_;
  std::string exe_;
  int number_;
  bool kill_a_leader_;
  uv_loop_t loop_;
  uv_timer_t guard_;
  uv_timer_t kill_timer_;
  std::vector<std::unique_ptr<Proc>> procs_;
  Proc* victim_ = nullptr;
  bool finished_ = false;
  std::vector<std::string> early_failures_;
};

long long GetCounter(examples::SyncRedis& redis, const std::string& name) {
  examples::Reply reply = redis.Command({"GET", name});
  if (reply.type == examples::Reply::kNil) return 0;
  return reply.type == examples::Reply::kString ? std::atoll(reply.str.c_str()) : -1;
}

double Percentile(std::vector<uint64_t> sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(rank, sorted.size() - 1)]) / 1000.0;
}

Summary Burst::Report(examples::SyncRedis& redis) const {
  Summary s;
  for (auto& why : early_failures_) s.failures.push_back(why);

  // Executions per key, from the counters in Redis, against what should be:
  // one, plus one for a key whose leader was killed mid-work.
  std::map<std::string, long long> executions, expected;
  for (int k = 0; k < config_.keys; ++k) {
    std::string key = KeyName(k);
    executions[key] = GetCounter(redis, ExecutionCounter(config_, number_, key));
    expected[key] = 1 + (victim_ && victim_->cut_short.count(key) ? 1 : 0);
    if (executions[key] != expected[key]) {
      s.failures.push_back(key + " ran " + std::to_string(executions[key]) + " times, expected " +
                           std::to_string(expected[key]));
    }
  }
  PrintTable(executions, expected);

  std::map<std::string, std::set<std::string>> values;
  for (auto& p : procs_) {
    if (p->killed) continue;
    bool clean = p->exited && p->term_signal == 0 && p->exit_status == 0;
    if (!clean) s.failures.push_back("worker " + std::to_string(p->index) + " did not exit 0");
    if (p->answers.size() != static_cast<size_t>(config_.callers)) {
      s.failures.push_back("worker " + std::to_string(p->index) + " answered " +
                           std::to_string(p->answers.size()) + " of " +
                           std::to_string(config_.callers) + " callers");
    }
    for (auto& a : p->answers) {
      if (a.code != "ok") s.failures.push_back(a.key + ": a caller got " + a.code + " " + a.value);
      values[a.key].insert(a.value);
    }
  }
  for (auto& [key, seen] : values) {
    if (seen.size() != 1) s.failures.push_back(key + ": callers saw different values");
  }
  if (kill_a_leader_) {
    uint64_t takeovers = 0;
    for (auto& p : procs_) {
      auto found = p->stats.find("takeovers");
      if (found != p->stats.end()) takeovers += found->second;
    }
    if (!victim_ || !victim_->killed) s.failures.push_back("no leader of key-0 was killed");
    size_t cut = victim_ ? victim_->cut_short.size() : 0;
    if (takeovers != cut) {
      s.failures.push_back(std::to_string(takeovers) + " takeovers for " + std::to_string(cut) +
                           " killed flights");
    }
  }
  s.ok = s.failures.empty();
  return s;
}

void Burst::PrintTable(const std::map<std::string, long long>& executions,
                       const std::map<std::string, long long>& expected) const {
  size_t requests = procs_.size() * static_cast<size_t>(config_.callers);
  size_t answered = 0, ok = 0, lost = 0;
  std::vector<uint64_t> latencies;
  std::map<std::string, size_t> served;
  std::map<std::string, uint64_t> stats;
  for (auto& p : procs_) {
    if (p->killed) lost += static_cast<size_t>(config_.callers) - p->answers.size();
    for (auto& a : p->answers) {
      ++answered;
      if (a.code != "ok") continue;
      ++ok;
      latencies.push_back(a.latency_us);
      ++served[a.source];
    }
    for (auto& [name, n] : p->stats) stats[name] += n;
  }
  std::sort(latencies.begin(), latencies.end());

  if (victim_) {
    std::printf("  killed      worker %d (pid %d) %u ms into its work, while it led:",
                victim_->index, victim_->pid, config_.work_ms / 2);
    for (auto& key : victim_->cut_short) std::printf(" %s", key.c_str());
    std::printf("\n");
  }
  std::printf("  requests    %zu (answered %zu, ok %zu", requests, answered, ok);
  if (victim_) std::printf(", %zu died with the killed worker", lost);
  std::printf(")\n  executions ");
  for (auto& [key, n] : executions) std::printf(" %s=%lld", key.c_str(), n);
  std::printf("   (expected");
  for (auto& [key, n] : expected) std::printf(" %lld", n);
  std::printf(")\n  latency     p50 %.1f ms  p99 %.1f ms  max %.1f ms  (from the shared start)\n",
              Percentile(latencies, 0.50), Percentile(latencies, 0.99), Percentile(latencies, 1.0));
  std::printf("  served     ");
  for (const char* source : {"led", "joined", "pubsub", "redis", "l1", "fallback"}) {
    auto found = served.find(source);  // SourceName's names
    std::printf(" %s=%zu", source, found == served.end() ? size_t{0} : found->second);
  }
  std::printf("\n  stats      ");
  for (const char* name : {"leads", "joins", "pubsub_wakes", "redis_hits", "fallback_hits",
                           "takeovers", "timeouts", "malformed_dropped"}) {
    auto found = stats.find(name);
    std::printf(" %s=%llu", name,
                static_cast<unsigned long long>(found == stats.end() ? 0 : found->second));
  }
  std::printf("\n");
}

std::string SelfPath() {
  char path[4096];
  size_t size = sizeof path;
  if (uv_exepath(path, &size) != 0) return "";
  return std::string(path, size);
}

bool RunBurst(const Config& config, const std::string& exe, examples::SyncRedis& redis, int number,
              const char* title, bool kill_a_leader, std::vector<std::string>* failures) {
  std::printf("\nburst %d: %s\n", number, title);
  std::fflush(stdout);
  Burst burst(config, exe, number, kill_a_leader);
  bool clean = burst.Run();
  Summary s = burst.Report(redis);
  if (!clean) s.failures.push_back("the parent's loop did not close cleanly");
  for (auto& why : s.failures) failures->push_back("burst " + std::to_string(number) + ": " + why);
  std::fflush(stdout);
  return s.failures.empty();
}

}  // namespace

int RunParent(const Config& config) {
  std::string exe = SelfPath();
  std::string error = "cannot find this program's path";
  std::unique_ptr<examples::SyncRedis> redis =
      exe.empty() ? nullptr : examples::SyncRedis::Connect(config.redis, 2000, &error);
  if (!redis) {
    std::printf("sf_demo: FAILED: %s\n", error.c_str());
    return 1;
  }
  std::printf(
      "sf_demo: %d workers x %d callers over %d keys; work %u ms, result TTL %u ms, "
      "lock TTL %u ms, prefix %s\n",
      config.workers, config.callers, config.keys, config.work_ms, config.result_ttl_ms,
      config.lock_ttl_ms, config.prefix.c_str());

  std::vector<std::string> failures;
  // Past the result TTL (plus a margin for Redis's expiry), the next burst
  // finds nothing cached and must refill. Blocking is fine here: the parent
  // has nothing else to do between bursts.
  auto wait_past_ttl = [&] { uv_sleep(config.result_ttl_ms + 300); };
  RunBurst(config, exe, *redis, 1, "cold start, every worker at once (expect 1 execution per key)",
           false, &failures);
  wait_past_ttl();
  RunBurst(config, exe, *redis, 2, "after the result TTL (expect a refill: 1 more per key)", false,
           &failures);
  if (config.workers >= 2) {
    wait_past_ttl();
    RunBurst(config, exe, *redis, 3,
             "the leader of key-0 is SIGKILLed mid-work (expect a takeover: 2 for its keys)", true,
             &failures);
  } else {
    std::printf("\nburst 3 skipped: a takeover needs at least 2 workers\n");
  }
  redis.reset();

  std::printf("\n");
  if (failures.empty()) {
    std::printf("sf_demo: OK\n");
    return 0;
  }
  for (auto& why : failures) std::printf("sf_demo: FAILED: %s\n", why.c_str());
  return 1;
}

}  // namespace sfdemo
