#include "cluster_link.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cluster_slots.h"
#include "lua_scripts.h"
#include "redis_connection.h"
#include "subscriber.h"

namespace singleflight::internal {
namespace {

// Redirections one call follows; a healthy cluster needs at most two (MOVED
// to the new owner, then ASK during a migration).
constexpr int kMaxRedirects = 5;
// The least time between two CLUSTER SLOTS.
constexpr uint64_t kRefreshSpacingMs = 100;
// A map that nothing has questioned is read again this often: a topology
// change that this process has not run into yet (a new master, a failover
// of an idle shard) is then seen within this bound, at one CLUSTER SLOTS.
constexpr uint64_t kPeriodicRefreshMs = 30000;
// How soon a failed first CLUSTER SLOTS is asked again.
constexpr uint64_t kFirstMapRetryMs = 500;

// Whether a channel is a flight's (sharded) or the group's invalidation
// channel (plain, cluster-wide).
bool HasHashTag(const std::string& channel) {
  size_t open = channel.find('{');
  return open != std::string::npos && channel.find('}', open + 1) != std::string::npos;
}

class ClusterLink final : public RedisLink {
 public:
  ClusterLink(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options,
              bool keep_loop_alive, StateCallback on_state, StateCallback on_subscriber_state)
      : loop_(loop),
        scheduler_(scheduler),
        options_(options),
        keep_loop_alive_(keep_loop_alive),
        on_state_(std::move(on_state)),
        seed_(NodeAddress{options.host, options.port}.ToString()) {
    uint32_t bound = options.command_timeout_ms > 0   ? options.command_timeout_ms
                     : options.connect_timeout_ms > 0 ? options.connect_timeout_ms
                                                      : 2000;
    wait_bound_ms_ = bound;
    Subscriber::Handlers plain_handlers;
    plain_handlers.on_state = std::move(on_subscriber_state);
    plain_ = std::make_unique<Subscriber>(loop, scheduler, options_, std::move(plain_handlers),
                                          keep_loop_alive);
    OpenCommand(NodeFor(NodeAddress{options.host, options.port}));
  }

  bool settled() const override { return settled_; }
  bool up() const override { return up_; }
  Status last_error() const override { return last_error_; }

  void RunScript(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 ReplyCallback callback) override {
    auto call = std::make_shared<Call>();
    call->script = script;
    call->slot = keys.empty() ? 0 : KeySlot(keys.front());
    MoveChannelToKeys(script, &keys, &args);
    call->keys = std::move(keys);
    call->args = std::move(args);
    call->callback = std::move(callback);
    Route(call);
  }

  void Listen(const std::string& channel, ChannelListener* listener) override {
    if (closed_) return;
    if (!HasHashTag(channel)) return plain_->Add(channel, listener);
    auto [it, added] = listens_.try_emplace(channel);
    Listening& entry = it->second;
    if (added) entry.slot = KeySlot(channel);
    if (!entry.listeners.insert(listener).second) return;
    if (!entry.node.empty()) {
      nodes_.at(entry.node)->subscriber->Add(channel, listener);
    } else {
      Place(channel, entry);
    }
  }

  void Unlisten(const std::string& channel, ChannelListener* listener) override {
    if (closed_) return;
    if (!HasHashTag(channel)) return plain_->Remove(channel, listener);
    auto it = listens_.find(channel);
    if (it == listens_.end() || it->second.listeners.erase(listener) == 0) return;
    if (!it->second.node.empty()) nodes_.at(it->second.node)->subscriber->Remove(channel, listener);
    if (it->second.listeners.empty()) listens_.erase(it);
  }

  void Close(std::function<void()> done) override {
    if (closed_) return;
    closed_ = true;
    scheduler_->Cancel(refresh_timer_);
    scheduler_->Cancel(periodic_timer_);
    // Everything closes; `done` runs when the last part has.
    auto remaining = std::make_shared<int>(1);
    auto one_closed = [remaining, done = std::move(done)] {
      if (--*remaining == 0 && done) done();
    };
    std::vector<CallPtr> waiting = std::move(map_waiting_);
    map_waiting_.clear();
    for (const CallPtr& call : waiting) scheduler_->Cancel(call->wait_timer);
    for (auto& [name, node] : nodes_) {
      for (CallPtr& call : node->waiting) {
        scheduler_->Cancel(call->wait_timer);
        waiting.push_back(std::move(call));
      }
      node->waiting.clear();
    }
    // The waiting calls' kClosed come from the loop, before `done`.
    ++*remaining;
    scheduler_->Defer([waiting = std::move(waiting), one_closed] {
      for (const CallPtr& call : waiting) {
        call->callback(Status(Code::kClosed, "connection closed"), Reply{});
      }
      one_closed();
    });
    for (auto& [name, node] : nodes_) {
      if (node->command != nullptr) {
        ++*remaining;
        node->command->Close(one_closed);
        node->command = nullptr;
      }
      if (node->subscriber != nullptr) {
        ++*remaining;
        node->subscriber->Close(one_closed);
      }
    }
    plain_->Close(one_closed);
  }

