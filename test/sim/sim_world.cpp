// The simulated world: clock and event queue, SimScheduler, SimLink, the
// workload and the faults, and the invariants. test/sim/README.md describes
// the model; comments here say how each piece implements it.
#include "sim/sim_world.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "envelope.h"
#include "group_impl.h"
#include "key_naming.h"
#include "lua_scripts.h"
#include "redis_errors.h"
#include "redis_link.h"
#include "scheduler.h"
#include "sim/sim_redis.h"
#include "token.h"

namespace singleflight::sim {
namespace {

using internal::ChannelListener;
using internal::GroupImpl;
using internal::RedisLink;
using internal::ScriptId;

// Trace lines cost nothing unless tracing: the arguments are not evaluated.
#define SIM_LOG(node, ...)                      \
  do {                                          \
    if (tracing_) LogLine((node), __VA_ARGS__); \
  } while (0)

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

// One seeded generator for the whole world. mt19937_64's output is fixed by
// the standard; the std distributions are not, so the few we need are here.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Next() { return gen_(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  uint64_t Range(uint64_t lo, uint64_t hi) { return lo + Below(hi - lo + 1); }  // inclusive
  bool PerMille(uint64_t p) { return Below(1000) < p; }

 private:
  std::mt19937_64 gen_;
};

// Calls GroupImpl::OnSubscriberState(bool) when the library has it.
template <typename G, typename = void>
struct HasSubscriberState : std::false_type {};
template <typename G>
struct HasSubscriberState<G, std::void_t<decltype(std::declval<G&>().OnSubscriberState(true))>>
    : std::true_type {};
template <typename G>
void ReportSubscriberState(G* group, bool up) {
  if constexpr (HasSubscriberState<G>::value) {
    group->OnSubscriberState(up);
  } else {
    (void)group;
    (void)up;
  }
}

struct Node;
class World;

struct Event {
  uint64_t time = 0;
  uint64_t seq = 0;
  Node* owner = nullptr;  // null: the world's (network, server, fault plan)
  std::function<void()> fn;
};
struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    return a.time != b.time ? a.time > b.time : a.seq > b.seq;
  }
};

struct Interval {
  uint64_t from = 0;
  uint64_t to = kNever;
};

// One connection of a process (command or subscriber).
struct Conn {
  bool up = false;                      // the process's view: it may send
  bool alive = false;                   // the socket: bytes sent now reach the server
  uint64_t epoch = 0;                   // changes on every connect and every loss
  uint64_t c2s_last = 0, s2c_last = 0;  // FIFO: last arrival time each way
  uint64_t client = 0;                  // the server's id of it (subscriber)
  bool ever_up = false;
};

struct PendingCommand {
  uint64_t id = 0;
  ScriptId script{};
  std::vector<std::string> keys;
  std::string token;  // a GetOrLock's: names the flight whose retry backoff it drives
  RedisLink::ReplyCallback callback;
};

struct ListenerEntry {
  ChannelListener* listener = nullptr;
  bool notified = false;  // OnSubscribed ran for the current subscription
};
struct Channel {
  std::vector<ListenerEntry> listeners;  // in Listen order (no pointer order)
  int in_flight = 0;                     // (UN)SUBSCRIBEs not yet confirmed
  bool last_sent_subscribe = false;
  bool confirmed = false;
};

class SimScheduler;

// One process incarnation: one GroupImpl, its scheduler and link state.
struct Node {
  enum class Life { kLive, kClosing, kClosed, kCrashed, kReaping };
  int id = 0;
  int slot = 0;
  Life life = Life::kLive;
  bool ever_crashed = false;
  bool paused = false;
  std::vector<Event> stash;  // events that came due while paused
  bool draining = false;     // resumed, the stash not yet run
  std::unique_ptr<SimScheduler> scheduler;
  GroupImpl* impl = nullptr;
  bool freed = false;
  bool close_called = false;
  bool close_done = false;
  uint64_t close_called_at = 0;
  // Link.
  bool link_closed = false;
  bool severed = false;  // a crashed process being reaped: nothing reaches the server
  bool settled = false;
  Conn cmd, sub;
  std::deque<PendingCommand> pending;
  std::map<std::string, Channel> channels;
  // Fault windows on this process (pauses, command link down, crash, OOM).
  std::vector<Interval> troubles;
  std::vector<Interval> pauses;
  uint64_t cmd_down_since = kNever;
  // What may keep a follower of this process from hearing of a stored result
  // (the wake-up invariant): either link down, a latency spike on either
  // connection (sent .. arrived, which FIFO order also imposes on what
  // follows it), and per key the backoff after a BUSY answer to a check.
  std::vector<Interval> wake_troubles;
  std::vector<std::pair<int, Interval>> retry_waits;
  uint64_t sub_down_since = kNever;
};

class SimScheduler final : public internal::Scheduler {
 public:
  SimScheduler(World& world, Node& node) : world_(world), node_(node) {}
  uint64_t NowMs() const override;
  void Defer(Task task) override;
  void Shutdown(Task done) override;
  // Forget the wake-ups that were dropped (a crashed process being reaped).
  void Rearm() {
    wakes_.clear();
    EnsureWake();
  }

 protected:
  void OnTimersChanged() override { EnsureWake(); }

 private:
  void EnsureWake();
  World& world_;
  Node& node_;
  bool shut_down_ = false;
  std::vector<uint64_t> wakes_;  // due times with a wake-up queued
};

class SimLink final : public RedisLink {
 public:
  SimLink(World& world, Node& node) : world_(world), node_(node) {}
  bool settled() const override { return node_.settled; }
  bool up() const override { return node_.cmd.up && !node_.severed; }
  Status last_error() const override {
    return Status(Code::kUnavailable, "sim: command connection down");
  }
  void RunScript(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 ReplyCallback callback) override;
  void Listen(const std::string& channel, ChannelListener* listener) override;
  void Unlisten(const std::string& channel, ChannelListener* listener) override;
  void Close(std::function<void()> done) override;

 private:
  World& world_;
  Node& node_;
};

// Per-seed knobs, drawn from the seed.
struct Params {
  int procs = 3;
  int keys = 2;
  uint64_t run_ms = 1500;
  uint64_t tick_max_ms = 30;
  bool calm = false;  // no faults at all
  bool hot = false;   // one hot key whose producers mostly fail
  // Fault rates per workload tick, in per mille.
  uint64_t drop_cmd = 0, drop_sub = 0, stall = 0, pause = 0, crash = 0, close = 0, restart = 0,
           outage = 0;
  // Per command, in per mille.
  uint64_t busy = 0, oom = 0, spike = 0;
  // Producers, in per mille.
  uint64_t fail = 0, never = 0, sync = 0, slow = 0;
  uint64_t cancel = 0;
  bool fail_fast = false;
};

struct CallRec {
  int id = 0;
  Node* node = nullptr;
  int key = 0;
  uint64_t issued = 0, deadline = 0;
  bool accepted = false;
  int callbacks = 0;
  uint64_t answered_at = 0;
  std::string outcome;  // the first callback's status, for details
  Call handle;
};

struct ExecRec {
  int key = 0;
  int node = 0;
  uint64_t at = 0;
  bool leased = false;
  uint64_t done_at = kNever;  // when the producer called done (or Fail)
};

// A result SET by a Complete script: the moment its followers must wake.
struct Store {
  int key = 0;
  int node = 0;  // the holder's process
  uint64_t at = 0;
};

struct Acquisition {
  int key = 0;
  int number = 0;  // 1, 2, ... per key, in acquisition order
  int node = 0;
  uint64_t at = 0;
  bool used = false;  // an execution ran under it
};

constexpr uint32_t kLockTtlMs = 300;
constexpr uint32_t kCommandTimeoutMs = 50;
constexpr uint32_t kProducerTimeoutMs = 1000;
constexpr uint64_t kDeliveryEpsilonMs = 1;
// A message's usual one-way latency is 1..kMaxLatencyMs; a longer one is a
// spike, a fault.
constexpr uint64_t kMaxLatencyMs = 6;
// lib/flight.cpp's kMessageRecheckSpacingMs (docs/protocol.md, "Timing
// parameters"): after a message it cannot trust, a follower re-checks at
// once, or when the spacing since its previous such re-check ends.
constexpr uint64_t kMessageRecheckSpacingMs = 100;
// wake-up: the longest a follower may take, without a fault, to answer its
// callers once its key's result is stored. The slowest path: the holder's
// message reaches it (kMaxLatencyMs) but names a holder it has not seen yet,
// inside the spacing of an earlier re-check, so its re-check waits out the
// spacing (kMessageRecheckSpacingMs) and then takes a round trip
// (2 * kMaxLatencyMs). A trusted message answers within kMaxLatencyMs, a
// subscription confirmed only after the publish re-checks within two round
// trips. +1 ms as for deadlines: 119 ms.
constexpr uint64_t kWakeUpMs =
    kMaxLatencyMs + kMessageRecheckSpacingMs + 2 * kMaxLatencyMs + kDeliveryEpsilonMs;
