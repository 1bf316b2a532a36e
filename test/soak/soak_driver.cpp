// sf_soak: a bounded chaos soak of the distributed singleflight.
//
// It starts a private redis-server and P worker processes (sf_soak_worker),
// each running C callers over a rolling key set, lets them run for
// --seconds, and injects a fault every --event-min-ms..--event-max-ms:
//
//   kill_leader    SIGKILL a worker that is running a producer (respawned)
//   kill_pubsub    CLIENT KILL TYPE pubsub
//   kill_normal    CLIENT KILL TYPE normal
//   restart_redis  stop redis-server, keep it down a moment, start it on the
//                  same port (no persistence: locks and results are lost)
//   garbage        PUBLISH malformed or oversized messages on live channels
//
// Every kind happens at least once (the first events are one of each, in a
// random order). Every event is logged with its time since the start. At the
// end it checks the invariants (docs/reliability.md), prints a summary and
// exits 1 if one failed, 2 if the soak itself could not run, 77 (ctest's
// skip) if there is no redis-server to start.
//
// What depends on the machine's speed — callbacks later than their deadline
// plus --slack-ms, RSS growth — is measured and printed, and fails the run
// only with --strict-timing (by hand, on a quiet machine): the soak in ctest
// runs beside other tests on a busy machine, and must not fail for that.
//
//   sf_soak [--seconds 60] [--procs 4] [--callers 16] [--keys 8] [--seed N]
//           [--dir DIR] [--keep] [--strict-timing] [--worker PATH]
//           [--slack-ms 500] [--hang-grace-ms 20000] ...
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "envelope.h"
#include "soak_common.h"
#include "support/child_process.h"
#include "support/redis_server.h"

namespace singleflight::soak {
namespace {

using test::ChildProcess;
using test::RedisServer;

// The workers' command timeout (soak_worker.cpp): a reply can be cut off by
// a connectivity fault up to this long after the command was sent.
constexpr uint64_t kCommandTimeoutMs = 1000;
constexpr uint64_t kClockToleranceMs = 5;

struct Config {
  uint32_t seconds = 60;
  int procs = 4;
  int callers = 16;
  int keys = 8;
  uint32_t roll_ms = 4000;
  uint32_t lock_ttl_ms = 600;
  uint32_t result_ttl_ms = 1500;
  uint32_t producer_timeout_ms = 2000;
  uint32_t min_wait_ms = 300;
  uint32_t max_wait_ms = 3000;
  uint32_t slack_ms = 500;
  uint32_t event_min_ms = 1000;
  uint32_t event_max_ms = 3000;
  size_t max_value_bytes = 64 * 1024;
  // RSS may grow by this much (or by half of the first sample, if more)
  // between the sample after warm-up and the last one.
  uint64_t rss_slack_kb = 8 * 1024;
  // Connectivity faults (kill_normal, restart_redis) explain an extra
  // execution that starts up to this long after them: a process may still
  // be reconnecting (connect + command timeouts, backoff).
  uint32_t fault_reach_ms = 2500;
  // After "stop", how long past its deadline (+ 2 x slack) a worker waits for
  // its last calls before it counts them as hung: a bound for "it ended at
  // all", so generous that only a real hang reaches it.
  uint32_t hang_grace_ms = 20000;
  unsigned seed = 0;
  std::string dir;
  bool keep = false;
  bool strict_timing = false;  // lateness and RSS growth fail the run
  std::string worker = SF_SOAK_WORKER;
};

bool ParseArgs(int argc, char** argv, Config* c) {
  std::map<std::string, uint32_t*> numbers = {{"--seconds", &c->seconds},
                                              {"--roll-ms", &c->roll_ms},
                                              {"--lock-ttl-ms", &c->lock_ttl_ms},
                                              {"--result-ttl-ms", &c->result_ttl_ms},
                                              {"--min-wait-ms", &c->min_wait_ms},
                                              {"--max-wait-ms", &c->max_wait_ms},
                                              {"--slack-ms", &c->slack_ms},
                                              {"--event-min-ms", &c->event_min_ms},
                                              {"--event-max-ms", &c->event_max_ms},
                                              {"--producer-timeout-ms", &c->producer_timeout_ms},
                                              {"--hang-grace-ms", &c->hang_grace_ms},
                                              {"--fault-reach-ms", &c->fault_reach_ms}};
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--keep") {
      c->keep = true;
      continue;
    }
    if (name == "--strict-timing") {
      c->strict_timing = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    std::string value = argv[++i];
    unsigned long long n = std::strtoull(value.c_str(), nullptr, 10);
    if (numbers.count(name)) {
      *numbers[name] = static_cast<uint32_t>(n);
    } else if (name == "--procs") {
      c->procs = static_cast<int>(n);
    } else if (name == "--callers") {
      c->callers = static_cast<int>(n);
    } else if (name == "--keys") {
      c->keys = static_cast<int>(n);
    } else if (name == "--seed") {
      c->seed = static_cast<unsigned>(n);
    } else if (name == "--dir") {
      c->dir = value;
    } else if (name == "--worker") {
      c->worker = value;
    } else {
      return false;
    }
  }
  return c->seconds > 0 && c->procs >= 2 && c->callers > 0 && c->keys > 0 && c->event_min_ms > 0 &&
         c->event_min_ms <= c->event_max_ms;
}

// --- the event log ------------------------------------------------------------

struct Event {
  uint64_t at_ms;  // MonoMs()
  std::string kind;
  pid_t pid = 0;  // the worker killed, for kill_leader
  std::string detail;
  uint64_t until_ms = 0;  // restart_redis: when the server answered again
};

class EventLog {
 public:
  EventLog(uint64_t epoch_ms, const std::string& path) : epoch_ms_(epoch_ms), file_(path) {}

