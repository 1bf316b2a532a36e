// The scripts' contracts (docs/protocol.md, "Scripts") against a real
// redis-server, run through ScriptRunner over a real RedisConnection.
#include "lua_scripts.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "key_naming.h"
#include "redis_connection.h"
#include "support/loop_helpers.h"
#include "support/redis_server.h"
#include "token.h"

namespace singleflight::internal {
namespace {

using namespace std::string_literals;
using test::RedisServer;
using test::RunUntil;

constexpr char kPrefix[] = "sftest:";

struct Answer {
  Status status;
  Reply reply;
};

// A subscriber connection that records every pub/sub reply.
class Subscriber {
 public:
  Subscriber(uv_loop_t* loop, internal::Scheduler* scheduler, const RedisOptions& options)
      : loop_(loop) {
    RedisConnection::Handlers handlers;
    handlers.on_state = [this](bool up, const Status&) { up_ = up; };
    handlers.on_push = [this](const Reply& push) { pushes_.push_back(push); };
    connection_ = RedisConnection::Create(loop, scheduler, options,
                                          RedisConnection::Mode::kSubscriber, std::move(handlers));
  }

  // Returns once the server has confirmed the subscription.
  bool Subscribe(const std::string& channel) {
    if (!RunUntil(loop_, [&] { return up_; })) return false;
    if (!connection_->Subscribe({channel})) return false;
    return RunUntil(loop_, [&] { return Find("subscribe", channel) != nullptr; });
  }

  // The payload of the first message on channel, once it arrives.
  std::optional<std::string> WaitMessage(const std::string& channel) {
    if (!RunUntil(loop_, [&] { return Find("message", channel) != nullptr; })) return {};
    return Find("message", channel)->elements[2].str;
  }

  void Close(bool* closed) {
    connection_->Close([closed] { *closed = true; });
  }

 private:
  const Reply* Find(const std::string& kind, const std::string& channel) const {
    for (const Reply& push : pushes_) {
      if (push.elements.size() >= 3 && push.elements[0].str == kind &&
          push.elements[1].str == channel) {
        return &push;
      }
    }
    return nullptr;
  }

  uv_loop_t* loop_;
  RedisConnection* connection_ = nullptr;  // frees itself after Close
  bool up_ = false;
  std::vector<Reply> pushes_;
};

class LuaScripts : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);  // first: TearDown closes it even after a skip
    scheduler_ = std::make_unique<test::LoopScheduler>(&loop_);
    SF_START_REDIS(server_);
    options_.host = server_.host();
    options_.port = server_.port();
    RedisConnection::Handlers handlers;
    handlers.on_state = [this](bool up, const Status&) {
      up_ = up;
      if (!up) return;
      ++connects_;
      runner_->OnConnected();
    };
    connection_ = RedisConnection::Create(&loop_, scheduler_->get(), options_,
                                          RedisConnection::Mode::kCommand, std::move(handlers));
    runner_ = std::make_unique<ScriptRunner>(connection_);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return up_; }));
    ASSERT_TRUE(RunUntil(&loop_, [&] { return AllShasKnown(); }));
  }

  void TearDown() override {
    runner_.reset();
    bool closed = connection_ == nullptr;  // null when SetUp skipped or failed early
    if (connection_) connection_->Close([&] { closed = true; });
    bool subscriber_closed = !subscriber_;
    if (subscriber_) subscriber_->Close(&subscriber_closed);
    EXPECT_TRUE(RunUntil(&loop_, [&] { return closed && subscriber_closed; }));
    scheduler_.reset();
    EXPECT_TRUE(test::Drain(&loop_));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  bool AllShasKnown() const {
    for (size_t i = 0; i < kScriptCount; ++i) {
      if (runner_->sha(static_cast<ScriptId>(i)).empty()) return false;
    }
    return true;
  }

  // Runs a script and waits for its one answer; fails the test on a
  // transport error.
  Reply Run(ScriptId id, std::vector<std::string> keys, std::vector<std::string> args) {
    std::optional<Answer> answer;
    runner_->Run(id, std::move(keys), std::move(args),
                 [&](const Status& status, const Reply& reply) {
                   answer = Answer{status, reply};
                 });
    EXPECT_TRUE(RunUntil(&loop_, [&] { return answer.has_value(); }));
    if (!answer) return {};
    EXPECT_TRUE(answer->status.ok()) << answer->status.ToString();
    return answer->reply;
  }

  Subscriber& subscriber() {
    if (!subscriber_)
      subscriber_ = std::make_unique<Subscriber>(&loop_, scheduler_->get(), options_);
    return *subscriber_;
  }

  Reply Redis(const std::vector<std::string>& argv) { return server_.Command(argv); }
  long long Integer(const std::vector<std::string>& argv) { return Redis(argv).integer; }

  RedisServer server_;
  uv_loop_t loop_{};
  std::unique_ptr<test::LoopScheduler> scheduler_;
  RedisOptions options_;
  RedisConnection* connection_ = nullptr;  // frees itself after Close
  std::unique_ptr<ScriptRunner> runner_;
  std::unique_ptr<Subscriber> subscriber_;
  bool up_ = false;
  int connects_ = 0;
  const FlightKeys keys_ = NameFlight(kPrefix, "user:{42}\0\xff"s);
  const std::string token_ = RandomToken();
  const std::string other_token_ = RandomToken();
};

