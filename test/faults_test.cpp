// Fault injection against a real redis-server: the races and server replies
// that protocol v2 (DESIGN.md, "Protocol v2") promises to survive. Each TEST is
// one promised behaviour. Some need the server's real behaviour (a stalled
// server, BUSY, OOM, NOPERM, READONLY), some real processes (a leader stopped
// past its lease, a hot key across a fleet).
//
// Waiting is always for an event (a reply, a subscriber count, a stopped
// process, a counter); the only time bounds are RunUntil's hang guards and the
// callers' own deadlines, which are what is under test: "a caller must not wait
// out its deadline" means its deadline is shorter than the lease it would
// otherwise have to wait for.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "envelope.h"
#include "key_naming.h"
#include "singleflight/group.h"
#include "support/child_process.h"
#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/redis_server.h"
#include "token.h"

namespace singleflight {
namespace {

using test::ChildProcess;
using test::RedisServer;
using test::RunUntil;
using test::Work;
using test::WorkerOutput;

bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Runs until it is killed (SCRIPT KILL: it never writes), or for 10 s at most
// should the test die before killing it.
constexpr const char* kBusyScript = R"lua(
local t0 = redis.call('TIME')
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 10000000 then return 'done' end
end
)lua";

class FaultTest : public test::FleetTest {
 protected:
  FaultTest() = default;
  explicit FaultTest(RedisServer::Config config) : FleetTest(std::move(config)) {}

  void TearDown() override {
    // Undo what a failed test may have left, so the groups can close.
    redis_.Resume();
    redis_.Command({"CONFIG", "SET", "maxmemory", "0"});
    FleetTest::TearDown();
  }