// A lock lapses only if its holder failed to renew (or to settle a possibly
// held token) through the last half of its TTL: a fault on the holder or the
// server must touch that window, else the lock was forgotten.
constexpr uint64_t kExcuseWindowMs = kLockTtlMs / 2 + kCommandTimeoutMs;
constexpr uint64_t kSettleMs = kLockTtlMs + 200;
constexpr uint64_t kMaxEvents = 3000000;
constexpr size_t kDetailsPerInvariant = 4;

class World {
 public:
  World(uint64_t seed, bool trace);
  ~World();
  SeedResult Run();

  // --- used by SimScheduler and SimLink ---
  uint64_t now() const { return now_; }
  void Push(uint64_t time, Node* owner, std::function<void()> fn) {
    heap_.push_back(Event{time, ++seq_, owner, std::move(fn)});
    std::push_heap(heap_.begin(), heap_.end(), EventLater{});
  }
  void LinkRunScript(Node& n, ScriptId script, std::vector<std::string> keys,
                     std::vector<std::string> args, RedisLink::ReplyCallback callback);
  void LinkListen(Node& n, const std::string& channel, ChannelListener* listener);
  void LinkUnlisten(Node& n, const std::string& channel, ChannelListener* listener);
  void LinkClose(Node& n, std::function<void()> done);

 private:
  // Queue.
  bool Step();
  void Drain();
  // Trace.
  bool tracing() const { return tracing_; }
  template <typename... A>
  void LogLine(const Node* n, const A&... parts) {
    std::ostringstream out;
    out << "t=" << now_ << (n ? " p" + std::to_string(n->id) : std::string(" --")) << " ";
    (out << ... << parts);
    trace_.push_back(out.str());
  }
  std::string Tok(const std::string& token);
  std::string Describe(const Reply& r, int depth = 0);
  std::string KeyOf(const std::vector<std::string>& keys);
  int FlightOf(const std::vector<std::string>& keys) const;  // key index, or -1
  void Fail(const std::string& invariant, std::string detail);
  void Mix(uint64_t v) { fingerprint_ = (fingerprint_ ^ v) * 1099511628211ull; }

  // Network and server.
  uint64_t Latency(Node& n);
  void SendToServer(Node& n, Conn& c, uint64_t epoch, std::function<void()> at_server);
  void ServerArrive(std::function<void()> work, Node* n, Conn* c, uint64_t epoch);
  void DrainBacklog();
  void Execute(Node& n, uint64_t command_id, uint64_t epoch, ScriptId script,
               std::vector<std::string> keys, std::vector<std::string> args);
  void DeliverReply(Node& n, uint64_t command_id, uint64_t epoch, Reply reply);
  void CommandTimeout(Node& n, uint64_t command_id, uint64_t epoch);
  void CmdLost(Node& n, const char* why);        // server side: the socket is gone
  void CmdNoticeDown(Node& n, const char* why);  // process side
  void CmdConnect(Node& n);
  void SubLost(Node& n, const char* why);
  void SubNoticeDown(Node& n);
  void SubConnect(Node& n);
  void SendSubscription(Node& n, const std::string& channel, bool subscribe);
  void OnSubConfirm(Node& n, uint64_t epoch, const std::string& channel);
  void OnSubMessage(Node& n, uint64_t epoch, const std::string& channel,
                    const std::string& payload);
  void NotifySubscribed(Node& n, const std::string& channel, ChannelListener* listener);

  // Processes, workload, faults.
  Node& Spawn(int slot);
  Node* PickNode(bool live_only);
  void Tick();
  void IssueDo(Node& n, int key, uint32_t wait_ms, bool cancel, uint64_t cancel_after);
  Producer MakeProducer(Node& n, int key);
  void OnCallback(int call_id, const Result& r);
  void CloseNode(Node& n);
  void Pause(Node& n, uint64_t ms);
  void Resume(Node& n);
  void DrainStash(Node& n);
  void Crash(Node& n);
  void Heal();
  void CloseAll();
  void Reap();

  // Observation and invariants.
  void OnSet(const std::string& key, const std::string& value, bool nx);
  void OnRemove(const std::string& key, const std::string& value, SimRedis::Removal how,
                uint64_t expire_at);
  bool Excused(int node_id, Interval window) const;
  void OnCheckReply(Node& n, const PendingCommand& command, const Reply& reply);
  const char* WakeUpExcuse(const Node& n, int key, Interval window) const;
  void CheckWakeUps();
  void CheckFollowerHasCaller(Node& n, const std::string& channel);
  uint64_t AllowedAnswerTime(const CallRec& call) const;
  void CheckEnd();

  uint64_t seed_;
  bool tracing_;
  Rng rng_;
  Params p_;
  Options options_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  std::vector<Event> heap_;
  uint64_t events_ = 0;
  uint64_t fingerprint_ = 1469598103934665603ull;
  bool runaway_ = false;
  bool healed_ = false;

  SimRedis redis_;
  uint64_t stall_until_ = 0;
  uint64_t outage_until_ = 0;
  std::deque<std::function<void()>> backlog_;  // commands held by a stall, in order
  std::vector<Interval> server_troubles_;
  uint64_t next_client_ = 0;
  std::unordered_map<uint64_t, Node*> sub_clients_;
  uint64_t next_command_ = 0;

  std::vector<std::unique_ptr<Node>> nodes_;  // every incarnation, by id
  std::vector<Node*> slots_;                  // the current incarnation of each slot
  std::vector<std::string> key_names_;
  std::vector<internal::FlightKeys> flight_keys_;
  std::unordered_map<std::string, int> lock_key_, result_key_;

  // Observations.
  Node* executing_ = nullptr;      // whose script the server runs now
  std::vector<int> lock_deleted_;  // keys whose lock this script DELeted
  std::vector<CallRec> calls_;
  bool in_do_ = false;
  std::vector<ExecRec> execs_;
  std::unordered_map<std::string, int> produced_;  // value -> key
  std::unordered_map<std::string, bool> unleased_value_;
  std::vector<Acquisition> acquisitions_;
  std::unordered_map<std::string, size_t> token_acq_;  // token -> index in acquisitions_
  std::vector<std::string> latest_token_;              // per key
  std::vector<int> lapses_, released_empty_, unleased_, exec_count_, acq_count_;
  std::unordered_map<std::string, std::string> token_alias_;
  std::vector<Store> stores_;
  std::unordered_map<std::string, int> busy_streak_;  // token -> BUSY answers in a row

  std::vector<Violation> violations_;
  std::map<std::string, size_t> violation_counts_;
  std::vector<std::string> trace_;
};

// --- SimScheduler ------------------------------------------------------------------

uint64_t SimScheduler::NowMs() const {
  return world_.now();
}

void SimScheduler::Defer(Task task) {
  if (!shut_down_) world_.Push(world_.now(), &node_, std::move(task));
}

void SimScheduler::Shutdown(Task done) {
  shut_down_ = true;
  DropAllTimers();
  wakes_.clear();
  // From the loop, as a real scheduler does.
  if (done) world_.Push(world_.now(), &node_, std::move(done));
}

void SimScheduler::EnsureWake() {
  if (shut_down_) return;
  uint64_t due = NextDue();
  if (due == kNever) return;
  if (std::find(wakes_.begin(), wakes_.end(), due) != wakes_.end()) return;
  wakes_.push_back(due);
  world_.Push(std::max(due, world_.now()), &node_, [this, due] {
    // Shutdown (or a restart) may have cleared wakes_ while this was queued.
    auto found = std::find(wakes_.begin(), wakes_.end(), due);
    if (found != wakes_.end()) wakes_.erase(found);
    if (shut_down_) return;
    RunDueTimers(world_.now());
    EnsureWake();
  });
}

// --- SimLink ----------------------------------------------------------------------

void SimLink::RunScript(ScriptId script, std::vector<std::string> keys,
                        std::vector<std::string> args, ReplyCallback callback) {
  world_.LinkRunScript(node_, script, std::move(keys), std::move(args), std::move(callback));
}
void SimLink::Listen(const std::string& channel, ChannelListener* listener) {
  world_.LinkListen(node_, channel, listener);
}
void SimLink::Unlisten(const std::string& channel, ChannelListener* listener) {
  world_.LinkUnlisten(node_, channel, listener);
}
void SimLink::Close(std::function<void()> done) {
  world_.LinkClose(node_, std::move(done));
}

// --- setup ----------------------------------------------------------------------