 private:
  // One script call, kept until answered so that it can follow redirections.
  struct Call {
    ScriptId script = ScriptId::kGetOrLock;
    int slot = 0;
    std::vector<std::string> keys;  // the sharded variant's (channel in KEYS)
    std::vector<std::string> args;
    ReplyCallback callback;
    int redirects = 0;     // followed so far; at most kMaxRedirects
    std::string ask_node;  // non-empty: the next attempt is ASKING + EVAL there
    // While waiting for a node's connection: when it gives up, and its timer.
    uint64_t wait_until_ms = 0;
    Scheduler::TimerId wait_timer;
  };
  using CallPtr = std::shared_ptr<Call>;

  // A master (or the seed) this link talks to. Entries are never erased
  // before Close: their number is bounded by the nodes the cluster names.
  struct Node {
    NodeAddress address;
    RedisConnection* command = nullptr;      // null until first use; frees itself after Close
    std::unique_ptr<ScriptRunner> scripts;   // with `command`
    bool up = false;                         // `command` is ready
    std::vector<CallPtr> waiting;            // calls for it while !up
    std::unique_ptr<Subscriber> subscriber;  // sharded; null until a channel lives here
  };

  // A flight channel and where its listeners are added.
  struct Listening {
    int slot = 0;
    std::string node;  // a nodes_ key; empty: nowhere (no map yet, or dropped)
    std::unordered_set<ChannelListener*> listeners;
  };

  Node& NodeFor(const NodeAddress& address) {
    std::unique_ptr<Node>& node = nodes_[address.ToString()];
    if (!node) {
      node = std::make_unique<Node>();
      node->address = address;
    }
    return *node;
  }

  RedisOptions OptionsFor(const Node& node) const {
    RedisOptions options = options_;
    options.host = node.address.host;
    options.port = node.address.port;
    return options;
  }

  void OpenCommand(Node& node) {
    if (node.command != nullptr || closed_) return;
    std::string name = node.address.ToString();
    RedisConnection::Handlers handlers;
    handlers.on_state = [this, name](bool up, const Status& why) { OnNodeState(name, up, why); };
    node.command = RedisConnection::Create(loop_, scheduler_, OptionsFor(node),
                                           RedisConnection::Mode::kCommand, std::move(handlers),
                                           keep_loop_alive_);
    node.scripts = std::make_unique<ScriptRunner>(node.command, /*sharded=*/true);
  }

  // --- calls -------------------------------------------------------------------

  void Route(const CallPtr& call) {
    if (closed_) return Fail(call, Status(Code::kClosed, "connection closed"));
    Node* node = nullptr;
    if (!call->ask_node.empty()) {
      node = nodes_.at(call->ask_node).get();
    } else if (const NodeAddress* owner = map_.Owner(call->slot)) {
      node = &NodeFor(*owner);
    } else {
      return WaitForMap(call);
    }
    OpenCommand(*node);
    if (node->up) return Send(*node, call);
    if (call->wait_until_ms == 0) call->wait_until_ms = scheduler_->NowMs() + wait_bound_ms_;
    uint64_t now = scheduler_->NowMs();
    if (now >= call->wait_until_ms) {
      return Fail(call,
                  Status(Code::kUnavailable, "Redis Cluster node " + node->address.ToString() +
                                                 " not connected: " + last_error_.message()));
    }
    node->waiting.push_back(call);
    std::weak_ptr<Call> weak = call;
    std::string name = node->address.ToString();
    call->wait_timer = scheduler_->After(call->wait_until_ms - now, [this, weak, name] {
      auto self = weak.lock();
      if (!self) return;
      self->wait_timer = {};
      Unwait(name, self);
      Route(self);  // past its bound now: answered kUnavailable, unless the node came up
    });
  }