  // Two warmed-up groups: leader_ runs "k" with a parked producer, and
  // follower_ waits for it, subscribed and settled — from then on only the
  // leader's completion (or a takeover) can answer the follower.
  void LeadAndFollow(const Options& options, uint32_t follower_timeout_ms) {
    leader_ = &NewGroup(options);
    Group& follower = NewGroup(options);
    WarmUp(*leader_);
    WarmUp(follower);
    work_ = &NewWork();
    led_ = &NewResults();
    followed_ = &NewResults();
    Call(*leader_, "k", work_->Parked(), led_);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return work_->runs == 1; }));
    uint64_t checks = follower.stats().checks;
    Call(follower, "k", work_->Now("a second execution"), followed_, follower_timeout_ms);
    ASSERT_TRUE(WaitForFollower(follower, checks));
    Settle(follower);
  }
  Group* leader_ = nullptr;
  Work* work_ = nullptr;
  std::vector<Result>* led_ = nullptr;
  std::vector<Result>* followed_ = nullptr;

  // A stored result this version cannot read (docs/protocol.md, "Reading
  // rules" 5): the caller does not wait out its deadline; the producer runs
  // here, flagged degraded, and the stored bytes are left for their readers.
  void ExpectUnreadableResultRunsLocally() {
    Group& group = NewGroup(FaultOptions());
    Work& work = NewWork();
    auto& results = NewResults();
    Call(group, "k", work.Now("ran locally"), &results, 10000);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
    ASSERT_TRUE(results[0].ok()) << results[0].status.ToString();
    EXPECT_EQ(results[0].value(), "ran locally");
    EXPECT_TRUE(results[0].degraded);
    EXPECT_EQ(group.stats().undecodable_results, 1u);
  }

  // One call on `group` whose first check the server refuses: the caller
  // gets kUnavailable carrying the server's `word` (OOM, NOPERM, READONLY),
  // flagged not degraded, and the producer never runs.
  void ExpectRefusedNotRun(Group& group, const std::string& word) {
    Work& work = NewWork();
    auto& results = NewResults();
    Call(group, "k", work.Now("ran locally"), &results, 10000);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
    EXPECT_EQ(results[0].status.code(), Code::kUnavailable) << results[0].status.ToString();
    EXPECT_NE(results[0].status.message().find(word), std::string::npos)
        << results[0].status.message();
    EXPECT_FALSE(results[0].degraded);
    EXPECT_EQ(work.runs, 0);
    EXPECT_GE(group.stats().error_replies_fatal, 1u);
  }

  // The fleet's options with the library's own follower timing: v2 re-checks
  // when a lock would lapse instead of on a fixed interval, and these tests
  // are about what the library does by default.
  Options FaultOptions() {
    Options options = BaseOptions();
    options.fallback_interval_ms = Options().fallback_interval_ms;
    return options;
  }

  static internal::FlightKeys Names(const std::string& key) {
    return internal::NameFlight("sf:", key);
  }

  // One flight on a key of its own: afterwards the group's connections are up
  // and its scripts loaded, so what follows is not a first connect.
  void WarmUp(Group& group) {
    Work& work = NewWork();
    auto& results = NewResults();
    Call(group, "warm-up-" + std::to_string(++warm_ups_), work.Now("warm"), &results);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
    ASSERT_TRUE(results[0].ok()) << results[0].status.ToString();
  }

  size_t CountKeys(const std::string& pattern) {
    return redis_.Command({"KEYS", pattern}).elements.size();
  }

  bool LockExists(const std::string& key) {
    return redis_.Command({"EXISTS", Names(key).lock}).integer == 1;
  }

  long long Subscribers(const std::string& channel) {
    internal::Reply reply = redis_.Command({"PUBSUB", "NUMSUB", channel});
    return reply.elements.size() == 2 ? reply.elements[1].integer : -1;
  }

  // Runs the loop until some connection is subscribed to the channel: the
  // subscription's confirmation is an event on our loop, so this never spins.
  bool WaitForSubscriber(const std::string& channel) {
    return RunUntil(&loop_, [&] { return Subscribers(channel) >= 1; });
  }

  // Runs the loop until a new call of `group` follows, subscribed: its first
  // check found the holder, it subscribed, and the check it sends once the
  // subscription is confirmed was answered (two checks past `checks_before`).
  // The channel's subscriber count would also count a leader of this process
  // that has not unsubscribed yet.
  bool WaitForFollower(Group& group, uint64_t checks_before) {
    return RunUntil(&loop_, [&] { return group.stats().checks >= checks_before + 2; });
  }

  // The value stored as the key's result, "<none>", or "<undecodable: why>".
  std::string StoredValue(const std::string& key, size_t max_value_bytes = 4u << 20) {
    internal::Reply stored = redis_.Command({"GET", Names(key).result});
    if (stored.type != internal::Reply::Type::kString) return "<none>";
    internal::Envelope envelope;
    Status status = internal::DecodeEnvelope(
        stored.str, internal::DecodeLimits::ForMaxValue(max_value_bytes), &envelope);
    if (!status.ok()) return "<undecodable: " + status.ToString() + ">";
    return envelope.ok ? envelope.value : "<error: " + envelope.error + ">";
  }

  void StoreResult(const std::string& key, const std::string& bytes) {
    ASSERT_EQ(redis_.Command({"SET", Names(key).result, bytes, "PX", "60000"}).str, "OK");
  }

  // A lock held by a leader that is not one of ours (no process renews it);
  // returns its token.
  std::string HoldLock(const std::string& key) {
    std::string token = internal::RandomToken();
    EXPECT_EQ(redis_.Command({"SET", Names(key).lock, token, "PX", "60000"}).str, "OK");
    return token;
  }

  static std::string EnvelopeOf(const std::string& value, const std::string& token) {
    internal::Envelope envelope;
    envelope.ok = true;
    envelope.value = value;
    envelope.token = token;
    envelope.produced_at_ms = internal::UnixNowMs();
    return internal::EncodeEnvelope(envelope);
  }

  // One call on a key whose result is already in Redis. Replies come in order
  // on the group's command connection, so when it is answered, every command
  // the group had sent before it has been answered too.
  std::string NewFenceKey() {
    std::string key = "fence-" + std::to_string(++fences_);
    StoreResult(key, EnvelopeOf("fence", internal::RandomToken()));
    return key;
  }
  void Fence(Group& group) { Fence(group, NewFenceKey()); }
  void Fence(Group& group, const std::string& key) {
    Work& work = NewWork();
    auto& results = NewResults();
    Call(group, key, work.Parked(), &results);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
    EXPECT_EQ(results[0].source, Source::kRedisCache);
  }

  // Lets a follower seen subscribed (or its check answered) finish what it
  // does next: its subscription's confirmation is in its socket by then, so
  // it is read while the first fence is under way, and a re-check it starts
  // on it is answered before the second fence is.
  void Settle(Group& group) {
    Fence(group);
    Fence(group);
  }

  // Every write is refused with OOM from now on (reads still work).
  void RefuseWrites() {
    ASSERT_EQ(redis_.Command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).str, "OK");
    ASSERT_EQ(redis_.Command({"CONFIG", "SET", "maxmemory", "1"}).str, "OK");
  }

  // Commands the server processed so far (commandstats counts the commands
  // scripts call too), except the test's own INFO and the pub/sub
  // (un)subscriptions, which follow the flight's life, not its waiting.
  long long CommandsProcessed() {
    long long total = 0;
    for (const auto& [name, calls] : redis_.CommandCalls()) {
      if (name == "info" || name == "subscribe" || name == "unsubscribe" || name == "psubscribe" ||
          name == "punsubscribe") {
        continue;
      }
      total += calls;
    }
    return total;
  }

  // Closes a group and runs the loop until its Close callback has run.
  bool CloseAndWait(Group& group) {
    auto closed = std::make_shared<bool>(false);
    group.Close([closed] { *closed = true; });
    return RunUntil(&loop_, [closed] { return *closed; });
  }

  // Reads a worker's lines until one starts with `prefix` (kept in *seen).
  static bool ReadUntil(ChildProcess& child, const std::string& prefix,
                        std::vector<std::string>* seen) {
    std::string line;
    while (child.ReadLine(&line, 20000)) {
      seen->push_back(line);
      if (StartsWith(line, prefix)) return true;
    }
    return false;
  }

  int warm_ups_ = 0;
  int fences_ = 0;
};