  void Add(Event event) {
    std::string line = Stamp(event.at_ms) + " " + event.kind +
                       (event.pid ? " pid=" + std::to_string(event.pid) : "") + " " + event.detail;
    std::printf("%s\n", line.c_str());
    file_ << line << "\n" << std::flush;
    events_.push_back(std::move(event));
  }
  void Note(const std::string& text) { Add(Event{MonoMs(), "note", 0, text}); }

  std::string Stamp(uint64_t at_ms) const {
    char text[32];
    std::snprintf(text, sizeof text, "[+%7.3fs]",
                  static_cast<double>(at_ms - std::min(at_ms, epoch_ms_)) / 1000.0);
    return text;
  }
  const std::vector<Event>& events() const { return events_; }

 private:
  uint64_t epoch_ms_;
  std::ofstream file_;
  std::vector<Event> events_;
};

// --- worker processes ---------------------------------------------------------

struct WorkerProc {
  std::string name;  // w0, w1, ...: spawn order
  std::unique_ptr<ChildProcess> child;
  pid_t pid = -1;
  std::string exec_log;
  bool witness = false;  // never killed, so some process lives the whole run
  bool alive = true;
  bool killed = false;  // by the driver, on purpose
  uint64_t spawned_ms = 0;
  uint64_t rss_before_kb = 0;
  uint64_t rss_after_kb = 0;
  int exit_status = -1;
  std::string summary;
  std::vector<std::string> notes;  // "bad ..." and "hung ..." lines
  // Tail of the execution log: which executions are running right now.
  size_t log_offset = 0;
  std::string log_partial;
  std::map<std::string, std::pair<std::string, uint64_t>> running;  // seq -> key, start
};

uint64_t RssKb(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
}

// Reads the lines appended to the worker's execution log since last time.
void TailExecLog(WorkerProc& w) {
  std::ifstream in(w.exec_log, std::ios::binary);
  if (!in) return;
  in.seekg(static_cast<std::streamoff>(w.log_offset));
  std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  w.log_offset += chunk.size();
  w.log_partial += chunk;
  for (size_t at; (at = w.log_partial.find('\n')) != std::string::npos;) {
    std::istringstream line(w.log_partial.substr(0, at));
    w.log_partial.erase(0, at + 1);
    std::string what, pid, seq, ms, key;
    line >> what >> pid >> seq >> ms >> key;
    if (what == "start") w.running[seq] = {key, std::strtoull(ms.c_str(), nullptr, 10)};
    if (what == "end") w.running.erase(seq);
  }
}

// --- executions and the analysis ----------------------------------------------

struct Execution {
  pid_t pid = 0;
  std::string seq;
  uint64_t start_ms = 0;
  std::optional<uint64_t> end_ms;
  std::string key;
  std::string behaviour;
  bool degraded = false;                     // ran local-only: stored and published nothing
  std::string outcome;                       // ok | fail | empty: no end line
  std::optional<uint64_t> worker_closed_ms;  // its worker closed its group (released leases)
};

std::vector<Execution> ReadExecutions(const std::string& path) {
  std::map<std::string, Execution> by_seq;
  std::ifstream in(path);
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream line(text);
    std::string what, detail, mark;
    Execution e;
    uint64_t ms = 0;
    line >> what >> e.pid >> e.seq >> ms >> e.key >> detail >> mark;
    if (what == "start") {
      e.start_ms = ms;
      e.behaviour = detail;
      e.degraded = mark == "degraded";
      by_seq[e.seq] = e;
    } else if (what == "end" && by_seq.count(e.seq)) {
      by_seq[e.seq].end_ms = ms;
      by_seq[e.seq].outcome = detail;
    } else if (what == "close") {
      for (auto& [seq, run] : by_seq) {
        if (!run.end_ms) run.worker_closed_ms = ms;
      }
    }
  }
  std::vector<Execution> out;
  for (auto& entry : by_seq) out.push_back(entry.second);
  return out;
}