  // Before the first map: the call waits for it (a group that detected a
  // cluster hands its calls over before the map is read), within the same
  // bound as for a node; once the first attempt has failed, it fails at once.
  void WaitForMap(const CallPtr& call) {
    Status no_map(Code::kUnavailable, "no Redis Cluster slot map yet: " + last_error_.message());
    if (map_failed_) return Fail(call, no_map);
    uint64_t now = scheduler_->NowMs();
    if (call->wait_until_ms == 0) call->wait_until_ms = now + wait_bound_ms_;
    if (now >= call->wait_until_ms) return Fail(call, no_map);
    map_waiting_.push_back(call);
    std::weak_ptr<Call> weak = call;
    call->wait_timer = scheduler_->After(call->wait_until_ms - now, [this, weak] {
      auto self = weak.lock();
      if (!self) return;
      self->wait_timer = {};
      map_waiting_.erase(std::remove(map_waiting_.begin(), map_waiting_.end(), self),
                         map_waiting_.end());
      Route(self);
    });
  }

  // Routes (or, with no map, fails) every call that waited for the map.
  void FlushMapWaiting() {
    std::vector<CallPtr> waiting = std::move(map_waiting_);
    map_waiting_.clear();
    for (const CallPtr& call : waiting) {
      scheduler_->Cancel(call->wait_timer);
      Route(call);
    }
  }

  // Takes a waiting call off its node.
  void Unwait(const std::string& name, const CallPtr& call) {
    auto& waiting = nodes_.at(name)->waiting;
    waiting.erase(std::remove(waiting.begin(), waiting.end(), call), waiting.end());
    scheduler_->Cancel(call->wait_timer);
  }

  void Send(Node& node, const CallPtr& call) {
    std::string name = node.address.ToString();
    auto on_reply = [this, call, name](const Status& status, const Reply& reply) {
      OnReply(call, name, status, reply);
    };
    if (!call->ask_node.empty()) {
      // ASKING holds for the next command on this connection only; both go
      // out in one write, in order. By EVAL: a NOSCRIPT retry would lose it.
      call->ask_node.clear();
      node.command->Command({"ASKING"}, [](const Status&, const Reply&) {});
      std::vector<std::string> argv{"EVAL", std::string(ShardedScriptSource(call->script)),
                                    std::to_string(call->keys.size())};
      argv.insert(argv.end(), call->keys.begin(), call->keys.end());
      argv.insert(argv.end(), call->args.begin(), call->args.end());
      node.command->Command(std::move(argv), std::move(on_reply));
      return;
    }
    node.scripts->Run(call->script, call->keys, call->args, std::move(on_reply));
  }

  void OnReply(const CallPtr& call, const std::string& node, const Status& status,
               const Reply& reply) {
    if (closed_) return Answer(call, status, reply);
    if (status.code() == Code::kUnavailable && call->redirects < kMaxRedirects) {
      // Not sent: the node's connection went down under it. Wait for it (or
      // for the refresh to name another owner).
      ++call->redirects;
      RequestRefresh();
      return Route(call);
    }
    Redirect redirect;
    if (status.ok() && ParseRedirect(reply, &redirect) && call->redirects < kMaxRedirects) {
      ++call->redirects;
      if (redirect.ask) {
        call->ask_node = NodeFor(redirect.to).address.ToString();
      } else {
        map_.Set(redirect.slot, redirect.to);
        RequestRefresh();
      }
      return Route(call);
    }
    (void)node;
    Answer(call, status, reply);
  }

  // Answers from the loop: Route runs inside RunScript too.
  void Fail(const CallPtr& call, Status status) {
    scheduler_->Defer([call, status = std::move(status)] { Answer(call, status, Reply{}); });
  }

  static void Answer(const CallPtr& call, const Status& status, const Reply& reply) {
    ReplyCallback callback = std::move(call->callback);
    if (callback) callback(status, reply);
  }

  // --- node states --------------------------------------------------------------