// --- a lock taken by a flight that no longer wants it -----------------------------

// Producer errors are not cached, so a hot failing key is a stream of short
// flights; followers' re-checks keep meeting flights that have just ended. A
// re-check that takes the lock after its flight ended (by the error message,
// the last caller leaving, or Close) must give the lock straight back: the
// lease (30 s) outlives every caller's deadline (5 s), so a lock left behind
// shows as timeouts, and as a lock key at the end.
TEST_F(FaultTest, HotFailingKeyAcrossProcessesStrandsNoCallerAndLeavesNoLock) {
  auto outputs = RunWorkers(4, {"--callers", "8", "--fail", "--work-ms", "1", "--duration-ms",
                                "1000", "--timeout-ms", "5000", "--lock-ttl-ms", "30000"});
  std::map<std::string, int> codes;
  int calls = 0;
  std::string all_stats;  // for the failure messages
  for (auto& out : outputs) all_stats += "\n" + out.stats;
  for (auto& out : outputs) {
    EXPECT_TRUE(WIFEXITED(out.exit_status) && WEXITSTATUS(out.exit_status) == 0)
        << "wait status " << out.exit_status << all_stats;
    for (auto& [code, count] : out.codes) {
      codes[code] += count;
      calls += count;
    }
  }
  EXPECT_GT(calls, 4 * 8);  // every caller called more than once
  for (auto& [code, count] : codes) {
    EXPECT_TRUE(code == "producer_error" || code == "ok")
        << count << " calls ended " << code << all_stats;
  }
  EXPECT_EQ(CountKeys("sf:*:lock"), 0u) << "a lock was left behind by a flight that had ended";
}

// The same race, made deterministic: a follower's re-check (started by a
// garbage message) goes out after the holder has deleted its lock, and the
// holder's message, already in the follower's socket behind the garbage, ends
// the flight before the re-check's answer "you have the lock" arrives. That
// late lock belongs to nobody unless it is released.
TEST_F(FaultTest, LockTakenByARecheckAfterTheMessageEndedTheFlightIsReleased) {
  Options options = FaultOptions();
  options.lock_ttl_ms = 60000;
  Group& follower = NewGroup(options);
  WarmUp(follower);
  std::string holder = HoldLock("k");
  Work& work = NewWork();
  auto& followed = NewResults();
  Call(follower, "k", work.Parked(), &followed);
  internal::FlightKeys names = Names("k");
  ASSERT_TRUE(WaitForSubscriber(names.channel));
  Settle(follower);

  // The holder completes: its lock goes, then garbage and its envelope are
  // published, all before the follower's loop reads any of it.
  internal::Reply done = redis_.Command(
      {"EVAL",
       "redis.call('DEL', KEYS[1]) redis.call('PUBLISH', KEYS[2], ARGV[1]) "
       "redis.call('PUBLISH', KEYS[2], ARGV[2]) return 1",
       "2", names.lock, names.channel, "garbage", EnvelopeOf("from-the-holder", holder)});
  ASSERT_EQ(done.integer, 1) << done.str;
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1; }));
  EXPECT_EQ(followed[0].value(), "from-the-holder") << followed[0].status.ToString();
  // The first fence's check may have been written before the re-check's
  // answer came back and sent the release; the second is sent after that
  // answer, so on the same connection it is answered after the release.
  Fence(follower);
  Fence(follower);
  EXPECT_FALSE(LockExists("k")) << "a re-check's lock outlived its flight";
  EXPECT_EQ(work.runs, 0);
}