struct Analysis {
  size_t executions = 0;
  size_t keys = 0;
  std::map<std::string, size_t> by_behaviour;
  size_t degraded = 0;
  std::map<std::string, size_t> explained;  // extra executions, by the fault that explains them
  std::vector<std::string> unexplained;
};

class Analyzer {
 public:
  Analyzer(const Config& config, const std::vector<Event>& events, const EventLog& log)
      : config_(config), events_(events), log_(log) {}

  Analysis Run(std::vector<Execution> all) {
    Analysis a;
    std::map<std::string, std::vector<Execution>> by_key;
    for (auto& e : all) {
      ++a.by_behaviour[e.behaviour];
      a.degraded += e.degraded;
      by_key[e.key].push_back(std::move(e));
    }
    a.executions = all.size();
    a.keys = by_key.size();
    for (auto& [key, runs] : by_key) CheckKey(runs, &a);
    return a;
  }

 private:
  // The time until which a second execution of the same key should not
  // start, if nothing went wrong: an ok result is cached for result_ttl; a
  // failure is not cached; a producer that never calls done holds the key
  // until producer_timeout; a killed leader's lock lapses after lock_ttl. A
  // degraded execution holds no lock and stores nothing: it covers nothing.
  uint64_t CoverEnd(const Execution& e) const {
    if (e.degraded) return 0;
    if (e.end_ms) return *e.end_ms + (e.outcome == "ok" ? config_.result_ttl_ms : 0);
    auto killed = KilledAt(e.pid);
    bool killed_first = killed && (e.behaviour != "hang" || *killed < HangTimeout(e));
    if (killed_first) return *killed + config_.lock_ttl_ms + 1000;
    return HangTimeout(e);
  }

  // When the library gives up on a producer that never calls done. Its
  // timer was armed just before the producer logged its start; allow that.
  uint64_t HangTimeout(const Execution& e) const {
    return e.start_ms + config_.producer_timeout_ms - std::min<uint64_t>(50, e.start_ms);
  }

  std::optional<uint64_t> KilledAt(pid_t pid) const {
    for (const Event& ev : events_) {
      if (ev.kind == "kill_leader" && ev.pid == pid) return ev.at_ms;
    }
    return std::nullopt;
  }

  // A connectivity fault at ev lets `second` run while `first` covers the
  // key when: `second` ran degraded (its first check failed) while the
  // connection was down or coming back; or a restart wiped `first`'s lock or
  // result; or killing the command connections lost `first`'s completion
  // script (sent while reconnecting, or its reply cut off), so its result
  // was never stored and its lock lapsed instead of being released.
  bool Connectivity(const Event& ev, const Execution& first, const Execution& second) const {
    uint64_t up = std::max(ev.at_ms, ev.until_ms);
    if (ev.at_ms > second.start_ms) return false;
    if (second.degraded && second.start_ms <= up + config_.fault_reach_ms) return true;
    if (ev.kind == "restart_redis") return first.start_ms <= up && CoverEnd(first) >= ev.at_ms;
    uint64_t completed = first.end_ms ? *first.end_ms : HangTimeout(first);
    return first.start_ms <= ev.at_ms && completed + kCommandTimeoutMs >= ev.at_ms &&
           completed <= ev.at_ms + config_.fault_reach_ms;
  }