  void OnNodeState(const std::string& name, bool up, const Status& why) {
    if (closed_) return;
    Node& node = *nodes_.at(name);
    if (node.up != up) up_nodes_ += up ? 1 : -1;
    node.up = up;
    if (up) {
      node.scripts->OnConnected();  // SCRIPT LOAD on every (re)connect
      if (map_.empty() || refresh_wanted_) RequestRefresh();
      std::vector<CallPtr> waiting = std::move(node.waiting);
      node.waiting.clear();
      for (const CallPtr& call : waiting) {
        scheduler_->Cancel(call->wait_timer);
        Route(call);
      }
      if (!map_.empty()) UpdateState(Status::Ok());
    } else {
      last_error_ = why;
      if (!map_.empty()) RequestRefresh();  // it may have failed over
      if (map_.empty() && name == seed_) {
        map_failed_ = true;  // no map can come until the seed is back
        FlushMapWaiting();
      }
      UpdateState(why);
    }
  }

  // Reports up() changes, and every down while there is no map (so that the
  // group sees each failed attempt to reach the seed, as on standalone).
  void UpdateState(const Status& why) {
    bool up = !map_.empty() && up_nodes_ > 0;
    bool changed = up != up_;
    up_ = up;
    if (!up && map_.empty()) {
      settled_ = true;
      if (on_state_) on_state_(false, why);
      return;
    }
    if (changed) {
      settled_ = true;
      if (on_state_) on_state_(up, up ? Status::Ok() : why);
    }
  }

  // --- the slot map -------------------------------------------------------------

  void RequestRefresh() {
    if (closed_) return;
    refresh_wanted_ = true;
    if (refresh_in_flight_ || refresh_timer_.valid()) return;
    uint64_t now = scheduler_->NowMs();
    uint64_t next = last_refresh_ms_ == 0 ? now : last_refresh_ms_ + kRefreshSpacingMs;
    if (next > now) {
      refresh_timer_ = scheduler_->After(next - now, [this] {
        refresh_timer_ = {};
        StartRefresh();
      });
      return;
    }
    StartRefresh();
  }

  // Asks the seed if it is up, else any master this link is connected to.
  void StartRefresh() {
    if (closed_ || refresh_in_flight_) return;
    Node* asked = nullptr;
    auto seed = nodes_.find(seed_);
    if (seed != nodes_.end() && seed->second->up) asked = seed->second.get();
    for (auto it = nodes_.begin(); asked == nullptr && it != nodes_.end(); ++it) {
      if (it->second->up) asked = it->second.get();
    }
    if (asked == nullptr) {
      // Asked again when a node comes up (refresh_wanted_ stays set). Open
      // every known master so that one of them can answer.
      for (const NodeAddress& master : map_.masters()) OpenCommand(NodeFor(master));
      return;
    }
    refresh_wanted_ = false;
    refresh_in_flight_ = true;
    last_refresh_ms_ = scheduler_->NowMs();
    std::string host = asked->address.host;
    asked->command->Command({"CLUSTER", "SLOTS"},
                            [this, host](const Status& status, const Reply& reply) {
                              refresh_in_flight_ = false;
                              if (closed_) return;
                              OnSlots(status, reply, host);
                            });
  }

  void OnSlots(const Status& status, const Reply& reply, const std::string& host) {
    Status parsed = status;
    if (status.ok()) parsed = map_.Parse(reply, host);
    if (!parsed.ok()) {
      bool first = map_.empty();
      std::string text = status.ok() && reply.is_error() ? reply.str : parsed.message();
      last_error_ = Status(Code::kUnavailable,
                           "RedisOptions::cluster is set, but " + seed_ +
                               " gave no usable slot map (is it a Redis Cluster node?): " + text);
      if (first) {
        map_failed_ = true;
        UpdateState(last_error_);
        FlushMapWaiting();
        refresh_timer_ = scheduler_->After(kFirstMapRetryMs, [this] {
          refresh_timer_ = {};
          RequestRefresh();
        });
      } else if (refresh_wanted_) {
        RequestRefresh();
      }
      return;
    }
    map_failed_ = false;
    scheduler_->Cancel(periodic_timer_);
    periodic_timer_ = scheduler_->After(kPeriodicRefreshMs, [this] {
      periodic_timer_ = {};
      RequestRefresh();
    });
    OnMapChanged();
    FlushMapWaiting();
    UpdateState(Status::Ok());
    if (refresh_wanted_) RequestRefresh();
  }