// The same with the flight ended by its last caller leaving: the lock lapses,
// a re-check goes out, and the caller cancels before its answer arrives.
TEST_F(FaultTest, LockTakenByARecheckAfterTheLastCallerLeftIsReleased) {
  Options options = FaultOptions();
  options.lock_ttl_ms = 60000;
  Group& follower = NewGroup(options);
  WarmUp(follower);
  HoldLock("k");
  Work& work = NewWork();
  auto& followed = NewResults();
  singleflight::Call call = follower.Do(
      "k", work.Parked(), [&followed](const Result& r) { followed.push_back(r); },
      CallOptions{20000});
  ASSERT_TRUE(call.ok());
  internal::FlightKeys names = Names("k");
  ASSERT_TRUE(WaitForSubscriber(names.channel));
  Settle(follower);

  // The holder's lock lapses (gone without a message); garbage on the channel
  // makes the follower re-check.
  ASSERT_EQ(redis_
                .Command({"EVAL",
                          "redis.call('DEL', KEYS[1]) redis.call('PUBLISH', KEYS[2], ARGV[1]) "
                          "return 1",
                          "2", names.lock, names.channel, "garbage"})
                .integer,
            1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return follower.stats().malformed_dropped >= 1; }));
  // RunUntil stops in the turn that dropped the message; the re-check it
  // caused is written in the next turn, so its answer cannot have been read.
  EXPECT_TRUE(call.Cancel());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1; }));
  EXPECT_EQ(followed[0].status.code(), Code::kCancelled);
  // The first fence's check may have been written before the re-check's
  // answer came back and sent the release; the second is sent after that
  // answer, so on the same connection it is answered after the release.
  Fence(follower);
  Fence(follower);
  EXPECT_FALSE(LockExists("k")) << "a re-check's lock outlived its flight";
  EXPECT_EQ(work.runs, 0);
}

// Close one loop turn after 500 first checks went out: the checks are answered
// after the flights are gone, and each lock they took must still be released
// before Close completes.
TEST_F(FaultTest, CloseRightAfterFirstChecksLeavesNoLock) {
  Group& group = NewGroup(FaultOptions());
  WarmUp(group);
  Work& work = NewWork();
  auto& results = NewResults();
  for (int i = 0; i < 500; ++i) Call(group, "first-" + std::to_string(i), work.Parked(), &results);
  uv_run(&loop_, UV_RUN_NOWAIT);  // one turn: the checks are written
  ASSERT_TRUE(CloseAndWait(group));
  EXPECT_EQ(CountKeys("sf:*:lock"), 0u) << "Close left locks taken by its own first checks";
}

// A first check written to a stalled server times out (its outcome unknown);
// the server then wakes and runs it, taking the lock under a token whose
// flight has given up. The process must settle that token (re-check or
// release it) once it is back, so no lock is left that nobody will ever
// complete or release — and another process's callers get a value.
TEST_F(FaultTest, FirstCheckTimedOutOnAStalledServerLeavesNoOrphanLock) {
  Options stalled_options = FaultOptions();
  stalled_options.redis.command_timeout_ms = 200;
  stalled_options.redis.reconnect_max_ms = 200;
  stalled_options.lock_ttl_ms = 60000;  // an orphan lock would outlive every wait here
  Group& stalled = NewGroup(stalled_options);
  Options other_options = FaultOptions();
  other_options.lock_ttl_ms = 60000;
  Group& other = NewGroup(other_options);
  WarmUp(stalled);
  WarmUp(other);
  Work& work = NewWork();
  auto& first = NewResults();

  redis_.Pause();  // as in DEBUG SLEEP: nothing is read until it wakes
  Call(stalled, "k", work.After(20, "from-the-stalled-one"), &first);
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    Stats s = stalled.stats();
    return s.unknown_outcomes + s.redis_errors >= 1;  // the check timed out
  }));
  redis_.Resume();  // now the server runs the check nobody waits for

  ASSERT_TRUE(RunUntil(&loop_, [&] { return first.size() == 1 && !LockExists("k"); }))
      << "a lock is left under a token nobody uses (pttl "
      << redis_.Command({"PTTL", Names("k").lock}).integer << " ms)";

  auto& second = NewResults();
  Call(other, "k", work.After(20, "from-the-other-one"), &second, 5000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return second.size() == 1; }));
  EXPECT_TRUE(second[0].ok()) << second[0].status.ToString();
  EXPECT_LE(work.runs, 2);
  ASSERT_TRUE(CloseAndWait(stalled));
  ASSERT_TRUE(CloseAndWait(other));
  EXPECT_EQ(CountKeys("sf:*:lock"), 0u);
}