  // Which fault, if any, lets `second` start while `first` still covers the
  // key.
  std::string Explain(const Execution& first, const Execution& second) const {
    // A worker that closes its group at the end of the run releases the lease
    // of a production still running, so another worker may take the key over.
    if (first.worker_closed_ms && *first.worker_closed_ms <= second.start_ms) return "shutdown";
    for (const Event& ev : events_) {
      if (ev.kind == "kill_leader" && ev.pid == first.pid && ev.at_ms >= first.start_ms &&
          ev.at_ms <= second.start_ms) {
        return "kill_leader";
      }
    }
    for (const Event& ev : events_) {
      bool connectivity = ev.kind == "kill_normal" || ev.kind == "restart_redis";
      if (connectivity && Connectivity(ev, first, second)) {
        return ev.kind + (second.degraded ? "(degraded run)" : "");
      }
    }
    return "";
  }

  void CheckKey(std::vector<Execution>& runs, Analysis* a) const {
    std::sort(runs.begin(), runs.end(),
              [](const Execution& x, const Execution& y) { return x.start_ms < y.start_ms; });
    for (size_t j = 1; j < runs.size(); ++j) {
      const Execution* covering = nullptr;
      std::string why;
      for (size_t i = 0; i < j; ++i) {
        // Times are whole milliseconds of two clocks (ours, and Redis's for
        // the TTLs): a start within kClockToleranceMs of the end is legal.
        if (runs[j].start_ms + kClockToleranceMs >= CoverEnd(runs[i])) continue;
        covering = &runs[i];
        why = Explain(runs[i], runs[j]);
        if (!why.empty()) break;
      }
      if (!covering) continue;
      if (!why.empty()) {
        ++a->explained[why];
        continue;
      }
      a->unexplained.push_back(Describe(runs[j]) + " while " + Describe(*covering) +
                               " covered the key");
    }
  }

  std::string Describe(const Execution& e) const {
    return e.key + " pid " + std::to_string(e.pid) + " #" + e.seq + " (" + e.behaviour + ") " +
           log_.Stamp(e.start_ms) + ".." +
           (e.end_ms ? log_.Stamp(*e.end_ms) + " " + e.outcome : std::string("no end"));
  }

  const Config& config_;
  const std::vector<Event>& events_;
  const EventLog& log_;
};

// --- the driver -----------------------------------------------------------------

class Driver {
 public:
  explicit Driver(Config config) : config_(std::move(config)), random_(config_.seed) {}

  int Run() {
    if (!Prepare()) return 2;
    for (int i = 0; i < config_.procs; ++i) {
      if (!Spawn(i == 0)) return 2;
    }
    log_->Note("started " + std::to_string(config_.procs) + " workers x " +
               std::to_string(config_.callers) + " callers, redis pid " +
               std::to_string(redis_.pid()) + " port " + std::to_string(redis_.port()) + ", seed " +
               std::to_string(config_.seed));
    if (!Chaos()) return 2;
    Stop();
    return Report();
  }

 private:
  uint64_t Pick(uint64_t low, uint64_t high) {
    return std::uniform_int_distribution<uint64_t>(low, high)(random_);
  }

  bool Prepare() {
    if (config_.dir.empty()) {
      std::string pattern = (std::filesystem::temp_directory_path() / "sf-soak-XXXXXX").string();
      if (mkdtemp(pattern.data()) == nullptr) return false;
      config_.dir = pattern;
    } else {
      std::filesystem::create_directories(config_.dir);
    }
    epoch_ms_ = MonoMs();
    end_ms_ = epoch_ms_ + uint64_t{config_.seconds} * 1000;
    log_ = std::make_unique<EventLog>(epoch_ms_, config_.dir + "/events.log");
    if (!redis_.Start()) {
      std::fprintf(stderr, "sf_soak: could not start redis-server\n");
      return false;
    }
    return true;
  }

  std::vector<std::string> WorkerArgs(const std::string& exec_log) const {
    auto n = [](uint64_t v) { return std::to_string(v); };
    return {"--redis",
            redis_.host() + ":" + n(redis_.port()),
            "--callers",
            n(config_.callers),
            "--keys",
            n(config_.keys),
            "--epoch-ms",
            n(epoch_ms_),
            "--roll-ms",
            n(config_.roll_ms),
            "--lock-ttl-ms",
            n(config_.lock_ttl_ms),
            "--result-ttl-ms",
            n(config_.result_ttl_ms),
            "--producer-timeout-ms",
            n(config_.producer_timeout_ms),
            "--min-wait-ms",
            n(config_.min_wait_ms),
            "--max-wait-ms",
            n(config_.max_wait_ms),
            "--slack-ms",
            n(config_.slack_ms),
            "--hang-grace-ms",
            n(config_.hang_grace_ms),
            "--max-value-bytes",
            n(config_.max_value_bytes),
            "--seed",
            n(config_.seed + workers_.size()),
            "--exec-log",
            exec_log};
  }