World::World(uint64_t seed, bool trace)
    : seed_(seed), tracing_(trace), rng_(seed), redis_([this] { return now_; }) {
  // The knobs. About one seed in six is calm (latency only): the protocol
  // must be exactly right without faults too.
  p_.procs = static_cast<int>(rng_.Range(2, 5));
  p_.keys = static_cast<int>(rng_.Range(1, 4));
  p_.run_ms = rng_.Range(600, 2000);
  p_.tick_max_ms = rng_.Range(10, 50);
  p_.calm = rng_.PerMille(170);
  if (!p_.calm) {
    p_.drop_cmd = rng_.Range(0, 40);
    p_.drop_sub = rng_.Range(0, 40);
    p_.stall = rng_.Range(0, 15);
    p_.pause = rng_.Range(0, 20);
    p_.crash = rng_.Range(0, 6);
    p_.close = rng_.Range(0, 8);
    p_.restart = rng_.Range(0, 30);
    p_.outage = rng_.Range(0, 3);
    p_.busy = rng_.Range(0, 20);
    p_.oom = rng_.Range(0, 10);
    p_.spike = rng_.Range(0, 20);
  }
  p_.fail = rng_.Range(0, 150);
  p_.never = rng_.Range(0, 40);
  p_.sync = rng_.Range(0, 150);
  p_.slow = rng_.Range(0, 300);
  p_.cancel = rng_.Range(0, 120);
  p_.fail_fast = rng_.PerMille(250);
  // Half the seeds run with the default fallback_interval_ms, 0: followers
  // wake by message, re-subscription and lock lapse alone. The other half cap
  // the wait between re-checks at 100 ms. That cap wakes a follower that
  // missed its wake-up within about the wake-up invariant's bound (119 ms),
  // so there a missed wake-up goes unseen, as b1be273's did.
  uint32_t fallback_interval_ms = rng_.PerMille(500) ? 0 : 100;
  // About one seed in ten is a hot key (faults_test's
  // HotFailingKeyAcrossProcesses): one key, a call every 1-3 ms from 4 or 5
  // processes, producers that nearly all fail at once, no faults, the default
  // fallback_interval_ms (0). Its flights end every few milliseconds, so a
  // follower keeps meeting holders it has not seen yet, and the first success
  // may be one of them: the race of b1be273, which about 3 hot seeds in 100
  // hit on the code before that fix. The first success comes within a few
  // hundred milliseconds, and the key only hits after it: the run is short.
  p_.hot = rng_.PerMille(100);
  if (p_.hot) {
    p_ = Params{};
    p_.hot = true;
    p_.calm = true;
    p_.procs = static_cast<int>(rng_.Range(4, 5));
    p_.keys = 1;
    p_.run_ms = rng_.Range(200, 400);
    p_.tick_max_ms = rng_.Range(1, 3);
    p_.fail = rng_.Range(800, 950);
    p_.sync = rng_.Range(900, 1000);
    p_.cancel = rng_.Range(0, 120);
    p_.fail_fast = rng_.PerMille(250);
    fallback_interval_ms = 0;
  }

  options_.redis.host = "sim";
  options_.redis.command_timeout_ms = kCommandTimeoutMs;
  options_.redis.reconnect_min_ms = 10;
  options_.redis.reconnect_max_ms = 100;
  options_.when_redis_down = p_.fail_fast ? DegradedMode::kFailFast : DegradedMode::kLocalOnly;
  options_.lock_ttl_ms = kLockTtlMs;
  // Longer than any run: a stored result never expires, so every extra
  // execution must be explained by a lock that went away.
  options_.result_ttl_ms = 100000000;
  options_.l1_ttl_ms = static_cast<uint32_t>(rng_.Range(10, 200));
  if (rng_.PerMille(200)) options_.l1_max_entries = 0;
  options_.fallback_interval_ms = fallback_interval_ms;
  options_.producer_timeout_ms = kProducerTimeoutMs;
  options_.default_wait_timeout_ms = 1000;

  for (int k = 0; k < p_.keys; ++k) {
    key_names_.push_back("k" + std::to_string(k));
    flight_keys_.push_back(internal::NameFlight(options_.key_prefix, key_names_.back()));
    lock_key_[flight_keys_.back().lock] = k;
    result_key_[flight_keys_.back().result] = k;
  }
  latest_token_.assign(p_.keys, std::string());
  lapses_.assign(p_.keys, 0);
  released_empty_.assign(p_.keys, 0);
  unleased_.assign(p_.keys, 0);
  exec_count_.assign(p_.keys, 0);
  acq_count_.assign(p_.keys, 0);

  redis_.hooks().on_set = [this](const std::string& k, const std::string& v, bool nx) {
    OnSet(k, v, nx);
  };
  redis_.hooks().on_remove = [this](const std::string& k, const std::string& v,
                                    SimRedis::Removal how,
                                    uint64_t at) { OnRemove(k, v, how, at); };
  redis_.hooks().on_publish = [this](uint64_t client, const std::string& channel,
                                     const std::string& payload) {
    auto found = sub_clients_.find(client);
    if (found == sub_clients_.end()) return;
    Node& n = *found->second;
    uint64_t epoch = n.sub.epoch;
    uint64_t at = std::max(now_ + Latency(n), n.sub.s2c_last);
    n.sub.s2c_last = at;
    Push(at, &n, [this, &n, epoch, channel, payload] { OnSubMessage(n, epoch, channel, payload); });
  };
}

World::~World() = default;

Node& World::Spawn(int slot) {
  auto node = std::make_unique<Node>();
  Node& n = *node;
  n.id = static_cast<int>(nodes_.size());
  n.slot = slot;
  nodes_.push_back(std::move(node));
  n.scheduler = std::make_unique<SimScheduler>(*this, n);
  n.impl = new GroupImpl(options_, n.scheduler.get(), std::make_unique<SimLink>(*this, n));
  n.impl->set_on_free([&n](const Stats&) { n.freed = true; });
  SIM_LOG(&n, "spawn in slot ", slot);
  // Both connections start connecting at once, as the real link does.
  Push(now_ + rng_.Range(1, 10), &n, [this, &n] { CmdConnect(n); });
  Push(now_ + rng_.Range(1, 10), &n, [this, &n] { SubConnect(n); });
  return n;
}

// --- the queue ------------------------------------------------------------------------

bool World::Step() {
  if (heap_.empty()) return false;
  std::pop_heap(heap_.begin(), heap_.end(), EventLater{});
  Event ev = std::move(heap_.back());
  heap_.pop_back();
  now_ = ev.time;
  if (Node* n = ev.owner) {
    if (n->freed || n->life == Node::Life::kCrashed) return true;
    // While paused, and until what the pause held has run, a process's
    // events wait in order behind the held ones (seed 15844: a reply that
    // came due during the resume overtook two held earlier replies).
    if (n->paused || n->draining) {
      n->stash.push_back(std::move(ev));
      return true;
    }
  }
  ++events_;
  Mix(ev.time);
  Mix(ev.owner ? static_cast<uint64_t>(ev.owner->id) + 1 : 0);
  ev.fn();
  return true;
}

void World::Drain() {
  while (!runaway_ && Step()) {
    if (events_ > kMaxEvents) {
      runaway_ = true;
      Fail("quiescence", "more than " + std::to_string(kMaxEvents) +
                             " events: the world never goes quiet (a timer loop?)");
    }
  }
}

// --- trace helpers ------------------------------------------------------------------

std::string World::Tok(const std::string& token) {
  if (token.empty()) return "T?";
  auto found = token_alias_.find(token);
  if (found != token_alias_.end()) return found->second;
  std::string alias = "T" + std::to_string(token_alias_.size() + 1);
  token_alias_.emplace(token, alias);
  return alias;
}

std::string World::Describe(const Reply& r, int depth) {
  switch (r.type) {
    case Reply::Type::kNil: return "nil";
    case Reply::Type::kInteger: return std::to_string(r.integer);
    case Reply::Type::kStatus: return "+" + r.str;
    case Reply::Type::kError: return "-" + r.str.substr(0, 40);
    case Reply::Type::kString: {
      internal::Envelope e;
      if (internal::DecodeEnvelope(r.str, internal::DecodeLimits::ForMaxValue(1 << 20), &e).ok()) {
        return std::string("<env ") + (e.ok ? e.value : "err:" + e.error_code) + " by " +
               Tok(e.token) + ">";
      }
      if (r.str.size() == internal::kTokenBytes) return Tok(r.str);
      return "\"" + r.str.substr(0, 24) + "\"";
    }
    case Reply::Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < r.elements.size(); ++i) {
        if (i) out += ",";
        out += depth > 3 ? "..." : Describe(r.elements[i], depth + 1);
      }
      return out + "]";
    }
  }
  return "?";
}

int World::FlightOf(const std::vector<std::string>& keys) const {
  for (const auto& k : keys) {
    auto l = lock_key_.find(k);
    if (l != lock_key_.end()) return l->second;
    auto r = result_key_.find(k);
    if (r != result_key_.end()) return r->second;
  }
  return -1;
}

