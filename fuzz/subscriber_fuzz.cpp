// The Subscriber's pub/sub handling, driven by fuzz bytes through a fake
// connection that plays hiredis and the server: listeners come and go (also
// from inside their own callbacks), the connection drops and returns, the
// server confirms commands in order and publishes, and arbitrary reply trees
// arrive as pushes.
//
// Checked (lib/subscriber.h's contract):
// - exactly one UNSUBSCRIBE per SUBSCRIBE, in turn, per connection (hiredis
//   0.14 replaces a second SUBSCRIBE's callback and aborts on a second
//   UNSUBSCRIBE of the last channel);
// - a listener is never called for a channel after Remove returned, and
//   OnSubscribed never runs inside Add;
// - a message the server really sent reaches every listener of the channel
//   exactly once;
// - once the connection is up and the server has answered everything, every
//   listener has had OnSubscribed since it was added or since the last
//   reconnect (skipped after garbage pushes: those may fake a confirmation).
#include <fuzzer/FuzzedDataProvider.h>
#include <uv.h>

#include <array>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_reply.h"
#include "subscriber.h"

namespace singleflight::fuzz {
namespace {

using internal::RedisConnection;
using internal::Subscriber;

const std::vector<std::string> kChannels = {"sf:{a}:ch", "sf:{b}:ch", "sf:invalidate"};
const std::vector<std::string> kWords = {"message",   "subscribe", "unsubscribe", "pmessage",
                                         "pong",      "sf:{a}:ch", "sf:{b}:ch",   "sf:invalidate",
                                         "sf:{c}:ch", ""};
constexpr int kListeners = 4;

// What a listener does when called, to exercise re-entrancy.
enum class Reaction { kNothing, kRemoveSelf, kRemoveNext, kAddNext, kAddSelfElsewhere, kCount };

struct World;

struct TestListener final : Subscriber::Listener {
  World* world = nullptr;
  int id = 0;
  Reaction reaction = Reaction::kNothing;
  void OnSubscribed(std::string_view channel) override;
  void OnMessage(std::string_view channel, std::string_view payload) override;
};

class FakeConnection;

struct World {
  Subscriber* subscriber = nullptr;
  FakeConnection* connection = nullptr;  // null once closed
  std::array<TestListener, kListeners> listeners;
  std::map<std::string, std::set<int>> members;   // the model of Add/Remove
  std::set<std::pair<std::string, int>> owed;     // still owed an OnSubscribed
  std::set<std::pair<std::string, int>> removed;  // removed during the current push
  std::map<std::pair<std::string, int>, int> delivered;
  bool in_add = false;
  bool garbage = false;  // a fake push was injected: liveness is not promised

  bool Member(const std::string& channel, int id) { return members[channel].count(id) != 0; }
  void Add(const std::string& channel, int id) {
    bool fresh = members[channel].insert(id).second;
    if (fresh) owed.emplace(channel, id);
    in_add = true;
    subscriber->Add(channel, &listeners[id]);
    in_add = false;
  }
  void Remove(const std::string& channel, int id) {
    members[channel].erase(id);
    owed.erase({channel, id});
    removed.emplace(channel, id);
    subscriber->Remove(channel, &listeners[id]);
  }
  void React(const TestListener& who, const std::string& channel) {
    int next = (who.id + 1) % kListeners;
    switch (who.reaction) {
      case Reaction::kRemoveSelf: return Remove(channel, who.id);
      case Reaction::kRemoveNext: return Remove(channel, next);
      case Reaction::kAddNext: return Add(channel, next);
      case Reaction::kAddSelfElsewhere:
        return Add(kChannels[(who.id + 1) % kChannels.size()], who.id);
      default: return;
    }
  }
};

// hiredis plus the server, as the Subscriber sees them. Commands queue up in
// order and are answered when the fuzzer says so, as a server would.
class FakeConnection final : public RedisConnection {
 public:
  FakeConnection(World& world, Handlers handlers) : world_(world), handlers_(std::move(handlers)) {}

  bool connected() const override { return up_; }
  void Command(std::vector<std::string>, CommandCallback) override {
    FUZZ_CHECK(!"a subscriber connection never sends plain commands");
  }
  bool Subscribe(const std::vector<std::string>& channels) override { return Send(true, channels); }
  bool Unsubscribe(const std::vector<std::string>& channels) override {
    return Send(false, channels);
  }
  void Close(std::function<void()> done) override {
    world_.connection = nullptr;
    if (done) done();
    delete this;
  }

  void SetUp(bool up) {
    up_ = up;
    queue_.clear();
    sent_.clear();
    server_.clear();
    handlers_.on_state(up, up ? Status::Ok() : Status(Code::kUnavailable, "connection lost"));
  }
  bool up() const { return up_; }
  bool idle() const { return queue_.empty(); }
  bool ServerSubscribed(const std::string& channel) const {
    auto it = server_.find(channel);
    return it != server_.end() && it->second;
  }