  bool Spawn(bool witness) {
    auto w = std::make_unique<WorkerProc>();
    w->name = "w" + std::to_string(workers_.size());
    w->witness = witness;
    w->exec_log = config_.dir + "/exec-" + w->name + ".log";
    w->child = std::make_unique<ChildProcess>();
    std::string line;
    if (!w->child->Spawn(config_.worker, WorkerArgs(w->exec_log)) ||
        !w->child->ReadLine(&line, 10000) || line != "ready" || !w->child->WriteLine("go")) {
      std::fprintf(stderr, "sf_soak: worker %s did not start\n", w->name.c_str());
      return false;
    }
    w->pid = w->child->pid();
    w->spawned_ms = MonoMs();
    workers_.push_back(std::move(w));
    return true;
  }

  // The run: ticks until the end, firing one fault at a time.
  bool Chaos() {
    std::vector<std::string> first = {"kill_leader", "kill_pubsub", "kill_normal", "restart_redis",
                                      "garbage"};
    std::shuffle(first.begin(), first.end(), random_);
    plan_.assign(first.rbegin(), first.rend());  // popped from the back
    uint64_t next_event = MonoMs() + Pick(config_.event_min_ms, config_.event_max_ms);
    uint64_t next_progress = MonoMs() + kProgressMs;
    while (MonoMs() < end_ms_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      uint64_t now = MonoMs();
      if (now >= next_progress) {
        Progress(now);
        next_progress = now + kProgressMs;
      }
      for (auto& w : workers_) Watch(*w, now);
      if (!RespawnDue(now)) return false;
      if (now < next_event) continue;
      if (!Fire(NextKind())) continue;  // not possible now: try again next tick
      next_event = MonoMs() + Pick(config_.event_min_ms, config_.event_max_ms);
    }
    return true;
  }

  // A line every few seconds, so a run is never silent for long.
  static constexpr uint64_t kProgressMs = 5000;
  void Progress(uint64_t now) const {
    int alive = 0;
    for (const auto& w : workers_) alive += w->alive ? 1 : 0;
    std::printf("soak: %llu/%u s, %zu events so far, %d workers alive\n",
                static_cast<unsigned long long>((now - epoch_ms_) / 1000), config_.seconds,
                log_->events().size(), alive);
  }

  std::string NextKind() {
    if (!plan_.empty()) return plan_.back();
    // After one of each: kills and garbage more often than restarts.
    static const char* const kWeighted[] = {
        "kill_leader", "kill_leader",   "kill_leader", "kill_pubsub", "kill_pubsub", "kill_normal",
        "kill_normal", "restart_redis", "garbage",     "garbage",     "garbage"};
    plan_.push_back(kWeighted[Pick(0, std::size(kWeighted) - 1)]);
    return plan_.back();
  }