std::string World::KeyOf(const std::vector<std::string>& keys) {
  int k = FlightOf(keys);
  if (k >= 0) return key_names_[k];
  return keys.empty() ? "-" : keys[0];
}

void World::Fail(const std::string& invariant, std::string detail) {
  size_t& count = violation_counts_[invariant];
  ++count;
  SIM_LOG(nullptr, "VIOLATION ", invariant, ": ", detail);
  if (count <= kDetailsPerInvariant) violations_.push_back({invariant, std::move(detail)});
}

// --- network and server ---------------------------------------------------------------

// A spike on one of n's connections is a fault on n for the wake-up
// invariant, from the sending to the arrival.
uint64_t World::Latency(Node& n) {
  if (!healed_ && rng_.PerMille(p_.spike)) {
    uint64_t ms = rng_.Range(30, 120);
    n.wake_troubles.push_back({now_, now_ + ms});
    return ms;
  }
  return rng_.Range(1, kMaxLatencyMs);
}

// Bytes written now on `c` reach the server in order, after a latency; if the
// socket is gone by then (the epoch changed) they never arrive.
void World::SendToServer(Node& n, Conn& c, uint64_t epoch, std::function<void()> at_server) {
  if (!c.alive) return;  // written into a dead socket
  uint64_t at = std::max(now_ + Latency(n), c.c2s_last);
  c.c2s_last = at;
  Conn* conn = &c;
  Push(at, nullptr, [this, &n, conn, epoch, at_server = std::move(at_server)]() mutable {
    if (conn->epoch != epoch) {
      SIM_LOG(&n, "server: bytes of a lost connection dropped (never executed)");
      return;
    }
    ServerArrive(std::move(at_server), &n, conn, epoch);
  });
}

// A stalled server holds what arrives and runs it, in order, when the stall
// ends. A held command whose connection is gone by then runs or not, at random
// (the server may or may not have read it before the client went away).
void World::ServerArrive(std::function<void()> work, Node* n, Conn* c, uint64_t epoch) {
  if (now_ < stall_until_) {
    backlog_.push_back([this, work = std::move(work), n, c, epoch] {
      if (c->epoch != epoch) {
        if (rng_.PerMille(500)) {
          SIM_LOG(n, "server: stalled command of a lost connection dropped");
          return;
        }
        SIM_LOG(n, "server: stalled command of a lost connection runs anyway (reply lost)");
      }
      work();
    });
    return;
  }
  DrainBacklog();
  work();
}

void World::DrainBacklog() {
  if (now_ < stall_until_) return;
  while (!backlog_.empty()) {
    auto work = std::move(backlog_.front());
    backlog_.pop_front();
    work();
  }
}

void World::LinkRunScript(Node& n, ScriptId script, std::vector<std::string> keys,
                          std::vector<std::string> args, RedisLink::ReplyCallback callback) {
  // Every callback runs from the queue, never inside RunScript.
  if (n.link_closed) {
    SIM_LOG(&n, internal::ScriptName(script), " ", KeyOf(keys), " -> kClosed (link closed)");
    Push(now_, &n, [callback = std::move(callback)] {
      callback(Status(Code::kClosed, "sim: link closed"), Reply{});
    });
    return;
  }
  if (!n.cmd.up || n.severed) {
    SIM_LOG(&n, internal::ScriptName(script), " ", KeyOf(keys), " -> kUnavailable (not sent)");
    Push(now_, &n, [callback = std::move(callback)] {
      callback(Status(Code::kUnavailable, "sim: command connection down"), Reply{});
    });
    return;
  }
  uint64_t id = ++next_command_;
  uint64_t epoch = n.cmd.epoch;
  if (tracing_) {
    std::string tok;
    for (const auto& a : args) {
      if (a.size() == internal::kTokenBytes) tok = " " + Tok(a);
    }
    SIM_LOG(&n, "send #", id, " ", internal::ScriptName(script), " ", KeyOf(keys), tok);
  }
  std::string token = script == ScriptId::kGetOrLock && !args.empty() ? args[0] : std::string();
  n.pending.push_back(PendingCommand{id, script, keys, std::move(token), std::move(callback)});
  SendToServer(n, n.cmd, epoch,
               [this, &n, id, epoch, script, keys = std::move(keys), args = std::move(args)] {
                 Execute(n, id, epoch, script, keys, args);
               });
  Push(now_ + kCommandTimeoutMs, &n, [this, &n, id, epoch] { CommandTimeout(n, id, epoch); });
}

void World::Execute(Node& n, uint64_t command_id, uint64_t epoch, ScriptId script,
                    std::vector<std::string> keys, std::vector<std::string> args) {
  Reply reply;
  if (!healed_ && rng_.PerMille(p_.busy)) {
    reply.type = Reply::Type::kError;
    reply.str =
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.";
  } else if (!healed_ && rng_.PerMille(p_.oom)) {
    reply.type = Reply::Type::kError;
    reply.str = "OOM command not allowed when used memory > 'maxmemory'.";
    // A write refused for memory may leave a lease unrenewable or
    // unreleasable: a lapse of this process's lock is excused.
    n.troubles.push_back({now_, now_ + kLockTtlMs});
  } else {
    executing_ = &n;
    lock_deleted_.clear();
    reply = redis_.Eval(internal::ScriptSource(script), keys, args);
    executing_ = nullptr;
    for (int k : lock_deleted_) {
      if (!redis_.Exists(flight_keys_[k].result)) ++released_empty_[k];
    }
  }
  Mix(static_cast<uint64_t>(script) * 31 + static_cast<uint64_t>(reply.type));
  SIM_LOG(&n, "server: #", command_id, " ", internal::ScriptName(script), " ", KeyOf(keys), " => ",
          tracing_ ? Describe(reply) : std::string());
  if (n.cmd.epoch != epoch) {
    SIM_LOG(&n, "server: reply #", command_id, " lost with its connection");
    return;
  }
  uint64_t at = std::max(now_ + Latency(n), n.cmd.s2c_last);
  n.cmd.s2c_last = at;
  Push(at, &n, [this, &n, command_id, epoch, reply = std::move(reply)]() mutable {
    DeliverReply(n, command_id, epoch, std::move(reply));
  });
}

void World::DeliverReply(Node& n, uint64_t command_id, uint64_t epoch, Reply reply) {
  if (n.cmd.epoch != epoch) return;  // its callback already had kTimeout
  if (n.link_closed) return;         // its callback already had kClosed
  if (n.pending.empty() || n.pending.front().id != command_id) {
    Fail("sim", "reply #" + std::to_string(command_id) + " out of FIFO order (sim bug)");
    return;
  }
  PendingCommand command = std::move(n.pending.front());
  n.pending.pop_front();
  SIM_LOG(&n, "reply #", command_id, " ", internal::ScriptName(command.script), " ",
          KeyOf(command.keys), " = ", tracing_ ? Describe(reply) : std::string());
  if (command.script == ScriptId::kGetOrLock) OnCheckReply(n, command, reply);
  command.callback(Status::Ok(), reply);
}

// A follower answered BUSY waits RetryDelayMs(attempt) before it checks
// again, the attempt counting the BUSY answers in a row to its flight's
// checks (Flight::retries_; one flight, one lease, one token). That wait is
// a fault on the process for the wake-up invariant, for that key only.
void World::OnCheckReply(Node& n, const PendingCommand& command, const Reply& reply) {
  internal::ReplyClass reply_class = internal::Classify(Status::Ok(), reply);
  if (reply_class == internal::ReplyClass::kOk) {
    busy_streak_.erase(command.token);
    return;
  }
  if (reply_class != internal::ReplyClass::kRetryable) return;  // fatal: the callers hear it
  int k = FlightOf(command.keys);
  int attempt = busy_streak_[command.token]++;
  if (k >= 0) n.retry_waits.push_back({k, {now_, now_ + internal::RetryDelayMs(attempt)}});
}

void World::CommandTimeout(Node& n, uint64_t command_id, uint64_t epoch) {
  if (n.cmd.epoch != epoch || !n.cmd.up) return;
  bool pending = false;
  for (const auto& c : n.pending) pending = pending || c.id == command_id;
  if (!pending) return;
  // The real connection tears itself down when one command misses its
  // deadline: every command still pending loses its reply.
  SIM_LOG(&n, "command #", command_id, " timed out: tearing the command connection down");
  CmdLost(n, "command timeout");
  CmdNoticeDown(n, "command timeout");
}

void World::CmdLost(Node& n, const char* why) {
  if (!n.cmd.alive) return;
  n.cmd.alive = false;
  ++n.cmd.epoch;
  if (n.cmd_down_since == kNever) n.cmd_down_since = now_;
  SIM_LOG(&n, "command connection lost (", why, ")");
}