  // The server runs the oldest command: one confirmation per channel.
  void AnswerOne() {
    if (queue_.empty()) return;
    Queued command = std::move(queue_.front());
    queue_.pop_front();
    for (const std::string& channel : command.channels) {
      server_[channel] = command.subscribe;
      long long count = 0;
      for (auto& entry : server_) count += entry.second ? 1 : 0;
      Push(Array({Text(Reply::Type::kString, command.subscribe ? "subscribe" : "unsubscribe"),
                  Text(Reply::Type::kString, channel), Integer(count)}));
    }
  }
  void Push(const Reply& reply) { handlers_.on_push(reply); }

 private:
  struct Queued {
    bool subscribe;
    std::vector<std::string> channels;
  };

  bool Send(bool subscribe, const std::vector<std::string>& channels) {
    if (!up_) return false;
    FUZZ_CHECK(!channels.empty());
    for (const std::string& channel : channels) {
      bool& subscribed = sent_[channel];
      FUZZ_CHECK(subscribed != subscribe);  // S, U, S, U ... per channel
      subscribed = subscribe;
    }
    queue_.push_back({subscribe, channels});
    return true;
  }

  World& world_;
  Handlers handlers_;
  bool up_ = false;
  std::deque<Queued> queue_;
  std::map<std::string, bool> sent_;    // subscribed, as far as commands sent say
  std::map<std::string, bool> server_;  // subscribed, as far as the server has run them
};

void TestListener::OnSubscribed(std::string_view name) {
  std::string channel(name);
  FUZZ_CHECK(!world->in_add);
  FUZZ_CHECK(world->Member(channel, id));
  if (!world->garbage) FUZZ_CHECK(world->connection->ServerSubscribed(channel));
  world->owed.erase({channel, id});
  world->React(*this, channel);
}

void TestListener::OnMessage(std::string_view name, std::string_view) {
  std::string channel(name);
  FUZZ_CHECK(world->Member(channel, id));
  ++world->delivered[{channel, id}];
  world->React(*this, channel);
}

uv_loop_t* Loop() {
  static uv_loop_t* loop = [] {
    static uv_loop_t storage;
    uv_loop_init(&storage);
    return &storage;
  }();
  return loop;
}

// A message the server really sends reaches each listener of the channel
// once, except listeners removed meanwhile.
void Publish(World& world, const std::string& channel, const std::string& payload) {
  if (!world.connection->ServerSubscribed(channel)) return;
  std::set<int> before = world.members[channel];
  world.removed.clear();
  world.delivered.clear();
  world.connection->Push(
      Array({Text(Reply::Type::kString, "message"), Text(Reply::Type::kString, channel),
             Text(Reply::Type::kString, payload)}));
  for (int id : before) {
    if (world.removed.count({channel, id}) != 0) continue;
    FUZZ_CHECK((world.delivered[{channel, id}]) == 1);
  }
}

// Brings the connection up and lets the server answer everything.
void Settle(World& world) {
  if (!world.connection->up()) world.connection->SetUp(true);
  for (int round = 0; round < 20; ++round) {
    uv_run(Loop(), UV_RUN_NOWAIT);
    if (world.connection->idle()) {
      uv_run(Loop(), UV_RUN_NOWAIT);
      if (world.connection->idle()) break;
    }
    while (!world.connection->idle()) world.connection->AnswerOne();
  }
  if (!world.garbage) FUZZ_CHECK(world.owed.empty());
}

void RunOps(World& world, FuzzedDataProvider& in) {
  auto channel = [&] {
    return kChannels[in.ConsumeIntegralInRange<size_t>(0, kChannels.size() - 1)];
  };
  auto listener = [&] { return in.ConsumeIntegralInRange<int>(0, kListeners - 1); };
  for (int steps = 0; steps < 256 && in.remaining_bytes() > 0; ++steps) {
    switch (in.ConsumeIntegralInRange<int>(0, 8)) {
      case 0: world.Add(channel(), listener()); break;
      case 1: world.Remove(channel(), listener()); break;
      case 2: world.connection->SetUp(!world.connection->up()); break;
      case 3: world.connection->AnswerOne(); break;
      case 4: Publish(world, channel(), in.ConsumeRandomLengthString(32)); break;
      case 5: uv_run(Loop(), UV_RUN_NOWAIT); break;
      case 6: {
        int id = listener();
        world.listeners[id].reaction = static_cast<Reaction>(
            in.ConsumeIntegralInRange<int>(0, static_cast<int>(Reaction::kCount) - 1));
        break;
      }
      default:
        world.garbage = true;
        world.connection->Push(ConsumeReply(in, kWords));
        break;
    }
  }
}

}  // namespace
}  // namespace singleflight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace singleflight::fuzz;
  FuzzedDataProvider in(data, size);
  World world;
  for (int i = 0; i < kListeners; ++i) {
    world.listeners[i].world = &world;
    world.listeners[i].id = i;
  }
  auto make_connection = [&world](RedisConnection::Handlers handlers) {
    world.connection = new FakeConnection(world, std::move(handlers));
    return world.connection;
  };
  Subscriber subscriber(Loop(), make_connection, Subscriber::Handlers{});
  world.subscriber = &subscriber;
  RunOps(world, in);
  Settle(world);
  bool closed = false;
  subscriber.Close([&closed] { closed = true; });
  FUZZ_CHECK(closed && world.connection == nullptr);
  uv_run(Loop(), UV_RUN_DEFAULT);  // lets the subscriber's idle handle close
  return 0;
}
