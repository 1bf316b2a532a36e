// The flight state machine's Redis states, driven through a fake RedisLink on
// a manual clock: every script call and every channel message is decided by
// the test. (The same paths run against a real redis-server in the
// integration tests.)
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "envelope.h"
#include "group_impl.h"
#include "support/manual_scheduler.h"
#include "support/replies.h"

namespace singleflight::internal {
namespace {

struct ScriptCall {
  ScriptId script;
  std::vector<std::string> keys;
  std::vector<std::string> args;
  RedisLink::ReplyCallback callback;
};

class FakeLink final : public RedisLink {
 public:
  bool settled() const override { return settled_; }
  bool up() const override { return up_; }
  Status last_error() const override { return Status(Code::kUnavailable, "fake: down"); }
  void RunScript(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 ReplyCallback callback) override {
    calls.push_back({script, std::move(keys), std::move(args), std::move(callback)});
  }
  void Listen(const std::string& channel, ChannelListener* listener) override {
    listeners[channel].insert(listener);
  }
  void Unlisten(const std::string& channel, ChannelListener* listener) override {
    listeners[channel].erase(listener);
  }
  void Close(std::function<void()> done) override {
    for (auto& call : calls) {
      if (call.callback) call.callback(Status(Code::kClosed, "closed"), Reply{});
    }
    calls.clear();
    done();
  }

  // Answers the oldest unanswered call of `script`.
  void Answer(ScriptId script, Reply reply) {
    for (auto& call : calls) {
      if (call.script == script && call.callback) {
        auto callback = std::move(call.callback);
        call.callback = nullptr;
        callback(Status::Ok(), reply);
        return;
      }
    }
    ADD_FAILURE() << "no pending call of that script";
  }
  // Fails the oldest unanswered call of `script` as a dropped connection
  // would: it was written, so it may have run (kTimeout).
  void Drop(ScriptId script) { Fail(script, Status(Code::kTimeout, "connection lost")); }
  void Fail(ScriptId script, const Status& status) {
    for (auto& call : calls) {
      if (call.script == script && call.callback) {
        auto callback = std::move(call.callback);
        call.callback = nullptr;
        callback(status, Reply{});
        return;
      }
    }
    ADD_FAILURE() << "no pending call of that script";
  }
  int Pending(ScriptId script) const {
    int n = 0;
    for (auto& call : calls) n += call.script == script && call.callback != nullptr;
    return n;
  }
  int Count(ScriptId script) const {
    int n = 0;
    for (auto& call : calls) n += call.script == script;
    return n;
  }
  const ScriptCall* Last(ScriptId script) const {
    for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
      if (it->script == script) return &*it;
    }
    return nullptr;
  }
  // Flight listeners only: the group's invalidation listener is always there.
  size_t ListenerCount() const {
    size_t n = 0;
    for (auto& entry : listeners) n += entry.first == "sf:invalidate" ? 0 : entry.second.size();
    return n;
  }
  ChannelListener* OnlyListener() {
    for (auto& entry : listeners) {
      if (entry.first != "sf:invalidate" && !entry.second.empty()) return *entry.second.begin();
    }
    return nullptr;
  }