void World::CmdNoticeDown(Node& n, const char* why) {
  if (!n.cmd.up) return;
  n.cmd.up = false;
  if (n.cmd_down_since == kNever) n.cmd_down_since = now_;
  ++n.cmd.epoch;  // replies still travelling are for a dead connection
  auto pending = std::move(n.pending);
  n.pending.clear();
  SIM_LOG(&n, "command link down (", why, "): ", pending.size(), " pending get kTimeout");
  // As the real connection does (RedisLink::StateCallback): the down is
  // reported first, then the callbacks of the commands it carried.
  if (!n.link_closed && n.impl) n.impl->OnLinkState(false);
  for (auto& c : pending) {
    c.callback(Status(Code::kTimeout, std::string("sim: reply lost (") + why + ")"), Reply{});
  }
  Push(now_ + rng_.Range(10, 100), &n, [this, &n] { CmdConnect(n); });
}

void World::CmdConnect(Node& n) {
  if (n.link_closed || n.cmd.up) return;
  if (now_ < outage_until_) {
    SIM_LOG(&n, "command connect failed (server unreachable)");
    n.settled = true;
    if (n.cmd_down_since == kNever) n.cmd_down_since = now_;
    if (n.impl) n.impl->OnLinkState(false);
    Push(now_ + rng_.Range(10, 100), &n, [this, &n] { CmdConnect(n); });
    return;
  }
  ++n.cmd.epoch;
  n.cmd.alive = true;
  n.cmd.up = true;
  n.settled = true;
  if (n.cmd_down_since != kNever) {
    n.troubles.push_back({n.cmd_down_since, now_});
    n.wake_troubles.push_back({n.cmd_down_since, now_});
  }
  n.cmd_down_since = kNever;
  n.cmd.ever_up = true;
  SIM_LOG(&n, "command link up");
  if (n.impl) n.impl->OnLinkState(true);
}

// --- subscriber connection --------------------------------------------------------------

void World::SubLost(Node& n, const char* why) {
  if (!n.sub.alive) return;
  n.sub.alive = false;
  ++n.sub.epoch;
  if (n.sub_down_since == kNever) n.sub_down_since = now_;
  redis_.DropClient(n.sub.client);
  sub_clients_.erase(n.sub.client);
  SIM_LOG(&n, "subscriber connection lost (", why, ")");
}

void World::SubNoticeDown(Node& n) {
  if (!n.sub.up) return;
  n.sub.up = false;
  ++n.sub.epoch;
  if (n.sub_down_since == kNever) n.sub_down_since = now_;
  for (auto it = n.channels.begin(); it != n.channels.end();) {
    Channel& ch = it->second;
    ch.in_flight = 0;
    ch.confirmed = false;
    for (auto& l : ch.listeners) l.notified = false;
    it = ch.listeners.empty() ? n.channels.erase(it) : std::next(it);
  }
  SIM_LOG(&n, "subscriber link down");
  if (!n.link_closed && n.impl) ReportSubscriberState(n.impl, false);
  Push(now_ + rng_.Range(10, 100), &n, [this, &n] { SubConnect(n); });
}

void World::SubConnect(Node& n) {
  if (n.link_closed || n.sub.up) return;
  if (now_ < outage_until_) {
    Push(now_ + rng_.Range(10, 100), &n, [this, &n] { SubConnect(n); });
    return;
  }
  ++n.sub.epoch;
  n.sub.alive = true;
  n.sub.up = true;
  if (n.sub_down_since != kNever) n.wake_troubles.push_back({n.sub_down_since, now_});
  n.sub_down_since = kNever;
  n.sub.client = ++next_client_;
  sub_clients_[n.sub.client] = &n;
  SIM_LOG(&n, "subscriber link up");
  // Every channel with listeners is subscribed again.
  std::vector<std::string> names;
  for (auto& entry : n.channels) {
    if (!entry.second.listeners.empty()) names.push_back(entry.first);
  }
  for (const auto& name : names) SendSubscription(n, name, true);
  if (!n.link_closed && n.impl) ReportSubscriberState(n.impl, true);
}

void World::SendSubscription(Node& n, const std::string& channel, bool subscribe) {
  Channel& ch = n.channels[channel];
  ++ch.in_flight;
  ch.last_sent_subscribe = subscribe;
  ch.confirmed = false;
  uint64_t epoch = n.sub.epoch;
  uint64_t client = n.sub.client;
  SendToServer(n, n.sub, epoch, [this, &n, epoch, client, channel, subscribe] {
    if (n.sub.epoch != epoch) return;  // held by a stall past the connection's end
    if (subscribe) {
      redis_.Subscribe(client, channel);
    } else {
      redis_.Unsubscribe(client, channel);
    }
    uint64_t at = std::max(now_ + Latency(n), n.sub.s2c_last);
    n.sub.s2c_last = at;
    Push(at, &n, [this, &n, epoch, channel] { OnSubConfirm(n, epoch, channel); });
  });
}

void World::OnSubConfirm(Node& n, uint64_t epoch, const std::string& channel) {
  if (n.sub.epoch != epoch) return;
  auto found = n.channels.find(channel);
  if (found == n.channels.end()) return;
  Channel& ch = found->second;
  if (--ch.in_flight > 0) return;
  if (!ch.last_sent_subscribe) {
    if (ch.listeners.empty()) n.channels.erase(found);
    return;
  }
  ch.confirmed = true;
  SIM_LOG(&n, "subscribed ", channel);
  std::vector<ChannelListener*> to_notify;
  for (auto& l : ch.listeners) {
    if (!l.notified) to_notify.push_back(l.listener);
  }
  for (ChannelListener* l : to_notify) NotifySubscribed(n, channel, l);
}

// Calls OnSubscribed if the listener is still there and not yet told.
void World::NotifySubscribed(Node& n, const std::string& channel, ChannelListener* listener) {
  auto found = n.channels.find(channel);
  if (found == n.channels.end() || !found->second.confirmed) return;
  for (auto& l : found->second.listeners) {
    if (l.listener == listener && !l.notified) {
      l.notified = true;
      listener->OnSubscribed();
      return;
    }
  }
}

void World::OnSubMessage(Node& n, uint64_t epoch, const std::string& channel,
                         const std::string& payload) {
  if (n.sub.epoch != epoch || n.link_closed) return;
  auto found = n.channels.find(channel);
  if (found == n.channels.end()) return;
  std::vector<ChannelListener*> targets;
  for (auto& l : found->second.listeners) targets.push_back(l.listener);
  SIM_LOG(&n, "message on ", channel, " ",
          tracing_ ? Describe([&] {
            Reply r;
            r.type = Reply::Type::kString;
            r.str = payload;
            return r;
          }())
                   : std::string(),
          " to ", targets.size(), " listener(s)");
  for (ChannelListener* target : targets) {
    // A listener removed by an earlier one is never called again.
    auto again = n.channels.find(channel);
    if (again == n.channels.end()) return;
    bool present = false;
    for (auto& l : again->second.listeners) present = present || l.listener == target;
    if (present) target->OnMessage(payload);
  }
}

void World::LinkListen(Node& n, const std::string& channel, ChannelListener* listener) {
  if (n.link_closed) return;
  CheckFollowerHasCaller(n, channel);
  Channel& ch = n.channels[channel];
  for (auto& l : ch.listeners) {
    if (l.listener == listener) return;
  }
  ch.listeners.push_back({listener, false});
  if (ch.listeners.size() == 1) {
    if (n.sub.up) SendSubscription(n, channel, true);
  } else if (ch.confirmed) {
    Push(now_, &n, [this, &n, channel, listener] { NotifySubscribed(n, channel, listener); });
  }
}

void World::LinkUnlisten(Node& n, const std::string& channel, ChannelListener* listener) {
  if (n.link_closed) return;
  auto found = n.channels.find(channel);
  if (found == n.channels.end()) return;
  auto& ls = found->second.listeners;
  auto it = std::find_if(ls.begin(), ls.end(),
                         [listener](const ListenerEntry& l) { return l.listener == listener; });
  if (it == ls.end()) return;
  ls.erase(it);
  if (!ls.empty()) return;
  if (n.sub.up) {
    SendSubscription(n, channel, false);
  } else {
    n.channels.erase(found);
  }
}

void World::LinkClose(Node& n, std::function<void()> done) {
  n.link_closed = true;
  SIM_LOG(&n, "link close: ", n.pending.size(), " pending get kClosed");
  auto pending = std::move(n.pending);
  n.pending.clear();
  for (auto& c : pending) {
    Push(now_, &n, [callback = std::move(c.callback)] {
      callback(Status(Code::kClosed, "sim: link closed"), Reply{});
    });
  }
  // Bytes already written still reach the server and run; their replies are
  // read by nobody.
  n.cmd.up = false;
  SubLost(n, "closed");
  n.sub.up = false;
  n.channels.clear();
  Push(now_, &n, std::move(done));
}