// --- Close drains what is in flight -------------------------------------------------

// 5,000 completions are queued when Close is called: Close must let every one
// reach Redis (stored result, released lock) before it calls back.
TEST_F(FaultTest, CloseWithThousandsOfCompletionsInFlightStoresEveryResult) {
  constexpr int kKeys = 5000;
  Group& group = NewGroup(FaultOptions());
  WarmUp(group);
  Work& work = NewWork();
  auto& results = NewResults();
  for (int i = 0; i < kKeys; ++i)
    Call(group, "flight-" + std::to_string(i), work.Parked(), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.parked.size() == kKeys; }));
  for (int i = 0; i < kKeys; ++i) work.parked[i]("value-" + std::to_string(i));
  ASSERT_TRUE(CloseAndWait(group));

  EXPECT_EQ(CountKeys("sf:{flight-*}:lock"), 0u);
  std::vector<std::string> mget = {"MGET"};
  for (int i = 0; i < kKeys; ++i) mget.push_back(Names("flight-" + std::to_string(i)).result);
  internal::Reply stored = redis_.Command(mget);
  ASSERT_EQ(stored.elements.size(), static_cast<size_t>(kKeys));
  int missing = 0, wrong = 0;
  for (int i = 0; i < kKeys; ++i) {
    if (stored.elements[i].type != internal::Reply::Type::kString) {
      ++missing;
      continue;
    }
    internal::Envelope envelope;
    Status status = internal::DecodeEnvelope(stored.elements[i].str,
                                             internal::DecodeLimits::ForMaxValue(1024), &envelope);
    wrong += !status.ok() || envelope.value != "value-" + std::to_string(i);
  }
  EXPECT_EQ(missing, 0) << "results lost by Close";
  EXPECT_EQ(wrong, 0);
}

TEST_F(FaultTest, LargeValueCompletedJustBeforeCloseIsStoredIntact) {
  constexpr size_t kBytes = 4u << 20;
  Options options = FaultOptions();
  options.max_value_bytes = kBytes;
  Group& group = NewGroup(options);
  WarmUp(group);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(group, "big", work.Parked(), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.parked.size() == 1; }));
  std::string big(kBytes, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) % 251);
  work.parked[0](big);
  ASSERT_TRUE(CloseAndWait(group));

  std::string stored = StoredValue("big", kBytes);
  EXPECT_EQ(stored.size(), kBytes) << stored.substr(0, 200);
  EXPECT_TRUE(stored == big) << "the stored value differs from the completed one";
  EXPECT_FALSE(LockExists("big"));
}

// --- the server's error replies ----------------------------------------------------

// BUSY (a script running past busy-reply-threshold) is retryable: the
// completion is sent again once the server is free, and the followers get the
// one execution's value instead of taking over after the lease lapses.
TEST_F(FaultTest, BusyReplyToCompleteIsRetried) {
  ASSERT_NO_FATAL_FAILURE(LeadAndFollow(FaultOptions(), 20000));
  Group& leader = *leader_;
  Work& work = *work_;
  auto& led = *led_;
  auto& followed = *followed_;

  ASSERT_EQ(redis_.Command({"CONFIG", "SET", "busy-reply-threshold", "100"}).str, "OK");
  auto script = redis_.Send({"EVAL", kBusyScript, "0"});
  // The script is running (past the threshold) once a PING is answered BUSY.
  bool busy = false;
  for (int i = 0; i < 10000 && !busy; ++i) busy = StartsWith(redis_.Command({"PING"}).str, "BUSY");
  ASSERT_TRUE(busy) << "the busy script did not start";

  work.parked[0]("value");  // the completion meets BUSY
  // Let the leader see its BUSY reply (and retry it) before the script ends;
  // bounded, because a version that drops the reply counts nothing.
  RunUntil(
      &loop_, [&] { return leader.stats().error_replies_retryable >= 1; }, 3000);
  internal::Reply kill;
  for (int i = 0; i < 100; ++i) {
    kill = redis_.Command({"SCRIPT", "KILL"});
    if (kill.str == "OK" || StartsWith(kill.str, "NOTBUSY")) break;
  }
  script->Wait();

  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1 && led.size() == 1; }));
  EXPECT_TRUE(followed[0].ok()) << followed[0].status.ToString();
  EXPECT_EQ(followed[0].value(), "value");
  EXPECT_EQ(work.runs, 1);
  EXPECT_GE(leader.stats().error_replies_retryable, 1u);
}