// Checks an integer array reply element by element.
void ExpectInts(const Reply& reply, std::vector<long long> expected) {
  ASSERT_EQ(reply.type, Reply::Type::kArray) << reply.str;
  ASSERT_EQ(reply.elements.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(reply.elements[i].type, Reply::Type::kInteger) << "element " << i;
    EXPECT_EQ(reply.elements[i].integer, expected[i]) << "element " << i;
  }
}

std::string Envelopeish(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 7 + 0xf0);
  return bytes;
}

// --- sha handling --------------------------------------------------------------

TEST_F(LuaScripts, LearnsEveryShaFromScriptLoad) {
  for (size_t i = 0; i < kScriptCount; ++i) {
    const std::string& sha = runner_->sha(static_cast<ScriptId>(i));
    EXPECT_EQ(sha.size(), 40u);
    Reply exists = Redis({"SCRIPT", "EXISTS", sha});
    ASSERT_EQ(exists.elements.size(), 1u);
    EXPECT_EQ(exists.elements[0].integer, 1) << ScriptName(static_cast<ScriptId>(i));
  }
}

TEST_F(LuaScripts, RunsByEvalBeforeAnyShaIsKnown) {
  ScriptRunner fresh(connection_);  // never told OnConnected
  std::optional<Answer> answer;
  fresh.Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "10000"},
            [&](const Status& status, const Reply& reply) {
              answer = Answer{status, reply};
            });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return answer.has_value(); }));
  ExpectInts(answer->reply, {kGetOrLockAcquired});
  // The miss started a load, so later calls go by EVALSHA.
  EXPECT_TRUE(RunUntil(&loop_, [&] { return !fresh.sha(ScriptId::kGetOrLock).empty(); }));
}

TEST_F(LuaScripts, FallsBackToEvalOnNoScript) {
  const std::string sha = runner_->sha(ScriptId::kGetOrLock);
  ASSERT_EQ(Redis({"SCRIPT", "FLUSH"}).str, "OK");
  ASSERT_EQ(Redis({"CONFIG", "RESETSTAT"}).str, "OK");

  ExpectInts(Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "10000"}),
             {kGetOrLockAcquired});
  // One EVALSHA that met NOSCRIPT, then one EVAL that did the work.
  std::string stats = Redis({"INFO", "commandstats"}).str;
  EXPECT_NE(stats.find("cmdstat_evalsha:calls=1,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("cmdstat_eval:calls=1,"), std::string::npos) << stats;

  // The sha is learned again and the server has the script again.
  ASSERT_TRUE(RunUntil(&loop_, [&] { return runner_->sha(ScriptId::kGetOrLock) == sha; }));
  EXPECT_EQ(Redis({"SCRIPT", "EXISTS", sha}).elements.at(0).integer, 1);
}

TEST_F(LuaScripts, WorksAcrossAServerRestart) {
  ASSERT_TRUE(server_.Restart());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return connects_ == 2 && up_; }));
  // The new server starts with an empty script cache; the runner answers
  // anyway (by a reload on connect, or by EVAL on NOSCRIPT).
  ExpectInts(Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "10000"}),
             {kGetOrLockAcquired});
  Reply busy = Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {other_token_, "10000"});
  ASSERT_EQ(busy.elements.size(), 3u);
  EXPECT_EQ(busy.elements[0].integer, kGetOrLockBusy);
  EXPECT_GT(busy.elements[1].integer, 0);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return AllShasKnown(); }));
  const std::string sha = runner_->sha(ScriptId::kRenew);
  EXPECT_EQ(Redis({"SCRIPT", "EXISTS", sha}).elements.at(0).integer, 1);
}