  // Crash detection, the execution-log tail and the RSS sample after warm-up.
  void Watch(WorkerProc& w, uint64_t now) {
    if (!w.alive) return;
    siginfo_t info{};
    if (waitid(P_PID, w.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == w.pid) {
      w.alive = false;
      w.exit_status = w.child->Wait();
      log_->Add(
          Event{now, "worker_exited", w.pid, "UNEXPECTED status " + std::to_string(w.exit_status)});
      return;
    }
    TailExecLog(w);
    uint64_t warmup = std::min<uint64_t>(10000, uint64_t{config_.seconds} * 250);
    if (w.rss_before_kb == 0 && now >= w.spawned_ms + warmup) w.rss_before_kb = RssKb(w.pid);
  }

  bool RespawnDue(uint64_t now) {
    while (!respawns_.empty() && respawns_.front() <= now) {
      respawns_.erase(respawns_.begin());
      if (!Spawn(false)) return false;
      log_->Add(Event{MonoMs(), "respawn", workers_.back()->pid, workers_.back()->name});
    }
    return true;
  }

  bool Fire(const std::string& kind) {
    bool fired = kind == "kill_leader"     ? KillLeader()
                 : kind == "restart_redis" ? RestartRedis()
                 : kind == "garbage"       ? Garbage()
                                     : ClientKill(kind == "kill_pubsub" ? "pubsub" : "normal");
    if (fired) plan_.pop_back();
    return fired;
  }

  bool KillLeader() {
    std::vector<WorkerProc*> leaders;
    for (auto& w : workers_) {
      ForgetAbandoned(*w);
      if (w->alive && !w->witness && !w->running.empty()) leaders.push_back(w.get());
    }
    if (leaders.empty()) return false;
    WorkerProc* w = leaders[Pick(0, leaders.size() - 1)];
    std::string keys;
    for (auto& [seq, run] : w->running) keys += " " + run.first;
    w->child->Kill(SIGKILL);
    uint64_t at = MonoMs();
    w->exit_status = w->child->Wait();
    w->alive = false;
    w->killed = true;
    log_->Add(Event{at, "kill_leader", w->pid, w->name + " running" + keys});
    respawns_.push_back(MonoMs() + 300);
    return true;
  }

  // A producer that never called done stopped leading when the library's
  // producer timeout fired: killing its process then kills no leader.
  void ForgetAbandoned(WorkerProc& w) {
    uint64_t now = MonoMs();
    for (auto it = w.running.begin(); it != w.running.end();) {
      bool abandoned = it->second.second + config_.producer_timeout_ms <= now;
      it = abandoned ? w.running.erase(it) : std::next(it);
    }
  }

  bool ClientKill(const std::string& type) {
    internal::Reply r = redis_.Command({"CLIENT", "KILL", "TYPE", type});
    log_->Add(Event{MonoMs(), "kill_" + type, 0,
                    r.is_error() ? "error " + r.str : std::to_string(r.integer) + " connections"});
    return true;
  }

  bool RestartRedis() {
    uint64_t at = MonoMs();
    redis_.Stop();
    uint64_t down_ms = Pick(100, 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(down_ms));
    if (!redis_.Restart()) {
      std::fprintf(stderr, "sf_soak: redis-server did not come back on port %d\n", redis_.port());
      std::exit(2);
    }
    uint64_t up = MonoMs();
    log_->Add(Event{
        at, "restart_redis", 0,
        "down " + std::to_string(up - at) + " ms, new pid " + std::to_string(redis_.pid()), up});
    return true;
  }

  // Malformed, truncated, oversized, future-version messages, and a forged
  // value inside bad framing: a follower that accepted one would hand its
  // caller a value that is not "v|<key>|...", which the workers check.
  std::string GarbagePayload(std::string* kind) {
    internal::Envelope forged;
    forged.ok = true;
    forged.value = "forged";
    forged.token = std::string(16, 'f');
    std::string valid = internal::EncodeEnvelope(forged);
    switch (Pick(0, 5)) {
      case 0: {
        *kind = "random";
        std::string bytes(Pick(1, 64), '\0');
        for (char& c : bytes) c = static_cast<char>(Pick(0, 255));
        return bytes;
      }
      case 1: *kind = "truncated"; return valid.substr(0, Pick(1, valid.size() - 1));
      case 2: *kind = "trailing"; return valid + "x";
      case 3: *kind = "huge_header"; return std::string("\xdd\x10\x00\x00\x00", 5);
      case 4: {
        *kind = "future_version";
        valid[3] = 99;  // "v": 99 (the map header, then "v" as fixstr, then 1)
        return valid;
      }
      default: {
        *kind = "oversized";
        forged.value = std::string(config_.max_value_bytes + 1, 'x');
        return internal::EncodeEnvelope(forged);
      }
    }
  }

  bool Garbage() {
    internal::Reply channels = redis_.Command({"PUBSUB", "CHANNELS", "sf:{*}:ch"});
    if (channels.elements.empty()) return false;
    std::shuffle(channels.elements.begin(), channels.elements.end(), random_);
    std::string detail;
    for (size_t i = 0; i < std::min<size_t>(3, channels.elements.size()); ++i) {
      std::string kind;
      std::string payload = GarbagePayload(&kind);
      const std::string& channel = channels.elements[i].str;
      internal::Reply r = redis_.Command({"PUBLISH", channel, payload});
      detail += " " + kind + "->" + channel + "(" + std::to_string(r.integer) + ")";
    }
    log_->Add(Event{MonoMs(), "garbage", 0, "published" + detail});
    return true;
  }

  // Last RSS samples, then "stop" to every live worker and their summaries.
  void Stop() {
    log_->Note("stopping: no new calls; waiting for the calls still out");
    for (auto& w : workers_) {
      if (w->alive) w->rss_after_kb = RssKb(w->pid);
    }
    for (auto& w : workers_) {
      if (w->alive) w->child->WriteLine("stop");
    }
    uint64_t budget = config_.max_wait_ms + 2 * config_.slack_ms + config_.hang_grace_ms + 15000;
    for (auto& w : workers_) {
      if (!w->alive) continue;
      std::vector<std::string> lines;
      if (!w->child->ReadAll(&lines, budget)) w->notes.push_back("did not exit after stop");
      for (auto& line : lines) {
        if (line.rfind("summary ", 0) == 0) w->summary = line;
        if (line.rfind("bad ", 0) == 0 || line.rfind("hung ", 0) == 0) w->notes.push_back(line);
      }
      w->child->Kill(SIGKILL);  // only if still there after its budget
      w->exit_status = w->child->Wait();
    }
  }

  static uint64_t Field(const std::string& summary, const std::string& name) {
    size_t at = summary.find(" " + name + "=");
    return at == std::string::npos
               ? 0
               : std::strtoull(summary.c_str() + at + name.size() + 2, nullptr, 10);
  }

  int Report();

  Config config_;
  std::mt19937_64 random_;
  RedisServer redis_;
  std::unique_ptr<EventLog> log_;
  std::vector<std::unique_ptr<WorkerProc>> workers_;
  std::vector<std::string> plan_;
  std::vector<uint64_t> respawns_;
  uint64_t epoch_ms_ = 0;
  uint64_t end_ms_ = 0;
};

// One line per invariant, PASS or FAIL, then the verdict.
// Timing lines are measurements, not checks, unless --strict-timing: they
// print [ OK ] or [SLOW] and leave the verdict alone.
class Verdict {
 public:
  explicit Verdict(bool strict_timing) : strict_timing_(strict_timing) {}
  void Check(bool ok, const std::string& what) {
    std::printf("  [%s] %s\n", ok ? "PASS" : "FAIL", what.c_str());
    failed_ = failed_ || !ok;
  }
  void Timing(bool ok, const std::string& what) {
    if (strict_timing_) return Check(ok, what);
    std::printf("  [%s] %s (measured, not checked: --strict-timing checks it)\n",
                ok ? " OK " : "SLOW", what.c_str());
  }
  bool failed() const { return failed_; }