// OOM is not retryable and Redis is not down: the completion is refused, and
// the followers must hear about it (the value, a clear error, or a released
// lock) rather than wait out a lease that is longer than their deadline.
TEST_F(FaultTest, OomReplyToCompleteDoesNotStrandFollowers) {
  Options options = FaultOptions();
  options.lock_ttl_ms = 60000;
  ASSERT_NO_FATAL_FAILURE(LeadAndFollow(options, 10000));
  Group& leader = *leader_;
  Work& work = *work_;
  auto& followed = *followed_;

  RefuseWrites();
  work.parked[0]("value");  // Complete's SET is refused with OOM
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return followed.size() == 1; }, 30000));
  redis_.Command({"CONFIG", "SET", "maxmemory", "0"});

  const Result& r = followed[0];
  EXPECT_NE(r.status.code(), Code::kTimeout) << "the follower waited out its deadline";
  if (r.ok()) {
    EXPECT_EQ(r.value(), "value");
  } else {
    EXPECT_EQ(r.status.code(), Code::kUnavailable) << r.status.ToString();
  }
  EXPECT_FALSE(r.degraded);
  EXPECT_GE(leader.stats().error_replies_fatal, 1u);
}

// A first check refused by the server is the server's answer, not "Redis is
// down": the caller gets kUnavailable with the server's message, and nothing
// runs locally behind the fleet's back.
TEST_F(FaultTest, OomOnFirstCheckIsUnavailableNotALocalRun) {
  Group& group = NewGroup(FaultOptions());  // degrades to local-only when Redis is down
  WarmUp(group);
  RefuseWrites();
  ExpectRefusedNotRun(group, "OOM");
}

class NoScriptingUserTest : public FaultTest {
 protected:
  NoScriptingUserTest()
      : FaultTest(RedisServer::Config{
            "", {"--user", "sf", "on", ">sf-secret", "~sf:*", "&sf:*", "+@all", "-@scripting"}}) {}
};

TEST_F(NoScriptingUserTest, NoPermOnFirstCheckIsUnavailableNotALocalRun) {
  Options options = FaultOptions();
  options.redis.username = "sf";
  options.redis.password = "sf-secret";
  Group& group = NewGroup(options);
  ExpectRefusedNotRun(group, "NOPERM");
}

class ReplicaTest : public FaultTest {
 protected:
  void SetUp() override {
    FaultTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // A replica in sync, so no LOADING window can interleave with the test.
    redis_.Command({"CONFIG", "SET", "repl-diskless-sync-delay", "0"});
    replica_ = std::make_unique<RedisServer>(RedisServer::ReplicaOf(redis_));
    ASSERT_TRUE(replica_->Start());
    ASSERT_TRUE(redis_.WaitForReplicas(1));
  }

  std::unique_ptr<RedisServer> replica_;  // outlives the groups (TearDown closes them)
};

TEST_F(ReplicaTest, ReadOnlyReplicaIsUnavailableNotALocalRun) {
  Options options = FaultOptions();
  options.redis.port = replica_->port();
  Group& group = NewGroup(options);
  ExpectRefusedNotRun(group, "READONLY");
}

// --- followers -------------------------------------------------------------------

