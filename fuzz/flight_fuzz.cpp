// The flight state machine fed by a hostile or broken Redis: a group over a
// fake RedisLink on a manual clock, where every script reply (of any shape),
// every failure, every channel message (any bytes, or a real envelope) and
// every tick of time is decided by the fuzz bytes, interleaved with callers
// that join, cancel, time out and Forget, and producers that succeed, fail,
// throw or call done twice.
//
// Checked: nothing crashes or leaks (ASan/LSan); every accepted call gets its
// callback exactly once, never inside Do, and an ok result has a value within
// max_value_bytes; Close completes and answers everyone; a Done called after
// the group is gone is harmless.
#include <fuzzer/FuzzedDataProvider.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "envelope.h"
#include "fuzz_check.h"
#include "fuzz_reply.h"
#include "group_impl.h"
#include "support/manual_scheduler.h"

namespace singleflight::fuzz {
namespace {

using internal::ChannelListener;
using internal::GroupImpl;
using internal::RedisLink;
using internal::ScriptId;

const std::vector<std::string> kKeys = {"a", "b", "c"};
constexpr size_t kMaxValueBytes = 256;
constexpr size_t kMaxCalls = 1000;

struct PendingScript {
  ScriptId script;
  RedisLink::ReplyCallback callback;
};

class FakeLink final : public RedisLink {
 public:
  bool settled() const override { return settled_; }
  bool up() const override { return up_; }
  Status last_error() const override { return Status(Code::kUnavailable, "fake link is down"); }
  void RunScript(ScriptId script, std::vector<std::string>, std::vector<std::string>,
                 ReplyCallback callback) override {
    pending.push_back({script, std::move(callback)});
  }
  void Listen(const std::string& channel, ChannelListener* listener) override {
    FUZZ_CHECK(listeners.insert({channel, listener}).second);
  }
  void Unlisten(const std::string& channel, ChannelListener* listener) override {
    listeners.erase({channel, listener});
  }
  void Close(std::function<void()> done) override {
    while (!pending.empty()) Answer(0, Status(Code::kClosed, "closed"), Reply{});
    done();
  }

  // Answers pending[index]; its callback may queue more.
  void Answer(size_t index, const Status& status, const Reply& reply) {
    RedisLink::ReplyCallback callback = std::move(pending[index].callback);
    pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(index));
    callback(status, reply);
  }

  bool settled_ = true;
  bool up_ = true;
  std::deque<PendingScript> pending;
  std::set<std::pair<std::string, ChannelListener*>> listeners;
};

std::string EnvelopeFrom(FuzzedDataProvider& in) {
  internal::Envelope e;
  e.ok = in.ConsumeBool();
  (e.ok ? e.value : e.error) = in.ConsumeRandomLengthString(kMaxValueBytes + 8);
  e.error_code = in.ConsumeBool() ? "producer_error" : in.ConsumeRandomLengthString(8);
  e.token = std::string(16, 't');
  e.produced_at_ms = in.ConsumeIntegral<uint64_t>();
  return internal::EncodeEnvelope(e);
}

Reply ScriptReply(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0:
      return Array(
          {Integer(internal::kGetOrLockHit), Text(Reply::Type::kString, EnvelopeFrom(in))});
    case 1: return Array({Integer(internal::kGetOrLockAcquired)});
    case 2:
      return Array({Integer(internal::kGetOrLockBusy), Integer(in.ConsumeIntegral<int16_t>()),
                    Text(Reply::Type::kString, in.ConsumeBytesAsString(16))});
    case 3: return Integer(in.ConsumeIntegralInRange<int>(0, 1));
    case 4:  // Complete's answers
      return Array({Integer(in.ConsumeIntegralInRange<int>(0, 1)), Integer(1),
                    Integer(in.ConsumeIntegralInRange<int>(0, 1))});
    case 5:
      return Text(Reply::Type::kError,
                  in.PickValueInArray({"BUSY running a script", "OOM command not allowed",
                                       "MOVED 1 127.0.0.1:1", "LOADING", "NOPERM no"}));
    default: return ConsumeReply(in, {"", "OK", "NOSCRIPT"});
  }
}

struct Driver {
  FuzzedDataProvider& in;
  test::ManualScheduler clock;
  FakeLink* link = nullptr;
  GroupImpl* group = nullptr;
  bool closing = false;
  bool closed = false;
  bool in_do = false;
  std::vector<int> callbacks;  // per accepted call: how many times called back
  std::vector<Call> calls;
  std::vector<Done> dones;

  explicit Driver(FuzzedDataProvider& input) : in(input) {
    Options options;
    options.redis.host = "fake";
    options.max_value_bytes = kMaxValueBytes;
    options.when_redis_down = in.ConsumeBool() ? DegradedMode::kLocalOnly : DegradedMode::kFailFast;
    options.error_ttl_ms = in.ConsumeBool() ? 0 : 500;
    auto fake = std::make_unique<FakeLink>();
    link = fake.get();
    // Unsettled: the first connect has not finished, so flights wait for it.
    link->settled_ = link->up_ = in.ConsumeBool();
    group = new GroupImpl(std::move(options), &clock, std::move(fake));
  }