  bool settled_ = true;
  bool up_ = true;
  std::vector<ScriptCall> calls;
  std::map<std::string, std::set<ChannelListener*>> listeners;
};

using test::Arr;
using test::Err;
using test::Int;
Reply Str(std::string s) {
  return test::Bulk(std::move(s));
}

std::string OkEnvelope(std::string value) {
  Envelope e;
  e.ok = true;
  e.value = std::move(value);
  e.token = std::string(16, 't');
  e.produced_at_ms = 1;
  return EncodeEnvelope(e);
}
std::string ErrorEnvelope(std::string message) {
  Envelope e;
  e.error_code = "producer_error";
  e.error = std::move(message);
  e.token = std::string(16, 't');
  return EncodeEnvelope(e);
}
Reply Hit(std::string envelope) {
  return Arr({Int(1), Str(std::move(envelope))});
}
Reply Acquired() {
  return Arr({Int(2)});
}
// The holder every busy reply names; the envelopes above carry its token.
const std::string kHolder(16, 't');
Reply Busy() {
  return Arr({Int(0), Int(5000), Str(kHolder)});
}
constexpr uint32_t kBusyPttl = 5000;

class FlightDistributedTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(Options{}); }
  void TearDown() override {
    if (!group_) return;
    bool closed = false;
    group_->Close([&] { closed = true; });
    clock_->RunPending();
    // Close drains the leases: answer what they wrote, then let the drain's
    // bound end whatever is left unanswered.
    // (The link is freed the moment the close completes: look at it only
    // while it has not.)
    while (!closed) {
      if (link_->Pending(ScriptId::kRelease) > 0) {
        link_->Answer(ScriptId::kRelease, Int(1));
      } else if (link_->Pending(ScriptId::kComplete) > 0) {
        link_->Answer(ScriptId::kComplete, Arr({Int(1), Int(0), Int(1)}));
      } else {
        break;
      }
      if (!closed) clock_->RunPending();
    }
    if (!closed) clock_->Advance(2 * Options{}.redis.command_timeout_ms + 100);
    EXPECT_TRUE(closed);
  }
  void Make(Options options) {
    options.redis.host = "fake";
    clock_ = std::make_unique<test::ManualScheduler>();
    auto link = std::make_unique<FakeLink>();
    link_ = link.get();
    group_ = new GroupImpl(std::move(options), clock_.get(), std::move(link));
  }
  Producer Parked() {
    return [this](const ProducerContext&, Done done) {
      ++runs_;
      parked_.push_back(std::move(done));
    };
  }
  Call DoKey(std::string_view key, CallOptions o = {}) {
    Call call = group_->Do(
        key, Parked(), [this](const Result& r) { results_.push_back(r); }, o);
    EXPECT_TRUE(call.ok());
    return call;
  }

  std::unique_ptr<test::ManualScheduler> clock_;
  FakeLink* link_ = nullptr;
  GroupImpl* group_ = nullptr;
  int runs_ = 0;
  std::vector<Done> parked_;
  std::vector<Result> results_;
};

TEST_F(FlightDistributedTest, OneRoundTripPerFlightHoweverManyCallers) {
  for (int i = 0; i < 5; ++i) (void)DoKey("k");
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 1);
}

TEST_F(FlightDistributedTest, LeaderRunsTheProducerAndCompletesAtomically) {
  (void)DoKey("k");
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  ASSERT_EQ(runs_, 1);
  parked_[0]("v");
  const ScriptCall* complete = link_->Last(ScriptId::kComplete);
  ASSERT_NE(complete, nullptr);
  EXPECT_EQ(complete->keys, (std::vector<std::string>{"sf:{k}:result", "sf:{k}:lock"}));
  EXPECT_EQ(complete->args[3], "sf:{k}:ch");
  EXPECT_EQ(complete->args[2], std::to_string(Options{}.result_ttl_ms));
  Envelope published;
  ASSERT_TRUE(
      DecodeEnvelope(complete->args[1], DecodeLimits::ForMaxValue(1 << 20), &published).ok());
  EXPECT_TRUE(published.ok);
  EXPECT_EQ(published.value, "v");
  EXPECT_EQ(published.token, complete->args[0]);  // the lock token
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_EQ(results_[0].source, Source::kLed);
  EXPECT_EQ(results_[1].source, Source::kJoined);
}

TEST_F(FlightDistributedTest, CachedResultAnswersWithoutProducer) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Hit(OkEnvelope("cached")));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "cached");
  EXPECT_EQ(results_[0].source, Source::kRedisCache);
  EXPECT_EQ(runs_, 0);
  EXPECT_EQ(group_->stats().redis_hits, 1u);
}

TEST_F(FlightDistributedTest, FollowerRechecksOnceSubscribedAndFindsTheResult) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  ASSERT_EQ(link_->ListenerCount(), 1u);
  EXPECT_EQ(link_->listeners["sf:{k}:ch"].size(), 1u);
  link_->OnlyListener()->OnSubscribed();
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  link_->Answer(ScriptId::kGetOrLock, Hit(OkEnvelope("v")));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].source, Source::kFallbackGet);  // found by a re-check
  EXPECT_EQ(group_->stats().fallback_checks, 0u);       // none timed
  EXPECT_EQ(link_->ListenerCount(), 0u);
}