  // Every waiting call and every channel goes where the map now says.
  void OnMapChanged() {
    std::vector<std::pair<std::string, CallPtr>> moved;
    for (auto& [name, node] : nodes_) {
      for (const CallPtr& call : node->waiting) {
        const NodeAddress* owner = map_.Owner(call->slot);
        if (call->ask_node.empty() && owner != nullptr && owner->ToString() != name) {
          moved.emplace_back(name, call);
        }
      }
    }
    for (auto& [name, call] : moved) {
      Unwait(name, call);
      Route(call);
    }
    std::vector<std::string> replace;
    for (auto& [channel, entry] : listens_) {
      const NodeAddress* owner = map_.Owner(entry.slot);
      if (owner != nullptr && owner->ToString() != entry.node) replace.push_back(channel);
    }
    for (const std::string& channel : replace) {
      auto it = listens_.find(channel);
      if (it == listens_.end()) continue;
      Unplace(channel, it->second);
      Place(channel, it->second);
    }
  }

  // --- sharded channels ---------------------------------------------------------

  void Place(const std::string& channel, Listening& entry) {
    const NodeAddress* owner = map_.Owner(entry.slot);
    if (owner == nullptr || closed_) return;  // placed when the map comes
    Node& node = NodeFor(*owner);
    if (node.subscriber == nullptr) {
      std::string name = node.address.ToString();
      Subscriber::Handlers handlers;
      handlers.on_state = [this](bool up, const Status&) {
        if (!up) RequestRefresh();
      };
      handlers.on_dropped = [this, name](const std::string& dropped) { OnDropped(name, dropped); };
      node.subscriber = std::make_unique<Subscriber>(loop_, scheduler_, OptionsFor(node),
                                                     std::move(handlers), keep_loop_alive_,
                                                     /*sharded=*/true);
    }
    entry.node = node.address.ToString();
    // A snapshot: Add may call back (never synchronously, but be safe).
    std::vector<ChannelListener*> listeners(entry.listeners.begin(), entry.listeners.end());
    for (ChannelListener* listener : listeners) node.subscriber->Add(channel, listener);
  }

  void Unplace(const std::string& channel, Listening& entry) {
    if (entry.node.empty()) return;
    Node& node = *nodes_.at(entry.node);
    entry.node.clear();
    for (ChannelListener* listener : entry.listeners) node.subscriber->Remove(channel, listener);
  }

  // The server ended or refused a sharded subscription: its slot is
  // elsewhere now. The map's refresh places it again.
  void OnDropped(const std::string& node, const std::string& channel) {
    if (closed_) return;
    auto it = listens_.find(channel);
    if (it == listens_.end() || it->second.node != node) return;
    Unplace(channel, it->second);
    RequestRefresh();
  }

  uv_loop_t* loop_;
  Scheduler* scheduler_;
  RedisOptions options_;  // the seed's; each node's differs in host and port
  bool keep_loop_alive_;
  StateCallback on_state_;
  std::string seed_;        // "host:port" of the options, a nodes_ key
  uint64_t wait_bound_ms_;  // how long a call waits for its node's connection

  std::unordered_map<std::string, std::unique_ptr<Node>> nodes_;  // by "host:port"
  std::unordered_map<std::string, Listening> listens_;            // flight channels with listeners
  std::unique_ptr<Subscriber> plain_;  // the seed's plain pub/sub (invalidations)
  SlotMap map_;
  std::vector<CallPtr> map_waiting_;  // calls before the first map
  // The last try at a first map failed (the seed down, or no usable map):
  // calls without a map fail at once instead of waiting.
  bool map_failed_ = false;

  bool refresh_in_flight_ = false;  // a CLUSTER SLOTS is on its way
  bool refresh_wanted_ = false;     // asked for since the last one was sent
  uint64_t last_refresh_ms_ = 0;    // when the last one was sent (0: never)
  Scheduler::TimerId refresh_timer_;
  Scheduler::TimerId periodic_timer_;  // the next kPeriodicRefreshMs read

  int up_nodes_ = 0;  // nodes whose command connection is up
  bool settled_ = false;
  bool up_ = false;
  bool closed_ = false;
  Status last_error_ = Status(Code::kUnavailable, "not connected yet");
};

}  // namespace

std::unique_ptr<RedisLink> MakeClusterLink(uv_loop_t* loop, Scheduler* scheduler,
                                           const RedisOptions& options, bool keep_loop_alive,
                                           RedisLink::StateCallback on_command_state,
                                           RedisLink::StateCallback on_subscriber_state) {
  return std::make_unique<ClusterLink>(loop, scheduler, options, keep_loop_alive,
                                       std::move(on_command_state), std::move(on_subscriber_state));
}

}  // namespace singleflight::internal