  Producer MakeProducer() {
    int behaviour = in.ConsumeIntegralInRange<int>(0, 3);
    return [this, behaviour](const ProducerContext&, Done done) {
      if (behaviour == 1) done("sync");
      if (behaviour == 2) throw std::runtime_error("producer threw");
      if (behaviour == 3) done.Fail("sync failure");
      dones.push_back(std::move(done));
    };
  }

  void DoCall() {
    size_t id = callbacks.size();
    uint32_t timeout = in.ConsumeIntegralInRange<uint32_t>(0, 3000);
    // 7, not 0: an exhausted input reads as 0, and must not chain forever.
    bool again = in.ConsumeIntegralInRange<int>(0, 7) == 7;
    in_do = true;
    Call call = group->Do(
        kKeys[in.ConsumeIntegralInRange<size_t>(0, kKeys.size() - 1)], MakeProducer(),
        [this, id, again](const Result& r) {
          FUZZ_CHECK(!in_do);
          FUZZ_CHECK(++callbacks[id] == 1);
          if (r.ok()) {
            FUZZ_CHECK(r.value_ptr != nullptr);
            FUZZ_CHECK(r.value().size() <= kMaxValueBytes);
          }
          // Callers often retry or chain another call from their callback.
          if (again && !closing && callbacks.size() < kMaxCalls) DoCall();
        },
        CallOptions{timeout});
    in_do = false;
    callbacks.push_back(call.ok() ? 0 : -1);  // -1: refused, must never call back
    calls.push_back(call);
  }

  void AnswerScript() {
    if (link->pending.empty()) return;
    size_t index = in.ConsumeIntegralInRange<size_t>(0, link->pending.size() - 1);
    int fate = in.ConsumeIntegralInRange<int>(0, 4);
    if (fate == 0) {
      link->Answer(index, Status(Code::kUnavailable, "fake: not sent"), Reply{});
    } else if (fate == 1) {
      link->Answer(index, Status(Code::kTimeout, "fake: answer lost"), Reply{});
    } else {
      link->Answer(index, Status::Ok(), ScriptReply(in));
    }
  }

  ChannelListener* AnyListener() {
    if (link->listeners.empty()) return nullptr;
    auto it = link->listeners.begin();
    std::advance(it, in.ConsumeIntegralInRange<size_t>(0, link->listeners.size() - 1));
    return it->second;
  }

  void Message() {
    ChannelListener* listener = AnyListener();
    if (listener == nullptr) return;
    listener->OnMessage(in.ConsumeBool() ? EnvelopeFrom(in) : in.ConsumeRandomLengthString(64));
  }

  void FinishProducer() {
    if (dones.empty()) return;
    Done& done = dones[in.ConsumeIntegralInRange<size_t>(0, dones.size() - 1)];
    if (in.ConsumeBool()) {
      done(in.ConsumeRandomLengthString(kMaxValueBytes + 8));
    } else {
      done.Fail(in.ConsumeRandomLengthString(16));
    }
  }

  void Run() {
    for (int steps = 0; steps < 200 && in.remaining_bytes() > 0; ++steps) {
      switch (in.ConsumeIntegralInRange<int>(0, 10)) {
        case 0: DoCall(); break;
        case 1: AnswerScript(); break;
        case 2: Message(); break;
        case 3:
          if (ChannelListener* l = AnyListener()) l->OnSubscribed();
          break;
        case 4: clock.Advance(in.ConsumeIntegralInRange<uint64_t>(0, 4000)); break;
        case 5: FinishProducer(); break;
        case 6:
          if (!calls.empty())
            calls[in.ConsumeIntegralInRange<size_t>(0, calls.size() - 1)].Cancel();
          break;
        case 7: group->Forget(kKeys[in.ConsumeIntegralInRange<size_t>(0, kKeys.size() - 1)]); break;
        case 8:
          link->settled_ = true;
          link->up_ = in.ConsumeBool();
          group->OnLinkState(link->up_);
          break;
        default: clock.RunPending(); break;
      }
    }
  }

  // Close, answering whatever Redis work Close waits for, then check that
  // every accepted call was answered exactly once.
  void Close() {
    closing = true;
    group->Close([this] { closed = true; });
    for (int round = 0; round < 1000 && !closed; ++round) {
      clock.RunPending();
      if (closed) break;
      if (!link->pending.empty()) link->Answer(0, Status::Ok(), Integer(1));
    }
    // Close's drain is bounded (2 x command_timeout_ms + 100 ms) even if
    // Redis never answers.
    if (!closed) clock.Advance(2 * Options{}.redis.command_timeout_ms + 100);
    FUZZ_CHECK(closed);
    for (int count : callbacks) FUZZ_CHECK(count == 1 || count == -1);
    // The group is gone: a late done must find nothing to touch.
    for (Done& done : dones) FUZZ_CHECK(!done("late"));
  }
};

}  // namespace
}  // namespace singleflight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  singleflight::fuzz::Driver driver(in);
  driver.Run();
  driver.Close();
  return 0;
}