TEST_F(FlightDistributedTest, FollowerIsWokenByTheMessage) {
  (void)DoKey("k");
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage(OkEnvelope("v"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_EQ(results_[0].source, Source::kPubSub);
  EXPECT_EQ(results_[1].source, Source::kJoined);
  EXPECT_EQ(results_[0].value(), "v");
  EXPECT_EQ(group_->stats().pubsub_wakes, 1u);
  EXPECT_EQ(link_->ListenerCount(), 0u);
}

TEST_F(FlightDistributedTest, ErrorMessageFailsFollowersFast) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage(ErrorEnvelope("upstream down"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kProducerError);
  EXPECT_EQ(results_[0].status.message(), "upstream down");
}

TEST_F(FlightDistributedTest, MalformedMessageIsDroppedAndRechecked) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage("garbage\xc1");
  EXPECT_EQ(group_->stats().malformed_dropped, 1u);
  EXPECT_TRUE(results_.empty());
  link_->Answer(ScriptId::kGetOrLock, Hit(OkEnvelope("v")));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "v");
  EXPECT_EQ(results_[0].source, Source::kFallbackGet);
}

TEST_F(FlightDistributedTest, GarbageFloodCostsAtMostOneRecheckPerSpacing) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  for (int i = 0; i < 100; ++i) link_->OnlyListener()->OnMessage("garbage");
  EXPECT_EQ(group_->stats().malformed_dropped, 100u);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);  // the first check + one re-check
  link_->Answer(ScriptId::kGetOrLock, Busy());
  clock_->Advance(100);
  link_->OnlyListener()->OnMessage("garbage");
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 3);  // one more per 100 ms
}

TEST_F(FlightDistributedTest, RecheckWhenTheLockWouldLapseTakesItOver) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnSubscribed();
  link_->Answer(ScriptId::kGetOrLock, Busy());
  clock_->Advance(kBusyPttl - 1);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);  // no polling before the lapse
  clock_->Advance(1 + Options{}.lock_ttl_ms / 50);
  EXPECT_EQ(group_->stats().fallback_checks, 1u);
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(group_->stats().takeovers, 1u);
  EXPECT_EQ(link_->ListenerCount(), 0u);  // a leader does not listen
  parked_[0]("v");
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].source, Source::kLed);
}

TEST_F(FlightDistributedTest, RecheckHitIsSourcedAsFallback) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Busy());
  clock_->Advance(kBusyPttl + Options{}.lock_ttl_ms / 50);
  link_->Answer(ScriptId::kGetOrLock, Hit(OkEnvelope("v")));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].source, Source::kFallbackGet);
  EXPECT_EQ(group_->stats().fallback_hits, 1u);
}

TEST_F(FlightDistributedTest, WatchdogRenewsTheLockWhileTheProducerRuns) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  uint32_t ttl = Options{}.lock_ttl_ms;
  clock_->Advance(ttl / 3);
  EXPECT_EQ(link_->Count(ScriptId::kRenew), 1);
  clock_->Advance(ttl / 3);
  EXPECT_EQ(link_->Count(ScriptId::kRenew), 2);
  EXPECT_EQ(link_->Last(ScriptId::kRenew)->args[1], std::to_string(ttl));
  parked_[0]("v");
  clock_->Advance(ttl);
  EXPECT_EQ(link_->Count(ScriptId::kRenew), 2);  // stops with the production
}

TEST_F(FlightDistributedTest, ProducerErrorIsPublishedAndNotStored) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0].Fail("boom");
  const ScriptCall* complete = link_->Last(ScriptId::kComplete);
  ASSERT_NE(complete, nullptr);
  EXPECT_EQ(complete->args[2], "0");  // error_ttl_ms = 0: not stored
  Envelope published;
  ASSERT_TRUE(
      DecodeEnvelope(complete->args[1], DecodeLimits::ForMaxValue(1 << 20), &published).ok());
  EXPECT_FALSE(published.ok);
  EXPECT_EQ(published.error, "boom");
}