TEST_F(LuaScripts, PendingCallsAnswerAfterTheRunnerIsGone) {
  std::optional<Answer> answer;
  runner_->Run(ScriptId::kRelease, {keys_.lock}, {token_},
               [&](const Status& status, const Reply& reply) {
                 answer = Answer{status, reply};
               });
  runner_.reset();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return answer.has_value(); }));
  EXPECT_TRUE(answer->status.ok());
  EXPECT_EQ(answer->reply.integer, 0);
}

// --- GetOrLock -------------------------------------------------------------------

TEST_F(LuaScripts, GetOrLockTakesAFreeLock) {
  ExpectInts(Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "10000"}),
             {kGetOrLockAcquired});
  EXPECT_EQ(Redis({"GET", keys_.lock}).str, token_);
  long long pttl = Integer({"PTTL", keys_.lock});
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 10000);
}

TEST_F(LuaScripts, GetOrLockReportsAnotherHoldersPttl) {
  Redis({"SET", keys_.lock, other_token_, "PX", "10000"});
  Reply reply = Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "5000"});
  ASSERT_EQ(reply.elements.size(), 3u);
  EXPECT_EQ(reply.elements[0].integer, kGetOrLockBusy);
  EXPECT_GT(reply.elements[1].integer, 0);
  EXPECT_LE(reply.elements[1].integer, 10000);
  EXPECT_EQ(reply.elements[2].str, other_token_);  // v2: followers learn the holder
  EXPECT_EQ(Redis({"GET", keys_.lock}).str, other_token_);
}

TEST_F(LuaScripts, GetOrLockReturnsTheStoredEnvelope) {
  const std::string envelope = Envelopeish(300);
  Redis({"SET", keys_.result, envelope, "PX", "10000"});
  Reply reply = Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "10000"});
  ASSERT_EQ(reply.elements.size(), 2u);
  EXPECT_EQ(reply.elements[0].integer, kGetOrLockHit);
  EXPECT_EQ(reply.elements[1].type, Reply::Type::kString);
  EXPECT_EQ(reply.elements[1].str, envelope);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);  // a hit takes no lock
}

TEST_F(LuaScripts, GetOrLockIsIdempotentForItsOwnToken) {
  ExpectInts(Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "1000"}),
             {kGetOrLockAcquired});
  ExpectInts(Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "60000"}),
             {kGetOrLockAcquired});
  EXPECT_GT(Integer({"PTTL", keys_.lock}), 1000);  // the retry reset the TTL
}

TEST_F(LuaScripts, GetOrLockGivesAStrayLockATtl) {
  Redis({"SET", keys_.lock, "left by hand"});
  Reply reply = Run(ScriptId::kGetOrLock, {keys_.result, keys_.lock}, {token_, "7000"});
  ASSERT_EQ(reply.elements.size(), 3u);
  EXPECT_EQ(reply.elements[0].integer, kGetOrLockBusy);
  EXPECT_EQ(reply.elements[1].integer, 7000);
  EXPECT_EQ(reply.elements[2].str, "left by hand");
  long long pttl = Integer({"PTTL", keys_.lock});
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 7000);
}

// --- Renew -------------------------------------------------------------------------

TEST_F(LuaScripts, RenewExtendsOnlyItsOwnLock) {
  Redis({"SET", keys_.lock, token_, "PX", "1000"});
  EXPECT_EQ(Run(ScriptId::kRenew, {keys_.lock}, {other_token_, "60000"}).integer, 0);
  EXPECT_LE(Integer({"PTTL", keys_.lock}), 1000);
  EXPECT_EQ(Run(ScriptId::kRenew, {keys_.lock}, {token_, "60000"}).integer, 1);
  EXPECT_GT(Integer({"PTTL", keys_.lock}), 1000);
}

TEST_F(LuaScripts, RenewOfAMissingLockFails) {
  EXPECT_EQ(Run(ScriptId::kRenew, {keys_.lock}, {token_, "60000"}).integer, 0);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

// --- Complete ------------------------------------------------------------------------

TEST_F(LuaScripts, CompleteStoresPublishesAndReleases) {
  ASSERT_TRUE(subscriber().Subscribe(keys_.channel));
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  const std::string envelope = Envelopeish(200);

  ExpectInts(Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                 {token_, envelope, "5000", keys_.channel}),
             {1, 1, 1});
  EXPECT_EQ(subscriber().WaitMessage(keys_.channel), envelope);
  EXPECT_EQ(Redis({"GET", keys_.result}).str, envelope);
  long long pttl = Integer({"PTTL", keys_.result});
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 5000);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

TEST_F(LuaScripts, CompleteWithZeroTtlPublishesWithoutStoring) {
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  ExpectInts(Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                 {token_, "error envelope", "0", keys_.channel}),
             {1, 0, 0});
  EXPECT_EQ(Integer({"EXISTS", keys_.result}), 0);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