// --- observation -------------------------------------------------------------------------

void World::OnSet(const std::string& key, const std::string& value, bool nx) {
  auto lock = lock_key_.find(key);
  if (lock != lock_key_.end()) {
    if (!nx) return;
    int k = lock->second;
    Acquisition a{k, ++acq_count_[k], executing_ ? executing_->id : -1, now_};
    token_acq_[value] = acquisitions_.size();
    acquisitions_.push_back(a);
    latest_token_[k] = value;
    SIM_LOG(executing_, "server: lease #", a.number, " of ", key_names_[k], " acquired by ",
            Tok(value));
    return;
  }
  auto result = result_key_.find(key);
  if (result == result_key_.end()) return;
  int k = result->second;
  internal::Envelope e;
  Status decoded =
      internal::DecodeEnvelope(value, internal::DecodeLimits::ForMaxValue(1 << 20), &e);
  if (!decoded.ok()) {
    Fail("stale-write", "t=" + std::to_string(now_) + " result of " + key_names_[k] +
                            " stored as an undecodable envelope: " + decoded.message());
    return;
  }
  stores_.push_back(Store{k, executing_ ? executing_->id : -1, now_});
  auto writer = token_acq_.find(e.token);
  auto newest = token_acq_.find(latest_token_[k]);
  if (writer == token_acq_.end() || e.token != latest_token_[k]) {
    std::string who = writer == token_acq_.end()
                          ? std::string("a token that never held the lock")
                          : "lease #" + std::to_string(acquisitions_[writer->second].number) +
                                " (p" + std::to_string(acquisitions_[writer->second].node) + ")";
    std::string latest = newest == token_acq_.end()
                             ? std::string("none")
                             : "#" + std::to_string(acquisitions_[newest->second].number) + " (p" +
                                   std::to_string(acquisitions_[newest->second].node) + ")";
    Fail("stale-write", "t=" + std::to_string(now_) + " result of " + key_names_[k] +
                            " written by " + who + " while the newest lease is " + latest);
  }
}

void World::OnRemove(const std::string& key, const std::string& value, SimRedis::Removal how,
                     uint64_t expire_at) {
  auto lock = lock_key_.find(key);
  if (lock == lock_key_.end()) return;
  int k = lock->second;
  if (how == SimRedis::Removal::kDeleted) {
    lock_deleted_.push_back(k);
    return;
  }
  ++lapses_[k];
  auto acq = token_acq_.find(value);
  int owner = acq == token_acq_.end() ? -1 : acquisitions_[acq->second].node;
  int number = acq == token_acq_.end() ? 0 : acquisitions_[acq->second].number;
  SIM_LOG(nullptr, "server: lease #", number, " of ", key_names_[k], " (", Tok(value), ", p", owner,
          ") lapsed at ", expire_at);
  Interval window{expire_at > kExcuseWindowMs ? expire_at - kExcuseWindowMs : 0, expire_at};
  if (!Excused(owner, window)) {
    Fail("lock-leak", "lease #" + std::to_string(number) + " of " + key_names_[k] + " (p" +
                          std::to_string(owner) +
                          ") lapsed by TTL at t=" + std::to_string(expire_at) +
                          " with no fault on its process or the server in [" +
                          std::to_string(window.from) + ", " + std::to_string(window.to) + "]");
  }
}

bool World::Excused(int node_id, Interval window) const {
  auto overlaps = [&](const Interval& i) { return i.from <= window.to && i.to >= window.from; };
  for (const auto& i : server_troubles_) {
    if (overlaps(i)) return true;
  }
  if (node_id < 0 || node_id >= static_cast<int>(nodes_.size())) return false;
  const Node& n = *nodes_[node_id];
  if (n.cmd_down_since != kNever && n.cmd_down_since <= window.to) return true;
  for (const auto& i : n.troubles) {
    if (overlaps(i)) return true;
  }
  for (const auto& i : n.pauses) {
    if (overlaps(i)) return true;
  }
  return false;
}

// A flight subscribes to its key's channel only while a caller of this
// process waits for the key. (A call counts as waiting until its callback
// ran, which may be a moment after the library gave up on it: the check
// errs towards silence, never towards a false alarm.)
void World::CheckFollowerHasCaller(Node& n, const std::string& channel) {
  int k = -1;
  for (int i = 0; i < p_.keys; ++i) {
    if (flight_keys_[i].channel == channel) k = i;
  }
  if (k < 0) return;
  for (auto it = calls_.rbegin(); it != calls_.rend(); ++it) {
    if (it->node == &n && it->key == k && it->accepted && it->callbacks == 0) return;
  }
  Fail("idle-follow", "t=" + std::to_string(now_) + " p" + std::to_string(n.id) +
                          " subscribes to " + key_names_[k] +
                          "'s channel though none of its callers waits for " + key_names_[k]);
}

// A callback is due by the call's deadline; if the process is paused at that
// moment, by the end of that pause (its timers fire on resume).
uint64_t World::AllowedAnswerTime(const CallRec& call) const {
  uint64_t allowed = call.deadline;
  for (const auto& p : call.node->pauses) {
    if (p.from <= allowed && p.to > allowed) allowed = p.to;
  }
  return allowed + kDeliveryEpsilonMs;
}

// --- workload -----------------------------------------------------------------------------

Node* World::PickNode(bool live_only) {
  std::vector<Node*> candidates;
  for (Node* n : slots_) {
    if (n && (!live_only || n->life == Node::Life::kLive)) candidates.push_back(n);
  }
  if (candidates.empty()) return nullptr;
  return candidates[rng_.Below(candidates.size())];
}

void World::Tick() {
  if (now_ >= p_.run_ms) return;
  Push(now_ + rng_.Range(1, p_.tick_max_ms), nullptr, [this] { Tick(); });
  uint64_t roll = rng_.Below(1000);
  auto fault = [&](uint64_t rate) {
    if (roll < rate) return true;
    roll -= rate;
    return false;
  };
  if (fault(p_.drop_cmd)) {
    if (Node* n = PickNode(true)) {
      CmdLost(*n, "fault: connection dropped");
      Push(now_ + rng_.Range(0, 5), n,
           [this, n] { CmdNoticeDown(*n, "fault: connection dropped"); });
    }
    return;
  }
  if (fault(p_.drop_sub)) {
    if (Node* n = PickNode(true)) {
      SubLost(*n, "fault: subscriber dropped");
      Push(now_ + rng_.Range(0, 5), n, [this, n] { SubNoticeDown(*n); });
    }
    return;
  }
  if (fault(p_.stall)) {
    uint64_t until = now_ + rng_.Range(kCommandTimeoutMs + 10, 250);
    if (until > stall_until_) {
      SIM_LOG(nullptr, "fault: server stalls until ", until);
      server_troubles_.push_back({now_, until});
      stall_until_ = until;
      Push(until, nullptr, [this] { DrainBacklog(); });
    }
    return;
  }
  if (fault(p_.pause)) {
    Node* n = PickNode(false);
    if (n && !n->paused && n->life != Node::Life::kCrashed && !n->freed) {
      Pause(*n, rng_.PerMille(500) ? rng_.Range(20, kLockTtlMs) : rng_.Range(kLockTtlMs, 900));
    }
    return;
  }
  if (fault(p_.crash)) {
    if (Node* n = PickNode(true)) Crash(*n);
    return;
  }
  if (fault(p_.close)) {
    if (Node* n = PickNode(true)) Push(now_, n, [this, n] { CloseNode(*n); });
    return;
  }
  if (fault(p_.restart)) {
    std::vector<int> dead;
    for (size_t s = 0; s < slots_.size(); ++s) {
      Node* n = slots_[s];
      if (n->life == Node::Life::kCrashed || n->life == Node::Life::kClosed) {
        dead.push_back(static_cast<int>(s));
      }
    }
    if (!dead.empty()) {
      int slot = dead[rng_.Below(dead.size())];
      slots_[slot] = &Spawn(slot);
    }
    return;
  }
  if (fault(p_.outage)) {
    uint64_t until = now_ + rng_.Range(50, 300);
    SIM_LOG(nullptr, "fault: server unreachable until ", until);
    server_troubles_.push_back({now_, until});
    outage_until_ = std::max(outage_until_, until);
    for (Node* n : slots_) {
      if (n->life == Node::Life::kCrashed || n->freed) continue;
      CmdLost(*n, "fault: outage");
      SubLost(*n, "fault: outage");
      Push(now_ + rng_.Range(0, 5), n, [this, n] {
        CmdNoticeDown(*n, "fault: outage");
        SubNoticeDown(*n);
      });
    }
    return;
  }
  // A call.
  Node* n = PickNode(true);
  if (!n) return;
  int key = static_cast<int>(rng_.Below(p_.keys));
  uint32_t wait_ms = static_cast<uint32_t>(rng_.Range(100, 2000));
  bool cancel = rng_.PerMille(p_.cancel);
  uint64_t cancel_after = rng_.Range(0, wait_ms);
  // The process makes the call when it runs: a paused one makes it on resume.
  Push(now_, n, [this, n, key, wait_ms, cancel, cancel_after] {
    IssueDo(*n, key, wait_ms, cancel, cancel_after);
  });
}