TEST_F(FlightDistributedTest, LostCompletionIsSentAgainOnReconnect) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  std::vector<std::string> first_args = link_->Last(ScriptId::kComplete)->args;
  link_->up_ = false;
  link_->Drop(ScriptId::kComplete);
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 1);  // nothing until the link is back
  link_->up_ = true;
  group_->OnLinkState(true);
  ASSERT_EQ(link_->Count(ScriptId::kComplete), 2);
  EXPECT_EQ(link_->Last(ScriptId::kComplete)->args, first_args);  // same token, same envelope
  EXPECT_EQ(group_->stats().completion_retries, 1u);
  link_->Answer(ScriptId::kComplete, Arr({Int(1), Int(0), Int(1)}));
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 2);  // answered: not sent again
}

TEST_F(FlightDistributedTest, LostCompletionIsNotRetriedOnceItsLeaseIsOver) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  link_->up_ = false;
  link_->Drop(ScriptId::kComplete);
  clock_->Advance(Options{}.lock_ttl_ms);  // a follower may lead by now
  link_->up_ = true;
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 1);
  EXPECT_EQ(group_->stats().leases_lost, 1u);
  EXPECT_EQ(link_->Count(ScriptId::kRelease), 1);  // a lost renewal answer may have kept it
}

TEST_F(FlightDistributedTest, TooLargeValueTellsFollowersSo) {
  Options options;
  options.max_value_bytes = 3;
  TearDown();
  Make(options);
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_FALSE(parked_[0]("1234"));  // refused: Done says so (v1 said true)
  Envelope published;
  ASSERT_TRUE(DecodeEnvelope(link_->Last(ScriptId::kComplete)->args[1],
                             DecodeLimits::ForMaxValue(3), &published)
                  .ok());
  EXPECT_EQ(published.error_code, "too_large");
  clock_->RunPending();
  EXPECT_EQ(results_[0].status.code(), Code::kTooLarge);
}

TEST_F(FlightDistributedTest, RedisDownDegradesToLocalOnly) {
  link_->up_ = false;
  (void)DoKey("k");
  (void)DoKey("k");
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(link_->calls.size(), 0u);
  parked_[0]("v");
  EXPECT_EQ(link_->calls.size(), 0u);  // nothing published while down
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_TRUE(results_[0].ok());
  EXPECT_TRUE(results_[0].degraded);
  EXPECT_TRUE(results_[1].degraded);
  EXPECT_EQ(group_->stats().degraded_calls, 1u);
}

TEST_F(FlightDistributedTest, RedisDownFailsFastWhenConfigured) {
  Options options;
  options.when_redis_down = DegradedMode::kFailFast;
  TearDown();
  Make(options);
  link_->up_ = false;
  (void)DoKey("k");
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kUnavailable);
  EXPECT_EQ(runs_, 0);
}

TEST_F(FlightDistributedTest, FirstCallsWaitForTheFirstConnectAttempt) {
  link_->settled_ = false;
  (void)DoKey("k");
  EXPECT_EQ(link_->calls.size(), 0u);
  link_->settled_ = true;
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 1);
}

TEST_F(FlightDistributedTest, FollowerWithNoCallerLeftStopsListening) {
  (void)DoKey("k", CallOptions{100});
  link_->Answer(ScriptId::kGetOrLock, Busy());
  EXPECT_EQ(link_->ListenerCount(), 1u);
  clock_->Advance(100);
  EXPECT_EQ(link_->ListenerCount(), 0u);
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kTimeout);
}

TEST_F(FlightDistributedTest, CloseReleasesAHeldLock) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  bool closed = false;
  group_->Close([&] { closed = true; });
  clock_->RunPending();
  EXPECT_EQ(link_->Count(ScriptId::kRelease), 1);
  EXPECT_FALSE(closed);  // waits for the release's reply
  link_->Answer(ScriptId::kRelease, Int(1));
  clock_->RunPending();
  EXPECT_TRUE(closed);
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kClosed);
  group_ = nullptr;
}

TEST_F(FlightDistributedTest, InvalidationDropsTheKeyFromL1) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Hit(OkEnvelope("v1")));
  clock_->RunPending();
  ASSERT_EQ(link_->listeners["sf:invalidate"].size(), 1u);
  ChannelListener* invalidations = *link_->listeners["sf:invalidate"].begin();
  invalidations->OnMessage("k");
  EXPECT_EQ(group_->stats().invalidations, 1u);
  (void)DoKey("k");
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);  // not an L1 hit any more
}