TEST_F(LuaScripts, CompleteOfALostLeaseWritesNothing) {
  Redis({"SET", keys_.lock, other_token_, "PX", "10000"});
  Redis({"SET", keys_.result, "newer result", "PX", "10000"});
  ExpectInts(Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                 {token_, "late result", "5000", keys_.channel}),
             {0, 0, 0});
  EXPECT_EQ(Redis({"GET", keys_.lock}).str, other_token_);
  EXPECT_EQ(Redis({"GET", keys_.result}).str, "newer result");  // fenced: not replaced
}

TEST_F(LuaScripts, CompleteOfALapsedLockWritesNothing) {
  ExpectInts(Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                 {token_, "late result", "5000", keys_.channel}),
             {0, 0, 0});
  EXPECT_EQ(Integer({"EXISTS", keys_.result}), 0);
}

TEST_F(LuaScripts, CompleteRefusedStorePublishesAndReleasesAnyway) {
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  ASSERT_EQ(Redis({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).str, "OK");
  ASSERT_EQ(Redis({"CONFIG", "SET", "maxmemory", "1"}).str, "OK");
  Reply reply = Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                    {token_, "envelope", "5000", keys_.channel});
  ASSERT_EQ(Redis({"CONFIG", "SET", "maxmemory", "0"}).str, "OK");
  ExpectInts(reply, {1, 0, 0});  // published, not stored
  EXPECT_EQ(Integer({"EXISTS", keys_.result}), 0);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

TEST_F(LuaScripts, ReleasePublishesItsNotice) {
  ASSERT_TRUE(subscriber().Subscribe(keys_.channel));
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  EXPECT_EQ(Run(ScriptId::kRelease, {keys_.lock}, {token_, keys_.channel, "notice"}).integer, 1);
  EXPECT_EQ(subscriber().WaitMessage(keys_.channel), "notice");
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

TEST_F(LuaScripts, CompleteRefusesANonNumericTtl) {
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  Reply reply = Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                    {token_, "envelope", "soon", keys_.channel});
  EXPECT_TRUE(reply.is_error());
  EXPECT_EQ(Integer({"EXISTS", keys_.result}), 0);
  EXPECT_EQ(Redis({"GET", keys_.lock}).str, token_);
}

TEST_F(LuaScripts, CompleteCarriesALargeEnvelopeIntact) {
  // Large arguments go by EVAL rather than EVALSHA; same contract.
  ASSERT_TRUE(subscriber().Subscribe(keys_.channel));
  Redis({"SET", keys_.lock, token_, "PX", "10000"});
  const std::string envelope = Envelopeish(size_t{256} * 1024);
  ExpectInts(Run(ScriptId::kComplete, {keys_.result, keys_.lock},
                 {token_, envelope, "5000", keys_.channel}),
             {1, 1, 1});
  EXPECT_EQ(subscriber().WaitMessage(keys_.channel), envelope);
  EXPECT_EQ(Redis({"GET", keys_.result}).str, envelope);
}

// --- Release ---------------------------------------------------------------------------

TEST_F(LuaScripts, ReleaseDeletesOnlyItsOwnLock) {
  Redis({"SET", keys_.lock, other_token_, "PX", "10000"});
  EXPECT_EQ(Run(ScriptId::kRelease, {keys_.lock}, {token_}).integer, 0);
  EXPECT_EQ(Redis({"GET", keys_.lock}).str, other_token_);
  EXPECT_EQ(Run(ScriptId::kRelease, {keys_.lock}, {other_token_}).integer, 1);
  EXPECT_EQ(Integer({"EXISTS", keys_.lock}), 0);
}

// --- Forget ------------------------------------------------------------------------------

TEST_F(LuaScripts, ForgetDeletesTheResultAndBroadcastsTheRawKey) {
  const std::string key = "user:{42}\0\xff"s;
  const std::string channel = InvalidationChannel(kPrefix);
  ASSERT_TRUE(subscriber().Subscribe(channel));
  Redis({"SET", keys_.result, "envelope"});

  EXPECT_EQ(Run(ScriptId::kForget, {keys_.result}, {channel, key}).integer, 1);
  EXPECT_EQ(subscriber().WaitMessage(channel), key);
  EXPECT_EQ(Integer({"EXISTS", keys_.result}), 0);
  EXPECT_EQ(Run(ScriptId::kForget, {keys_.result}, {channel, key}).integer, 0);
}

}  // namespace
}  // namespace singleflight::internal