void World::IssueDo(Node& n, int key, uint32_t wait_ms, bool cancel, uint64_t cancel_after) {
  if (n.life != Node::Life::kLive) return;
  int id = static_cast<int>(calls_.size());
  calls_.push_back(CallRec{});
  CallRec& call = calls_.back();
  call.id = id;
  call.node = &n;
  call.key = key;
  call.issued = now_;
  call.deadline = now_ + wait_ms;
  SIM_LOG(&n, "call c", id, " Do(", key_names_[key], ", wait ", wait_ms, ")");
  in_do_ = true;
  Call handle = n.impl->Do(
      key_names_[key], MakeProducer(n, key), [this, id](const Result& r) { OnCallback(id, r); },
      CallOptions{wait_ms});
  in_do_ = false;
  calls_[id].accepted = handle.ok();
  calls_[id].handle = handle;
  if (!handle.ok()) SIM_LOG(&n, "call c", id, " rejected: ", handle.status().ToString());
  if (handle.ok() && cancel) {
    Push(now_ + cancel_after, &n, [this, &n, id] {
      if (n.life != Node::Life::kLive) return;
      bool cancelled = calls_[id].handle.Cancel();
      SIM_LOG(&n, "call c", id, " Cancel() -> ", cancelled ? "true" : "false");
    });
  }
}

Producer World::MakeProducer(Node& n, int key) {
  return [this, &n, key](const ProducerContext&, Done done) {
    int exec = static_cast<int>(execs_.size());
    // Leased: the key's lock, right now, holds a token this process
    // acquired and that no earlier execution ran under (one acquisition
    // covers one execution; a flight that runs while an older flight's lock
    // is still there is not covered by it).
    const std::string* holder = redis_.Peek(flight_keys_[key].lock);
    bool leased = false;
    if (holder) {
      auto acq = token_acq_.find(*holder);
      if (acq != token_acq_.end()) {
        Acquisition& a = acquisitions_[acq->second];
        leased = a.node == n.id && !a.used;
        a.used = a.used || leased;
      }
    }
    execs_.push_back(ExecRec{key, n.id, now_, leased});
    ++exec_count_[key];
    std::string value = key_names_[key] + "#" + std::to_string(exec);
    produced_[value] = key;
    if (!leased) {
      ++unleased_[key];
      unleased_value_[value] = true;
      if (n.cmd.up) {
        Fail("degraded", "t=" + std::to_string(now_) + " p" + std::to_string(n.id) + " ran " +
                             key_names_[key] + " (exec " + std::to_string(exec) +
                             ") without holding its lock while its command link was up");
      }
    }
    uint64_t roll = rng_.Below(1000);
    uint64_t duration =
        rng_.PerMille(p_.slow) ? rng_.Range(kLockTtlMs, 700) : rng_.Range(1, kLockTtlMs / 2);
    SIM_LOG(&n, "producer ", value, leased ? " (leased)" : " (NO LEASE)");
    if (roll < p_.never) {
      SIM_LOG(&n, "producer ", value, " will never call done");
      return;
    }
    roll -= std::min(roll, p_.never);
    bool fail = roll < p_.fail;
    if (rng_.PerMille(p_.sync)) {
      SIM_LOG(&n, "producer ", value, fail ? " fails" : " returns", " synchronously");
      execs_[exec].done_at = now_;
      if (fail) {
        done.Fail("boom " + value);
      } else {
        done(value);
      }
      return;
    }
    Push(now_ + duration, &n, [this, &n, done, value, fail, exec] {
      execs_[exec].done_at = now_;
      bool taken = fail ? done.Fail("boom " + value) : done(value);
      SIM_LOG(&n, "producer ", value, fail ? " Fail()" : " done()", taken ? "" : " (ignored)");
    });
  };
}

void World::OnCallback(int call_id, const Result& r) {
  CallRec& call = calls_[call_id];
  ++call.callbacks;
  SIM_LOG(call.node, "callback c", call_id, " ", r.status.ToString().substr(0, 60),
          " source=", SourceName(r.source),
          r.ok() ? " value=" + std::string(r.value()) : std::string(),
          r.degraded ? " degraded" : "");
  bool exempt = call.node->ever_crashed;
  if (in_do_) Fail("one-callback", "c" + std::to_string(call_id) + ": callback ran inside Do");
  if (!call.accepted && !exempt && call.callbacks == 1) {
    Fail("one-callback", "c" + std::to_string(call_id) + " was rejected but got a callback");
  }
  if (call.callbacks == 2 && !exempt) {
    Fail("one-callback",
         "c" + std::to_string(call_id) + " got a second callback at t=" + std::to_string(now_));
  }
  if (call.callbacks == 1) {
    call.answered_at = now_;
    call.outcome = r.status.ToString().substr(0, 60);
    if (!exempt && now_ > AllowedAnswerTime(call)) {
      Fail("deadline",
           "c" + std::to_string(call_id) + " (" + key_names_[call.key] + ", p" +
               std::to_string(call.node->id) + ") issued t=" + std::to_string(call.issued) +
               " deadline t=" + std::to_string(call.deadline) +
               " answered t=" + std::to_string(now_) + " (" + r.status.ToString() + ")");
    }
  }
  if (r.ok()) {
    std::string value(r.value());
    auto found = produced_.find(value);
    if (found == produced_.end() || found->second != call.key) {
      Fail("values", "c" + std::to_string(call_id) + " asked for " + key_names_[call.key] +
                         " and got \"" + value + "\", which no execution of it produced");
    } else if (unleased_value_.count(value) && !r.degraded && !exempt) {
      Fail("degraded-flag", "c" + std::to_string(call_id) + " got " + value +
                                ", from a run without the lock, and Result::degraded is false");
    }
  }
}

// --- process lifecycle and faults -------------------------------------------------------------

void World::CloseNode(Node& n) {
  if (n.life != Node::Life::kLive) return;
  n.life = Node::Life::kClosing;
  n.close_called = true;
  n.close_called_at = now_;
  SIM_LOG(&n, "Close()");
  n.impl->Close([this, &n] {
    n.close_done = true;
    if (n.life == Node::Life::kClosing) n.life = Node::Life::kClosed;
    SIM_LOG(&n, "close done");
  });
}

void World::Pause(Node& n, uint64_t ms) {
  n.paused = true;
  n.pauses.push_back({now_, now_ + ms});
  SIM_LOG(&n, "fault: process paused until ", now_ + ms);
  Push(now_ + ms, nullptr, [this, &n] { Resume(n); });
}

void World::Resume(Node& n) {
  if (!n.paused) return;
  n.paused = false;
  for (auto& i : n.pauses) {
    if (i.to > now_) i.to = now_;  // an early resume (heal) shortens it
  }
  SIM_LOG(&n, "process resumes (", n.stash.size(), " events were held)");
  n.draining = true;
  Push(now_, nullptr, [this, &n] { DrainStash(n); });
}

// Runs a resumed process's held events one by one, in their order; events
// of the process that come due meanwhile queue behind them.
void World::DrainStash(Node& n) {
  if (n.freed || n.life == Node::Life::kCrashed || n.paused) {
    n.draining = false;
    return;
  }
  if (n.stash.empty()) {
    n.draining = false;
    return;
  }
  Event ev = std::move(n.stash.front());
  n.stash.erase(n.stash.begin());
  ++events_;
  Mix(ev.time);
  Mix(static_cast<uint64_t>(n.id) + 1);
  ev.fn();
  Push(now_, nullptr, [this, &n] { DrainStash(n); });
}

void World::Crash(Node& n) {
  SIM_LOG(&n, "fault: process crashes");
  n.life = Node::Life::kCrashed;
  n.ever_crashed = true;
  n.paused = false;
  n.stash.clear();
  n.troubles.push_back({now_, kNever});
  // Its sockets close: the subscriptions go; bytes already written still
  // arrive and run (their replies go nowhere).
  SubLost(n, "process crashed");
}

void World::Heal() {
  healed_ = true;
  SIM_LOG(nullptr, "heal: no more faults; paused processes resume");
  stall_until_ = std::min(stall_until_, now_);
  for (auto& i : server_troubles_) i.to = std::min(i.to, now_);
  DrainBacklog();
  outage_until_ = 0;
  for (auto& node : nodes_) Resume(*node);
  Push(now_ + kSettleMs, nullptr, [this] { CloseAll(); });
}