// Every caller gives up while its flight's first check is still unanswered
// (the server is stalled); the checks then find the keys locked by someone
// else. A flight with no caller left must end instead of following, and give
// back its max_inflight_keys slot.
TEST_F(FaultTest, FollowerFlightsWithoutCallersGiveBackTheirSlots) {
  constexpr int kKeys = 100;
  Options options = FaultOptions();
  options.max_inflight_keys = kKeys;
  options.redis.command_timeout_ms = 30000;  // the stall is not a timeout
  Group& group = NewGroup(options);
  WarmUp(group);
  for (int i = 0; i < kKeys; ++i) HoldLock("held-" + std::to_string(i));
  Work& work = NewWork();
  auto& gave_up = NewResults();

  redis_.Pause();
  for (int i = 0; i < kKeys; ++i) {
    Call(group, "held-" + std::to_string(i), work.Parked(), &gave_up, 50);
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return gave_up.size() == kKeys; }));
  for (auto& r : gave_up) EXPECT_EQ(r.status.code(), Code::kTimeout) << r.status.ToString();
  redis_.Resume();

  ASSERT_TRUE(RunUntil(&loop_, [&] { return group.stats().inflight == 0; }))
      << group.stats().inflight << " flights with no caller still hold a slot";
  auto& fresh = NewResults();
  for (int i = 0; i < kKeys; ++i) {
    Call(group, "fresh-" + std::to_string(i), work.Now("v"), &fresh, 10000);
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return fresh.size() == kKeys; }));
  for (auto& r : fresh) EXPECT_TRUE(r.ok()) << r.status.ToString();
}

// A well-formed envelope from a token that does not hold the lock (anyone may
// PUBLISH) is not the flight's result.
TEST_F(FaultTest, ForgedEnvelopeFromAnotherTokenIsDropped) {
  Group& leader = NewGroup(FaultOptions());
  Group& follower = NewGroup(FaultOptions());
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(leader, "k", work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.Now("a second execution"), &followed);
  std::string channel = Names("k").channel;
  ASSERT_TRUE(WaitForFollower(follower, 0));

  internal::Envelope forged;
  forged.ok = true;
  forged.value = "forged";
  forged.token = internal::RandomToken();
  forged.produced_at_ms = internal::UnixNowMs();
  ASSERT_GE(redis_.Command({"PUBLISH", channel, internal::EncodeEnvelope(forged)}).integer, 1);
  ASSERT_TRUE(
      RunUntil(&loop_, [&] { return follower.stats().foreign_dropped >= 1 || !followed.empty(); }));
  EXPECT_TRUE(followed.empty()) << "the follower accepted a forged message: "
                                << followed[0].value();

  work.parked[0]("real");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() >= 1 && led.size() == 1; }));
  EXPECT_EQ(followed.back().value(), "real");
  EXPECT_EQ(work.runs, 1);
}

// No polling: while the leader holds its lease, a follower's Redis traffic
// does not grow with how long it waits.
TEST_F(FaultTest, FollowerIssuesTheSameCommandsHoweverLongItWaits) {
  Group& group = NewGroup(FaultOptions());
  WarmUp(group);
  Work& work = NewWork();
  std::vector<long long> issued;
  for (uint32_t wait_ms : {50u, 200u, 2000u}) {
    std::string key = "held-" + std::to_string(wait_ms);
    HoldLock(key);  // a live leader's lease: 60 s, far past every wait
    std::string fence = NewFenceKey();
    long long before = CommandsProcessed();
    auto& waited = NewResults();
    Call(group, key, work.Parked(), &waited, wait_ms);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return waited.size() == 1; }));
    EXPECT_EQ(waited[0].status.code(), Code::kTimeout) << waited[0].status.ToString();
    Fence(group, fence);  // every command the follower sent has been answered
    issued.push_back(CommandsProcessed() - before);
  }
  EXPECT_EQ(issued[0], issued[1]) << "waited 50 ms vs 200 ms";
  EXPECT_EQ(issued[1], issued[2]) << "waited 200 ms vs 2000 ms";
  EXPECT_EQ(work.runs, 0);
}

// --- upgrades ----------------------------------------------------------------------