TEST_F(FlightDistributedTest, ForgetWaitsForTheLinkAndSurvivesADrop) {
  link_->settled_ = false;
  group_->Forget("k");
  EXPECT_EQ(link_->Count(ScriptId::kForget), 0);
  link_->settled_ = true;
  group_->OnLinkState(true);
  ASSERT_EQ(link_->Count(ScriptId::kForget), 1);
  link_->Drop(ScriptId::kForget);
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kForget), 2);
  EXPECT_EQ(link_->Last(ScriptId::kForget)->args[1], "k");
}

TEST_F(FlightDistributedTest, ForgetDeletesAndBroadcasts) {
  group_->Forget("k");
  const ScriptCall* forget = link_->Last(ScriptId::kForget);
  ASSERT_NE(forget, nullptr);
  EXPECT_EQ(forget->keys, (std::vector<std::string>{"sf:{k}:result"}));
  EXPECT_EQ(forget->args, (std::vector<std::string>{"sf:invalidate", "k"}));
}

// --- protocol v2: each of these was a way v1 lost a lock token or trusted a
// message it should not have (docs/protocol.md, "Protocol v2").

std::string EnvelopeFrom(std::string token, std::string value) {
  Envelope e;
  e.ok = true;
  e.value = std::move(value);
  e.token = std::move(token);
  e.produced_at_ms = 1;
  return EncodeEnvelope(e);
}

TEST_F(FlightDistributedTest, LockTakenAfterTheLastCallerLeftIsReleased) {
  (void)DoKey("k", CallOptions{100});
  clock_->Advance(100);  // the caller times out while the first check is out
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(group_->stats().inflight, 0u);  // the slot is free at once
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_EQ(runs_, 0);
  ASSERT_EQ(link_->Count(ScriptId::kRelease), 1);
  EXPECT_EQ(link_->Last(ScriptId::kRelease)->args[0], link_->calls[0].args[0]);
  link_->Answer(ScriptId::kRelease, Int(1));
  EXPECT_EQ(group_->stats().leases_released, 1u);
}

TEST_F(FlightDistributedTest, RecheckThatTakesTheLockAfterTheMessageReleasesIt) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnSubscribed();  // a re-check goes out
  link_->OnlyListener()->OnMessage(OkEnvelope("v"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  link_->Answer(ScriptId::kGetOrLock, Acquired());  // the late {2}
  EXPECT_EQ(link_->Count(ScriptId::kRelease), 1);
  EXPECT_EQ(runs_, 0);
}

TEST_F(FlightDistributedTest, FollowerWhoseCallersLeftDuringTheFirstCheckDoesNotFollow) {
  (void)DoKey("k", CallOptions{100});
  clock_->Advance(100);
  link_->Answer(ScriptId::kGetOrLock, Busy());
  EXPECT_EQ(link_->ListenerCount(), 0u);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 1);
}

TEST_F(FlightDistributedTest, FirstCheckWithALostAnswerKeepsItsTokenAndRechecks) {
  (void)DoKey("k");
  std::string token = link_->calls[0].args[0];
  link_->up_ = false;
  link_->Drop(ScriptId::kGetOrLock);  // it may have taken the lock
  EXPECT_EQ(runs_, 0);                // not an outage: no local run
  EXPECT_EQ(group_->stats().degraded_calls, 0u);
  EXPECT_EQ(group_->stats().unknown_outcomes, 1u);
  link_->up_ = true;
  group_->OnLinkState(true);
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  EXPECT_EQ(link_->Last(ScriptId::kGetOrLock)->args[0], token);  // the same token
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_EQ(runs_, 1);
}

TEST_F(FlightDistributedTest, FirstCheckDegradesOnlyWhenTheLinkCannotBeReestablished) {
  (void)DoKey("k");
  link_->up_ = false;
  link_->Drop(ScriptId::kGetOrLock);
  group_->OnLinkState(false);  // a reconnect attempt failed
  EXPECT_EQ(runs_, 1);
  parked_[0]("v");
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_TRUE(results_[0].degraded);
  // The token that may hold the lock is released once Redis is back.
  link_->up_ = true;
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kRelease), 1);
}