void World::CloseAll() {
  SIM_LOG(nullptr, "closing every live process");
  for (auto& node : nodes_) {
    Node* n = node.get();
    if (n->life == Node::Life::kLive) Push(now_, n, [this, n] { CloseNode(*n); });
  }
}

// A crashed process's GroupImpl is closed in isolation, so that its memory is
// reclaimed: nothing it does reaches the server any more.
void World::Reap() {
  for (auto& node : nodes_) {
    Node& n = *node;
    if (n.life != Node::Life::kCrashed) continue;
    n.life = Node::Life::kReaping;
    n.severed = true;
    n.cmd.up = false;
    n.cmd.alive = false;
    n.sub.up = false;
    n.sub.alive = false;
    n.scheduler->Rearm();
    n.impl->Close(nullptr);
  }
  Drain();
}

// --- the end ---------------------------------------------------------------------------

// What excuses a caller of `key` in n for not being answered within `window`
// (a result stored at window.from): null if nothing does. Only what can
// delay a follower of n counts — a fault on the holder no longer matters
// once its result is stored; error replies other than BUSY end the flight.
const char* World::WakeUpExcuse(const Node& n, int key, Interval window) const {
  auto overlaps = [&](const Interval& i) { return i.from <= window.to && i.to >= window.from; };
  if (n.ever_crashed) return "crashed";  // exempt, as for the other invariants
  if (n.close_called && n.close_called_at <= window.to) return "closed";
  // A leader's callers wait for its producer, however long that takes. A
  // lease lost meanwhile (a pause, an outage: its lapse had an excuse) lets
  // another process complete first.
  for (const auto& e : execs_) {
    if (e.node != n.id || e.key != key || e.at > window.to) continue;
    if (std::min(e.done_at, e.at + kProducerTimeoutMs) >= window.from) return "leading";
  }
  for (const auto& i : server_troubles_) {
    if (overlaps(i)) return "server stall or outage";
  }
  for (const auto& i : n.pauses) {
    if (overlaps(i)) return "paused";
  }
  if (std::min(n.cmd_down_since, n.sub_down_since) <= window.to) return "link down";
  for (const auto& i : n.wake_troubles) {
    if (overlaps(i)) return "link down or latency spike";
  }
  for (const auto& w : n.retry_waits) {
    if (w.first == key && overlaps(w.second)) return "BUSY backoff";
  }
  return nullptr;
}

// wake-up: once a key's result is stored, every caller of it in another
// process that was already waiting, and whose deadline is more than
// kWakeUpMs away, is answered within kWakeUpMs — unless a fault on its
// process or the server overlaps that window (WakeUpExcuse). The deadline
// check alone accepts a follower that sleeps through its wake-up until its
// caller times out, or until the lock's lapse re-check (b1be273).
void World::CheckWakeUps() {
  for (const Store& store : stores_) {
    Interval window{store.at, store.at + kWakeUpMs};
    for (const CallRec& call : calls_) {
      if (call.key != store.key || !call.accepted || call.node->id == store.node) continue;
      if (call.issued > store.at) continue;
      bool answered = call.callbacks > 0;
      if (answered && call.answered_at <= window.to) continue;  // before T counts too
      if (call.deadline <= window.to) continue;                 // its deadline may answer it first
      if (WakeUpExcuse(*call.node, call.key, window) != nullptr) continue;
      std::string who = "p" + std::to_string(call.node->id);
      std::string answer =
          answered ? "at t=" + std::to_string(call.answered_at) + " (" + call.outcome + ")"
                   : std::string("never");
      Fail("wake-up",
           "c" + std::to_string(call.id) + " (" + key_names_[call.key] + ", " + who +
               ", issued t=" + std::to_string(call.issued) +
               ", deadline t=" + std::to_string(call.deadline) + ") waited while p" +
               std::to_string(store.node) + " stored the result at t=" + std::to_string(store.at) +
               ", and was answered " + answer + ", not by t=" + std::to_string(window.to) +
               ", with no fault on " + who + " or the server in [" + std::to_string(window.from) +
               ", " + std::to_string(window.to) + "]");
    }
  }
}

void World::CheckEnd() {
  // Locks still in the store.
  for (const auto& entry : redis_.Snapshot()) {
    auto lock = lock_key_.find(entry.first);
    if (lock == lock_key_.end()) continue;
    int k = lock->second;
    auto acq = token_acq_.find(entry.second.first);
    int owner = acq == token_acq_.end() ? -1 : acquisitions_[acq->second].node;
    if (owner >= 0 && nodes_[owner]->ever_crashed) continue;
    Fail("lock-leak",
         "lock of " + key_names_[k] + " (lease #" +
             std::to_string(acq == token_acq_.end() ? 0 : acquisitions_[acq->second].number) +
             ", p" + std::to_string(owner) + ") is still in the store at the end (t=" +
             std::to_string(now_) + ", expires t=" + std::to_string(entry.second.second) +
             ") though every process closed");
  }
  for (const auto& call : calls_) {
    if (call.accepted && call.callbacks == 0 && !call.node->ever_crashed) {
      Fail("one-callback", "c" + std::to_string(call.id) + " (" + key_names_[call.key] + ", p" +
                               std::to_string(call.node->id) + ", issued t=" +
                               std::to_string(call.issued) + ") never got its callback");
    }
  }
  for (int k = 0; k < p_.keys; ++k) {
    int bound = 1 + lapses_[k] + released_empty_[k] + unleased_[k];
    if (exec_count_[k] > bound) {
      Fail("executions", key_names_[k] + " ran " + std::to_string(exec_count_[k]) +
                             " times; bound 1 + lapses " + std::to_string(lapses_[k]) +
                             " + releases without a result " + std::to_string(released_empty_[k]) +
                             " + unleased runs " + std::to_string(unleased_[k]) + " = " +
                             std::to_string(bound));
    }
  }
  for (auto& node : nodes_) {
    if (node->close_called && !node->ever_crashed && (!node->close_done || !node->freed)) {
      Fail("close", "p" + std::to_string(node->id) + "'s Close (t=" +
                        std::to_string(node->close_called_at) + ") never finished");
    }
  }
  CheckWakeUps();
  if (redis_.unsupported() > 0) {
    Fail("sim",
         "the scripts used something the shim does not support: " + redis_.last_unsupported());
  }
}

SeedResult World::Run() {
  for (int s = 0; s < p_.procs; ++s) slots_.push_back(&Spawn(s));
  Push(rng_.Range(0, 20), nullptr, [this] { Tick(); });
  Push(p_.run_ms, nullptr, [this] { Heal(); });
  Drain();
  if (!runaway_) Reap();
  redis_.ExpireAll();  // lapses nobody looked at
  if (!runaway_) CheckEnd();

  SeedResult out;
  out.seed = seed_;
  for (auto& v : violations_) {
    size_t total = violation_counts_[v.invariant];
    if (total > kDetailsPerInvariant) {
      // (the count is added once, to the first detail)
      bool first =
          &v == &*std::find_if(violations_.begin(), violations_.end(),
                               [&](const Violation& w) { return w.invariant == v.invariant; });
      if (first) v.detail += " [" + std::to_string(total) + " in this run]";
    }
  }
  out.violations = std::move(violations_);
  out.trace = std::move(trace_);
  std::ostringstream setup;
  setup << "procs=" << p_.procs << " keys=" << p_.keys << " run_ms=" << p_.run_ms
        << (p_.calm ? " calm" : "") << (p_.hot ? " hot" : "") << " drop_cmd=" << p_.drop_cmd
        << " drop_sub=" << p_.drop_sub << " stall=" << p_.stall << " pause=" << p_.pause
        << " crash=" << p_.crash << " close=" << p_.close << " restart=" << p_.restart
        << " outage=" << p_.outage << " busy=" << p_.busy << " oom=" << p_.oom
        << " spike=" << p_.spike << " fail=" << p_.fail << " never=" << p_.never
        << " sync=" << p_.sync << " slow=" << p_.slow << " cancel=" << p_.cancel
        << (p_.fail_fast ? " fail_fast" : " local_only")
        << " fallback=" << options_.fallback_interval_ms << " l1_ttl=" << options_.l1_ttl_ms
        << (options_.l1_max_entries == 0 ? " (l1 off)" : "");
  out.setup = setup.str();
  out.fingerprint = fingerprint_;
  out.events = events_;
  out.calls = calls_.size();
  out.executions = execs_.size();
  out.scripts = redis_.scripts_run();
  out.end_ms = now_;
  return out;
}

}  // namespace

SeedResult RunSeed(uint64_t seed, bool trace) {
  World world(seed, trace);
  return world.Run();
}

}  // namespace singleflight::sim