 private:
  bool strict_timing_;
  bool failed_ = false;
};

int Driver::Report() {
  std::printf(
      "\n== soak summary (%u s, %d workers x %d callers, %d keys per generation, seed %u)\n",
      config_.seconds, config_.procs, config_.callers, config_.keys, config_.seed);
  std::map<std::string, int> faults;
  for (const Event& ev : log_->events()) ++faults[ev.kind];
  std::printf("faults:");
  for (auto& [kind, count] : faults) std::printf(" %s=%d", kind.c_str(), count);
  std::printf("\n");

  std::vector<Execution> executions;
  uint64_t calls = 0, late = 0, hung = 0, unexpected = 0, max_over = 0, crashed = 0, missing = 0;
  std::map<std::string, uint64_t> totals;
  std::vector<std::string> rss_problems;
  std::printf("workers:\n");
  for (auto& w : workers_) {
    auto runs = ReadExecutions(w->exec_log);
    executions.insert(executions.end(), runs.begin(), runs.end());
    bool clean_exit = WIFEXITED(w->exit_status) && WEXITSTATUS(w->exit_status) == 0;
    bool killed_ok =
        w->killed && WIFSIGNALED(w->exit_status) && WTERMSIG(w->exit_status) == SIGKILL;
    if (!clean_exit && !killed_ok) ++crashed;
    std::printf("  %-4s pid %-7d %s", w->name.c_str(), w->pid,
                w->killed    ? "killed on purpose"
                : clean_exit ? "exited 0"
                             : "CRASHED/UNCLEAN");
    if (!w->killed && w->rss_before_kb == 0) {
      std::printf(" rss n/a -> %llu KiB (spawned too late for a warm-up sample)",
                  static_cast<unsigned long long>(w->rss_after_kb));
    } else if (!w->killed) {
      std::printf(" rss %llu -> %llu KiB", static_cast<unsigned long long>(w->rss_before_kb),
                  static_cast<unsigned long long>(w->rss_after_kb));
      if (w->rss_before_kb > 0) {
        uint64_t allowed = w->rss_before_kb + std::max(config_.rss_slack_kb, w->rss_before_kb / 2);
        if (w->rss_after_kb > allowed) rss_problems.push_back(w->name);
      }
      if (w->summary.empty()) ++missing;
    }
    std::printf("\n");
    if (!w->summary.empty()) std::printf("       %s\n", w->summary.c_str() + 8);
    for (auto& note : w->notes) std::printf("       %s\n", note.c_str());
    calls += Field(w->summary, "calls");
    late += Field(w->summary, "late");
    hung += Field(w->summary, "hung");
    unexpected += Field(w->summary, "unexpected");
    max_over = std::max(max_over, Field(w->summary, "max_over_ms"));
    for (const char* name :
         {"ok", "producer_error", "timeout", "unavailable", "rejected", "takeovers", "malformed",
          "reconnects", "producer_timeouts", "degraded"}) {
      totals[name] += Field(w->summary, name);
    }
  }
  std::printf("calls: %llu answered by survivors:", static_cast<unsigned long long>(calls));
  for (auto& [name, count] : totals)
    std::printf(" %s=%llu", name.c_str(), static_cast<unsigned long long>(count));
  std::printf("\n");

  Analysis a = Analyzer(config_, log_->events(), *log_).Run(executions);
  std::printf("executions: %zu on %zu keys (", a.executions, a.keys);
  for (auto& [b, n] : a.by_behaviour) std::printf(" %s=%zu", b.c_str(), n);
  std::printf(" ), %zu of them degraded (local-only); extra executions explained by a fault:",
              a.degraded);
  size_t extra = 0;
  for (auto& [why, n] : a.explained) {
    std::printf(" %s=%zu", why.c_str(), n);
    extra += n;
  }
  std::printf("%s\n", extra == 0 ? " none" : "");
  for (auto& line : a.unexplained) std::printf("  UNEXPLAINED: %s\n", line.c_str());

  std::printf("invariants:\n");
  Verdict v(config_.strict_timing);
  v.Check(faults["kill_leader"] > 0 && faults["kill_pubsub"] > 0 && faults["kill_normal"] > 0 &&
              faults["restart_redis"] > 0 && faults["garbage"] > 0,
          "every kind of fault was injected at least once");
  v.Check(hung == 0, "no call left unanswered (hung=" + std::to_string(hung) + ")");
  v.Timing(late == 0, "no callback later than its deadline + " + std::to_string(config_.slack_ms) +
                          " ms (late=" + std::to_string(late) + ", worst overshoot " +
                          std::to_string(max_over) + " ms)");
  v.Check(unexpected == 0,
          "every caller got a value for its own key or a clear status "
          "(unexpected=" +
              std::to_string(unexpected) + ")");
  v.Check(a.unexplained.empty(),
          "at most one execution per key per lease window, extras explained by a fault "
          "(unexplained=" +
              std::to_string(a.unexplained.size()) + ")");
  v.Check(crashed == 0 && missing == 0,
          "no process crashed except those killed on purpose (crashed=" + std::to_string(crashed) +
              ", missing summaries=" + std::to_string(missing) + ")");
  v.Timing(rss_problems.empty(), "RSS of surviving workers stable (growth <= max(" +
                                     std::to_string(config_.rss_slack_kb / 1024) +
                                     " MiB, 50%) after warm-up)");
  v.Check(calls > 0 && totals["ok"] > 0, "the fleet did useful work (ok results > 0)");
  std::printf("logs: %s (events.log, exec-w*.log)\n", config_.dir.c_str());
  std::printf("verdict: %s\n", v.failed() ? "FAIL" : "PASS");
  if (!v.failed() && !config_.keep) std::filesystem::remove_all(config_.dir);
  return v.failed() ? 1 : 0;
}

}  // namespace
}  // namespace singleflight::soak

int main(int argc, char** argv) {
  using namespace singleflight::soak;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);  // a killed worker's stdin pipe must not kill us
  Config config;
  config.seed = static_cast<unsigned>(MonoMs());
  if (!ParseArgs(argc, argv, &config)) {
    std::fprintf(stderr,
                 "usage: sf_soak [--seconds N] [--procs P] [--callers C] [--keys K] "
                 "[--seed S] [--dir DIR] [--keep] [--strict-timing] [--worker PATH] ...\n");
    return 2;
  }
  if (!singleflight::test::RedisServerAvailable()) {
    std::printf("sf_soak: SKIPPED: no redis-server (apt-get install redis-server)\n");
    return 77;
  }
  return Driver(config).Run();
}