TEST_F(FlightDistributedTest, FatalErrorReplyFailsCallersWithTheServersWords) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock,
                Err("OOM command not allowed when used memory > 'maxmemory'"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kUnavailable);
  EXPECT_NE(results_[0].status.message().find("OOM"), std::string::npos);
  EXPECT_FALSE(results_[0].degraded);
  EXPECT_EQ(runs_, 0);
  EXPECT_EQ(group_->stats().error_replies_fatal, 1u);
}

TEST_F(FlightDistributedTest, UnfollowedClusterRedirectionNamesTheClusterOption) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Err("MOVED 15880 127.0.0.1:7002"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_NE(results_[0].status.message().find("RedisOptions::cluster"), std::string::npos);
  EXPECT_EQ(runs_, 0);
}

TEST_F(FlightDistributedTest, RetryableErrorReplyIsRetriedWithBackoff) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Err("BUSY Redis is busy running a script"));
  EXPECT_EQ(group_->stats().error_replies_retryable, 1u);
  clock_->Advance(9);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 1);
  clock_->Advance(1);
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  link_->Answer(ScriptId::kGetOrLock, Err("LOADING Redis is loading the dataset in memory"));
  clock_->Advance(20);
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 3);
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_EQ(runs_, 1);
}

TEST_F(FlightDistributedTest, MessageFromAnotherTokenIsDroppedAndRechecked) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage(EnvelopeFrom(std::string(16, 'x'), "forged"));
  EXPECT_EQ(group_->stats().foreign_dropped, 1u);
  EXPECT_TRUE(results_.empty());
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  link_->Answer(ScriptId::kGetOrLock, Busy());  // the holder is still at work
  link_->OnlyListener()->OnMessage(OkEnvelope("real"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "real");
}

// A hot key whose flights end every millisecond (faults_test's
// HotFailingKeyAcrossProcesses, seen under CI load): a foreign message starts
// a re-check; before its answer, the next holder's completion arrives on the
// subscriber connection — still foreign, and inside the re-check spacing.
// The answer then names that holder, whose message is gone: only a re-check
// after the spacing ends the wait (before the fix: none until the lock's
// PTTL, past every caller's deadline).
TEST_F(FlightDistributedTest, UntrustedMessageInsideTheSpacingStillRechecks) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage(EnvelopeFrom(std::string(16, 'x'), "older"));
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  std::string next(16, 'n');
  link_->OnlyListener()->OnMessage(EnvelopeFrom(next, "v2"));  // dropped: not yet known
  EXPECT_EQ(group_->stats().foreign_dropped, 2u);
  link_->Answer(ScriptId::kGetOrLock, Arr({Int(0), Int(5000), Str(next)}));
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  clock_->Advance(100);  // the spacing, far short of the lock's 5 s PTTL
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 3);
  link_->Answer(ScriptId::kGetOrLock, Hit(EnvelopeFrom(next, "v2")));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "v2");
  EXPECT_EQ(results_[0].source, Source::kFallbackGet);
}

TEST_F(FlightDistributedTest, LaterHolderSeenOnARecheckIsTrusted) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Busy());
  std::string later(16, 'n');
  clock_->Advance(kBusyPttl + Options{}.lock_ttl_ms / 50);
  link_->Answer(ScriptId::kGetOrLock, Arr({Int(0), Int(5000), Str(later)}));
  link_->OnlyListener()->OnMessage(EnvelopeFrom(later, "v2"));
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "v2");
}

TEST_F(FlightDistributedTest, ReleaseNoticeFromTheHolderRechecksAtOnce) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Busy());
  link_->OnlyListener()->OnMessage(EncodeReleaseNotice(kHolder, 1));
  ASSERT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(group_->stats().takeovers, 1u);
}

TEST_F(FlightDistributedTest, RenewAnsweredZeroMeansTheLeaseIsLost) {
  (void)DoKey("k", CallOptions{60000});
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  uint32_t ttl = Options{}.lock_ttl_ms;
  clock_->Advance(ttl / 3);
  link_->Answer(ScriptId::kRenew, Int(0));
  EXPECT_EQ(group_->stats().leases_lost, 1u);
  clock_->Advance(ttl);
  EXPECT_EQ(link_->Count(ScriptId::kRenew), 1);  // stopped renewing
  EXPECT_TRUE(parked_[0]("stale"));
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 0);  // a lost lease writes nothing
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "stale");  // its own caller still gets it
}