// A stored result written by a newer version (unknown "v", extra fields):
// callers must not wait out their deadline for it to expire.
TEST_F(FaultTest, StoredResultOfUnknownVersionDoesNotStrandCallers) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pack(buffer);
  std::string token = internal::RandomToken();
  pack.pack_map(6);
  pack.pack(std::string("v"));
  pack.pack(99);
  pack.pack(std::string("ok"));
  pack.pack(true);
  pack.pack(std::string("val"));
  pack.pack_bin(8);
  pack.pack_bin_body("from-v99", 8);
  pack.pack(std::string("tok"));
  pack.pack_bin(static_cast<uint32_t>(token.size()));
  pack.pack_bin_body(token.data(), static_cast<uint32_t>(token.size()));
  pack.pack(std::string("at"));
  pack.pack(internal::UnixNowMs());
  pack.pack(std::string("shape"));
  pack.pack(std::string("a field this version never heard of"));
  StoreResult("k", std::string(buffer.data(), buffer.size()));

  ExpectUnreadableResultRunsLocally();
}

TEST_F(FaultTest, StoredGarbageResultDoesNotStrandCallers) {
  StoreResult("k", std::string("\xc1 not msgpack \xff", 16));
  ExpectUnreadableResultRunsLocally();
}

// --- a stale leader (real processes) -------------------------------------------------

class StaleLeaderTest : public FaultTest {
 protected:
  // A worker that leads key-0 with a 300 ms lease and a producer the test
  // finishes, stopped (SIGSTOP) right after it started leading: its
  // watchdog cannot renew, so the lease lapses.
  void StartAndStopTheStaleLeader() {
    stale_ = SpawnWorker({"--park", "--lock-ttl-ms", "300", "--timeout-ms", "60000"});
    ASSERT_TRUE(stale_->WriteLine("go"));
    std::vector<std::string> seen;
    ASSERT_TRUE(ReadUntil(*stale_, "leading key-0", &seen));
    ASSERT_TRUE(stale_->Stop());
  }

  // Resumes the stale leader and lets it complete "old"; returns once Redis has
  // answered that completion (the worker's fence).
  void ResumeAndCompleteOld() {
    ASSERT_TRUE(stale_->Continue());
    ASSERT_TRUE(stale_->WriteLine("finish old"));
    std::vector<std::string> seen;
    ASSERT_TRUE(ReadUntil(*stale_, "finished", &seen));
  }

  WorkerOutput QuitTheStaleLeader() {
    stale_->WriteLine("quit");
    return Collect(*stale_);
  }

  Options NewerOptions() {
    Options options = FaultOptions();
    options.lock_ttl_ms = 3000;  // the newer lease must not lapse however slow the machine
    options.result_ttl_ms = 60000;
    return options;
  }

  std::unique_ptr<ChildProcess> stale_;
};

TEST_F(StaleLeaderTest, StaleLeaderDoesNotOverwriteTheNewerResult) {
  StartAndStopTheStaleLeader();
  Group& newer = NewGroup(NewerOptions());
  Work& work = NewWork();
  auto& results = NewResults();
  Call(newer, "key-0", work.Parked(), &results, 60000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));  // took the lapsed lease over
  work.parked[0]("new");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  ASSERT_EQ(StoredValue("key-0"), "new");

  ResumeAndCompleteOld();
  EXPECT_EQ(StoredValue("key-0"), "new") << "the stale leader replaced the newer result";
  WorkerOutput out = QuitTheStaleLeader();
  EXPECT_TRUE(WIFEXITED(out.exit_status) && WEXITSTATUS(out.exit_status) == 0);
  EXPECT_GE(out.Stat("leases_lost"), 1) << out.stats;
}

TEST_F(StaleLeaderTest, StaleLeaderDoesNotWakeTheNewerLeasesFollowers) {
  StartAndStopTheStaleLeader();
  Group& newer = NewGroup(NewerOptions());
  Group& follower = NewGroup(NewerOptions());
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(newer, "key-0", work.Parked(), &led, 60000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "key-0", work.Now("a third execution"), &followed, 60000);
  std::string channel = Names("key-0").channel;
  ASSERT_TRUE(WaitForFollower(follower, 0));

  ResumeAndCompleteOld();
  // Messages reach a subscriber in publish order: once the follower has
  // dropped a probe published after the stale completion, it has seen
  // whatever that completion published.
  redis_.Command({"PUBLISH", channel, "probe"});
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return follower.stats().malformed_dropped >= 1 || !followed.empty(); }));
  EXPECT_TRUE(followed.empty()) << "woken by the stale leader with " << followed[0].value();

  work.parked[0]("new");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() >= 1 && led.size() == 1; }));
  EXPECT_EQ(followed.back().value(), "new");
  EXPECT_EQ(work.runs, 1);
  QuitTheStaleLeader();
}

}  // namespace
}  // namespace singleflight