TEST_F(FlightDistributedTest, CompletionFencedOutCountsALostLease) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  link_->Answer(ScriptId::kComplete, Arr({Int(0), Int(0), Int(0)}));
  EXPECT_EQ(group_->stats().leases_lost, 1u);
}

TEST_F(FlightDistributedTest, CompletionRefusedForGoodReleasesTheLock) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  link_->Answer(ScriptId::kComplete, Err("NOPERM this user has no permissions"));
  ASSERT_EQ(link_->Count(ScriptId::kRelease), 1);  // a follower takes over at once
  EXPECT_EQ(group_->stats().error_replies_fatal, 1u);
}

TEST_F(FlightDistributedTest, CompletionRefusedAsBusyIsRetried) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  link_->Answer(ScriptId::kComplete, Err("BUSY Redis is busy running a script"));
  clock_->Advance(10);
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 2);
}

TEST_F(FlightDistributedTest, CloseWaitsForACompletionInFlight) {
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  parked_[0]("v");
  bool closed = false;
  group_->Close([&] { closed = true; });
  clock_->RunPending();
  EXPECT_FALSE(closed);
  link_->Answer(ScriptId::kComplete, Arr({Int(1), Int(0), Int(1)}));
  clock_->RunPending();
  EXPECT_TRUE(closed);
  group_ = nullptr;
}

TEST_F(FlightDistributedTest, CloseReleasesALockTakenByACheckStillInFlight) {
  (void)DoKey("k");
  bool closed = false;
  group_->Close([&] { closed = true; });
  clock_->RunPending();
  EXPECT_FALSE(closed);
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  ASSERT_EQ(link_->Count(ScriptId::kRelease), 1);
  link_->Answer(ScriptId::kRelease, Int(1));
  clock_->RunPending();
  EXPECT_TRUE(closed);
  EXPECT_EQ(runs_, 0);
  group_ = nullptr;
}

TEST_F(FlightDistributedTest, DoneTellsWhetherTheValueWasTaken) {
  Options options;
  options.producer_timeout_ms = 50;
  TearDown();
  Make(options);
  (void)DoKey("k");
  link_->Answer(ScriptId::kGetOrLock, Acquired());
  clock_->Advance(50);  // the producer timed out
  EXPECT_FALSE(parked_[0]("late"));
  EXPECT_EQ(group_->stats().done_ignored, 0u);  // refused by the slot, not the flight
}

TEST_F(FlightDistributedTest, StoredResultThisVersionCannotReadRunsLocally) {
  (void)DoKey("k");
  // A v99 writer's result: v1 readers must not wait for it to expire.
  std::string newer = "\x83\xa1v\x63\xa2ok\xc3\xa3val\xc4\x01x";
  link_->Answer(ScriptId::kGetOrLock, Hit(newer));
  EXPECT_EQ(group_->stats().undecodable_results, 1u);
  ASSERT_EQ(runs_, 1);
  parked_[0]("local");
  EXPECT_EQ(link_->Count(ScriptId::kComplete), 0);  // the readable result is left alone
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "local");
  EXPECT_TRUE(results_[0].degraded);
}

TEST_F(FlightDistributedTest, FlightStartedDuringAReconnectWaitsForTheAttempt) {
  group_->OnLinkState(true);  // the connection was up ...
  link_->up_ = false;
  group_->OnLinkState(false);  // ... and was lost: a blip so far
  (void)DoKey("k");
  (void)DoKey("j");
  EXPECT_EQ(runs_, 0);  // neither degraded nor failed fast
  link_->up_ = true;
  group_->OnLinkState(true);
  EXPECT_EQ(link_->Count(ScriptId::kGetOrLock), 2);
}

TEST_F(FlightDistributedTest, FlightStartedDuringAReconnectDegradesWhenTheAttemptFails) {
  group_->OnLinkState(true);
  link_->up_ = false;
  group_->OnLinkState(false);
  (void)DoKey("k");
  group_->OnLinkState(false);  // the reconnect attempt failed: Redis is down
  ASSERT_EQ(runs_, 1);
  parked_[0]("v");
  clock_->RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_TRUE(results_[0].degraded);
  (void)DoKey("j");  // and later flights degrade at once
  EXPECT_EQ(runs_, 2);
}

}  // namespace
}  // namespace singleflight::internal
