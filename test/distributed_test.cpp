// Distributed flights against a real redis-server: several groups (each with
// its own connections, as separate processes would have) and real worker
// processes. Assertions are on counts, values, statuses and sources, never on
// elapsed time.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <deque>
#include <map>
#include <memory>
#include <set>

#include "envelope.h"
#include "key_naming.h"
#include "singleflight/group.h"
#include "support/child_process.h"
#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

using test::ChildProcess;
using test::RedisServer;
using test::RunUntil;
using test::Work;

class DistributedTest : public test::FleetTest {
 protected:
  // Publishes until someone receives it: the receiver count is how the test
  // learns that a follower's subscription is live.
  bool PublishUntilReceived(const std::string& channel, const std::string& payload) {
    return RunUntil(&loop_, [&] {
      uv_run(&loop_, UV_RUN_NOWAIT);
      return redis_.Command({"PUBLISH", channel, payload}).integer >= 1;
    });
  }

  long long Counter(const std::string& name) {
    internal::Reply r = redis_.Command({"GET", name});
    return r.is_nil() ? 0 : std::stoll(r.str);
  }
};

// --- in-process groups, each with its own connections -------------------------

TEST_F(DistributedTest, TwoGroupsShareOneExecution) {
  Group& a = NewGroup();
  Group& b = NewGroup();
  Work& work = NewWork();
  auto& results = NewResults();
  // No need to wait for the connections: a flight started before the first
  // connect attempt settles waits for it, so both calls go through Redis.
  Call(a, "k", work.After(100, "value"), &results);
  Call(b, "k", work.After(100, "value"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_EQ(work.runs, 1);
  std::multiset<Source> sources;
  for (auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.status.ToString();
    EXPECT_EQ(r.value(), "value");
    sources.insert(r.source);
  }
  EXPECT_EQ(sources.count(Source::kLed), 1u);
  EXPECT_EQ(a.stats().leads + b.stats().leads, 1u);
}

// Options::keep_loop_alive = false, as the Node binding uses it: a connected,
// idle group leaves the loop with nothing that keeps it alive (so Node can
// exit), while a call still completes as long as something else keeps the
// loop running (here the producer's own timer). A default group, connected
// and idle, does keep the loop alive: that is what the check tells apart.
TEST_F(DistributedTest, GroupThatDoesNotKeepTheLoopAliveLetsItEmpty) {
  Options options = BaseOptions();
  options.keep_loop_alive = false;
  Group& unrefd = NewGroup(options);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(unrefd, "k", work.After(1, "v"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_EQ(results[0].value(), "v");
  EXPECT_EQ(results[0].source, Source::kLed);  // it went through Redis
  // A few turns let the closes of the producer's and RunUntil's timers
  // finish (bounded: a handle that keeps the loop alive must fail the
  // check below, not spin here).
  for (int turn = 0; turn < 10 && uv_run(&loop_, UV_RUN_NOWAIT) != 0; ++turn) {
  }
  EXPECT_EQ(uv_loop_alive(&loop_), 0);

  Group& refd = NewGroup();
  Call(refd, "k2", work.Now("w"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_NE(uv_loop_alive(&loop_), 0);
}

TEST_F(DistributedTest, ResultStoredInRedisAnswersTheNextGroup) {
  Group& a = NewGroup();
  Work& work = NewWork();
  auto& results = NewResults();
  Call(a, "k", work.After(1, "stored"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  ASSERT_TRUE(WaitStored("k"));
  Group& b = NewGroup();
  Call(b, "k", work.After(1, "not used"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_EQ(results[1].value(), "stored");
  EXPECT_EQ(results[1].source, Source::kRedisCache);
  EXPECT_EQ(work.runs, 1);
}

TEST_F(DistributedTest, LateFollowerFindsTheResultWithoutWaitingForTheFallback) {
  // A "leader" in another process holds the lock; it stores its result
  // without publishing, i.e. its message went out before we subscribed.
  Options options = BaseOptions();
  options.fallback_interval_ms = 60000;  // longer than the caller's deadline
  Group& follower = NewGroup(options);
  internal::FlightKeys names = internal::NameFlight("sf:", "k");
  ASSERT_EQ(redis_.Command({"SET", names.lock, std::string(16, 'o'), "PX", "30000"}).str, "OK");
  Work& work = NewWork();
  auto& results = NewResults();
  Call(follower, "k", work.Parked(), &results, 20000);
  internal::Envelope envelope;
  envelope.ok = true;
  envelope.value = "published-early";
  envelope.token = std::string(16, 'o');
  redis_.Command({"SET", names.result, internal::EncodeEnvelope(envelope), "PX", "30000"});
  redis_.Command({"DEL", names.lock});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_TRUE(results[0].ok()) << results[0].status.ToString();
  EXPECT_EQ(results[0].value(), "published-early");
  EXPECT_EQ(results[0].source, Source::kRedisCache);
  EXPECT_EQ(follower.stats().fallback_checks, 0u);
  EXPECT_EQ(work.runs, 0);
}

TEST_F(DistributedTest, GarbageOnTheChannelIsDroppedAndCounted) {
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(leader, "k", work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.Parked(), &followed);
  std::string channel = internal::NameFlight("sf:", "k").channel;
  internal::Envelope future;
  future.ok = true;
  future.value = "x";
  std::string valid = internal::EncodeEnvelope(future);
  std::vector<std::string> garbage = {
      "random bytes \x01\xff\xc1",
      valid.substr(0, valid.size() / 2),       // truncated
      std::string("\xdd\x10\x00\x00\x00", 5),  // array32 claiming 2^28 elements
      std::string("\xdf\x7f\xff\xff\xff", 5),  // map32 claiming 2^31 pairs
      valid + "trailing",                      // trailing bytes
  };
  ASSERT_TRUE(PublishUntilReceived(channel, garbage[0]));
  for (size_t i = 1; i < garbage.size(); ++i) redis_.Command({"PUBLISH", channel, garbage[i]});
  ASSERT_TRUE(
      RunUntil(&loop_, [&] { return follower.stats().malformed_dropped >= garbage.size(); }));
  EXPECT_TRUE(followed.empty());
  work.parked[0]("real");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1 && led.size() == 1; }));
  EXPECT_EQ(followed[0].value(), "real");
  EXPECT_EQ(work.runs, 1);
}

TEST_F(DistributedTest, OversizedValueOnTheChannelIsDropped) {
  Options options = BaseOptions();
  options.max_value_bytes = 16;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(leader, "k", work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.Parked(), &followed);
  internal::Envelope big;
  big.ok = true;
  big.value = std::string(1024, 'x');
  big.token = std::string(16, 't');
  ASSERT_TRUE(PublishUntilReceived(internal::NameFlight("sf:", "k").channel,
                                   internal::EncodeEnvelope(big)));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return follower.stats().malformed_dropped >= 1; }));
  work.parked[0]("small");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1; }));
  EXPECT_EQ(followed[0].value(), "small");
}

TEST_F(DistributedTest, ProducerErrorFailsFollowersFast) {
  Options options = BaseOptions();
  options.fallback_interval_ms = 60000;  // only the message can wake them in time
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(leader, "k", work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.Parked(), &followed);
  // Wait until the follower's re-check after subscribing has been answered:
  // from then on it only listens, so the failure reaches it as a message (a
  // re-check still in flight could find the lock released and lead instead).
  ASSERT_TRUE(RunUntil(&loop_, [&] { return follower.stats().checks >= 2; }));
  work.parked[0].Fail("upstream said no");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1; }));
  EXPECT_EQ(followed[0].status.code(), Code::kProducerError);
  EXPECT_EQ(followed[0].status.message(), "upstream said no");
  EXPECT_EQ(followed[0].source, Source::kPubSub);
}

TEST_F(DistributedTest, ForgetReachesTheOtherGroupsL1) {
  Group& a = NewGroup();
  Group& b = NewGroup();
  Work& work = NewWork();
  auto& results = NewResults();
  Call(b, "k", work.After(1, "v1"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  // The leader answers its callers before its Complete reaches Redis: a
  // Forget on another connection can be read first and the SET land after it
  // (stress_ci run 2 saw "v1" again). Forget then has nothing to undo.
  ASSERT_TRUE(WaitStored("k"));
  Call(b, "k", work.After(1, "unused"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  ASSERT_EQ(results[1].source, Source::kLocalCache);
  a.Forget("k");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return b.stats().invalidations >= 1; }));
  Call(b, "k", work.After(1, "v2"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 3; }));
  EXPECT_EQ(results[2].value(), "v2");
  EXPECT_EQ(work.runs, 2);
}

TEST_F(DistributedTest, WatchdogKeepsSlowWorkToOneExecution) {
  Options options = BaseOptions();
  // Renewed every 500 ms, the lease survives a 1 s stall of this process:
  // margin for a machine ten times slower than a quiet one.
  options.lock_ttl_ms = 1500;
  Group& a = NewGroup(options);
  Group& b = NewGroup(options);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(a, "k", work.After(3500, "slow"), &results);  // more than two lock TTLs
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(b, "k", work.After(3500, "slow"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_EQ(work.runs, 1);
  for (auto& r : results) EXPECT_EQ(r.value(), "slow");
  EXPECT_EQ(b.stats().takeovers, 0u);
}

TEST_F(DistributedTest, PubSubConnectionKilledMidFlight) {
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  Call(leader, "k", work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.Parked(), &followed);
  std::string channel = internal::NameFlight("sf:", "k").channel;
  ASSERT_TRUE(PublishUntilReceived(channel, "probe"));
  redis_.Command({"CLIENT", "KILL", "TYPE", "pubsub"});
  // The subscriber reconnects and re-subscribes by itself.
  ASSERT_TRUE(PublishUntilReceived(channel, "probe"));
  work.parked[0]("after the kill");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1 && led.size() == 1; }));
  EXPECT_EQ(followed[0].value(), "after the kill");
  // Later flights work too.
  Call(follower, "k2", work.After(1, "later"), &followed);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 2; }));
  EXPECT_EQ(followed[1].value(), "later");
  // Both groups' subscribers were killed and came back: Stats says so.
  for (Group* group : {&leader, &follower}) {
    EXPECT_GE(group->stats().subscriber_errors, 1u);
    EXPECT_GE(group->stats().subscriber_reconnects, 1u);
  }
}

TEST_F(DistributedTest, RedisRestartMidFlightEndsEveryCallerClearly) {
  Options options = BaseOptions();
  options.redis.reconnect_max_ms = 200;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(leader, "k", work.After(300, "v"), &results, 15000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  Call(follower, "k", work.After(300, "v"), &results, 15000);
  ASSERT_TRUE(redis_.Restart());
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return results.size() == 2; }, 30000));
  for (auto& r : results) {
    // A value, or a clear status: never a hang.
    EXPECT_TRUE(r.ok() || r.status.code() == Code::kTimeout ||
                r.status.code() == Code::kUnavailable)
        << r.status.ToString();
  }
  // After the restart, a new flight goes through Redis again.
  ASSERT_TRUE(RunUntil(&loop_, [&] { return leader.stats().reconnects >= 1; }));
  auto& later = NewResults();
  Call(leader, "k-later", work.After(1, "later"), &later);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return later.size() == 1; }));
  EXPECT_EQ(later[0].value(), "later");
  EXPECT_EQ(internal::Reply::Type::kString,
            redis_.Command({"GET", internal::NameFlight("sf:", "k-later").result}).type);
}

TEST_F(DistributedTest, RedisDownAtStartCoalescesLocally) {
  Options options = BaseOptions();
  redis_.Stop();
  Group& group = NewGroup(options);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(group, "k", work.After(10, "local"), &results);
  Call(group, "k", work.After(10, "local"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_EQ(work.runs, 1);
  for (auto& r : results) {
    EXPECT_EQ(r.value(), "local");
    EXPECT_TRUE(r.degraded);
  }
  EXPECT_GE(group.stats().degraded_calls, 1u);
}

TEST_F(DistributedTest, RedisDownAtStartFailsFastWhenConfigured) {
  Options options = BaseOptions();
  options.when_redis_down = DegradedMode::kFailFast;
  redis_.Stop();
  Group& group = NewGroup(options);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(group, "k", work.After(10, "never"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_EQ(results[0].status.code(), Code::kUnavailable);
  EXPECT_EQ(work.runs, 0);
}

// --- real processes -------------------------------------------------------------

// RunWorkers (the fleet fixture) starts real sf_worker processes.
class MultiProcessTest : public DistributedTest {};

TEST_F(MultiProcessTest, ProcessesTimesCallersOnOneKeyRunOnce) {
  auto outputs = RunWorkers(4, {"--callers", "10", "--work-ms", "200"});
  std::set<std::string> values;
  for (auto& out : outputs) {
    EXPECT_TRUE(WIFEXITED(out.exit_status) && WEXITSTATUS(out.exit_status) == 0);
    ASSERT_EQ(out.results.size(), 10u);
    for (auto& r : out.results) {
      EXPECT_EQ(r[3], "ok") << r[5];
      values.insert(r[5]);
    }
  }
  EXPECT_EQ(values.size(), 1u);  // every caller got the same value
  EXPECT_EQ(Counter("sf:exec:key-0"), 1);
}

TEST_F(MultiProcessTest, KKeysMeanKExecutions) {
  auto outputs = RunWorkers(3, {"--callers", "12", "--keys", "4", "--work-ms", "100"});
  std::map<std::string, std::set<std::string>> values;
  for (auto& out : outputs) {
    ASSERT_EQ(out.results.size(), 12u);
    for (auto& r : out.results) values[r[2]].insert(r[5]);
  }
  ASSERT_EQ(values.size(), 4u);
  for (auto& [key, seen] : values) {
    EXPECT_EQ(seen.size(), 1u) << key;
    EXPECT_EQ(Counter("sf:exec:" + key), 1) << key;
  }
}

TEST_F(MultiProcessTest, ProducerErrorReachesEveryProcess) {
  auto outputs =
      RunWorkers(3, {"--callers", "5", "--work-ms", "100", "--fail", "--fallback-ms", "60000"});
  for (auto& out : outputs) {
    ASSERT_EQ(out.results.size(), 5u);
    for (auto& r : out.results) {
      EXPECT_EQ(r[3], "producer_error");
      EXPECT_EQ(r[5], "failed");  // the message's first word: "failed by <pid>"
    }
  }
  EXPECT_EQ(Counter("sf:exec:key-0"), 1);
}

TEST_F(MultiProcessTest, LeaderKilledMidWorkIsTakenOver) {
  auto outputs = RunWorkers(3, {"--callers", "4", "--work-ms", "1000", "--crash", "--lock-ttl-ms",
                                "1500", "--fallback-ms", "100"});
  int killed = 0, takeovers = 0;
  std::set<std::string> values;
  for (auto& out : outputs) {
    if (WIFSIGNALED(out.exit_status) && WTERMSIG(out.exit_status) == SIGKILL) {
      ++killed;
      continue;
    }
    ASSERT_EQ(out.results.size(), 4u) << "a surviving caller hung";
    for (auto& r : out.results) {
      EXPECT_EQ(r[3], "ok");
      values.insert(r[5]);
    }
    takeovers += out.stats.find("takeovers=1") != std::string::npos;
  }
  EXPECT_EQ(killed, 1);
  EXPECT_EQ(takeovers, 1);
  EXPECT_EQ(values.size(), 1u);
  EXPECT_EQ(Counter("sf:exec:key-0"), 2);  // the killed one, and the takeover
}

TEST_F(MultiProcessTest, ForgetInOneProcessReachesAnotherProcesssL1) {
  // Process B caches key-0 in its L1 for a minute; this process Forgets the
  // key; B's next call must run the producer again, not answer from L1.
  ChildProcess b;
  ASSERT_TRUE(
      b.Spawn(SF_HELPER_sf_worker, {"--redis", redis_.host() + ":" + std::to_string(redis_.port()),
                                    "--rounds", "2", "--l1-ttl-ms", "60000", "--work-ms", "1"}));
  std::string line;
  ASSERT_TRUE(b.ReadLine(&line, 10000));
  ASSERT_EQ(line, "ready");
  ASSERT_TRUE(b.WriteLine("go"));
  ASSERT_TRUE(b.ReadLine(&line, 20000));
  std::vector<std::string> first = test::SplitWords(line);
  ASSERT_EQ(first.size(), 6u) << line;
  EXPECT_EQ(first[3], "ok");
  ASSERT_TRUE(b.ReadLine(&line, 20000));
  ASSERT_EQ(line, "round 1 done");

  Group& a = NewGroup();
  a.Forget("key-0");
  // Wait for B to report that the broadcast reached it, running our loop so
  // the Forget goes out (it waits for our first connect).
  bool invalidated = false;
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    uv_run(&loop_, UV_RUN_NOWAIT);
    if (b.ReadLine(&line, 5)) invalidated = line.rfind("invalidated ", 0) == 0;
    return invalidated;
  }));
  ASSERT_TRUE(b.WriteLine("go"));
  ASSERT_TRUE(b.ReadLine(&line, 20000));
  std::vector<std::string> second = test::SplitWords(line);
  ASSERT_EQ(second.size(), 6u) << line;
  EXPECT_EQ(second[3], "ok");
  EXPECT_NE(second[4], "l1");      // not the stale L1 entry
  EXPECT_NE(second[5], first[5]);  // a new execution's value
  EXPECT_EQ(Counter("sf:exec:key-0"), 2);
  std::vector<std::string> rest;
  EXPECT_TRUE(b.ReadAll(&rest, 20000));
  int status = b.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(MultiProcessTest, WorkLongerThanTheLockStaysOneExecution) {
  // As in WatchdogKeepsSlowWorkToOneExecution: a lease that survives a 1 s stall.
  auto outputs = RunWorkers(3, {"--callers", "3", "--work-ms", "3500", "--lock-ttl-ms", "1500"});
  for (auto& out : outputs) {
    ASSERT_EQ(out.results.size(), 3u);
    for (auto& r : out.results) EXPECT_EQ(r[3], "ok");
  }
  EXPECT_EQ(Counter("sf:exec:key-0"), 1);
}

// --- least privilege and tenancy ---------------------------------------------

class AclTest : public test::FleetTest {
 protected:
  // The README's ACL line: the library's prefix, its channels, nothing else.
  AclTest()
      : FleetTest(RedisServer::Config{
            "",
            {"--user", "sf", "on", ">sf-secret", "~sf:*", "&sf:*", "+@read", "+@write", "+@pubsub",
             "+@scripting", "+@connection", "-@dangerous"}}) {}

  Group& NewUserGroup(const std::string& user, const std::string& password,
                      const std::string& prefix = "sf:") {
    Options options = BaseOptions();
    options.redis.username = user;
    options.redis.password = password;
    options.key_prefix = prefix;
    options.when_redis_down = DegradedMode::kFailFast;
    return NewGroup(options);
  }
};

TEST_F(AclTest, RestrictedUserRunsAFullFlight) {
  Group& a = NewUserGroup("sf", "sf-secret");
  Group& b = NewUserGroup("sf", "sf-secret");
  Work& work = NewWork();
  auto& results = NewResults();
  Call(a, "k", work.Now("v"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  ASSERT_TRUE(WaitStored("k"));
  Call(b, "k", work.Now("v"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  for (auto& r : results) EXPECT_TRUE(r.ok()) << r.status.ToString();
  EXPECT_EQ(results[1].source, Source::kRedisCache);  // went through Redis
  EXPECT_EQ(work.runs, 1);
  EXPECT_EQ(a.stats().redis_errors + b.stats().redis_errors, 0u);
}

TEST_F(AclTest, WrongPasswordIsAClearErrorNotAHang) {
  Group& group = NewUserGroup("sf", "wrong");
  Work& work = NewWork();
  auto& results = NewResults();
  Call(group, "k", work.Now("v"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_EQ(results[0].status.code(), Code::kUnavailable);
  EXPECT_NE(results[0].status.message().find("WRONGPASS"), std::string::npos)
      << results[0].status.message();
  EXPECT_EQ(work.runs, 0);
}

TEST_F(AclTest, PrefixOutsideTheUsersKeysIsAClearError) {
  // The user may only touch sf:*; a group with another prefix is refused by
  // Redis on every script, which the caller sees as a clear status.
  Group& group = NewUserGroup("sf", "sf-secret", "other:");
  Work& work = NewWork();
  auto& results = NewResults();
  Call(group, "k", work.Now("v"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_EQ(results[0].status.code(), Code::kUnavailable);
  EXPECT_NE(results[0].status.message().find("NOPERM"), std::string::npos)
      << results[0].status.message();
  EXPECT_EQ(work.runs, 0);
}

TEST_F(DistributedTest, GroupsWithDifferentPrefixesNeverMeet) {
  Options red = BaseOptions();
  red.key_prefix = "red:";
  Options blue = BaseOptions();
  blue.key_prefix = "blue:";
  Group& a = NewGroup(red);
  Group& b = NewGroup(blue);
  Work& work = NewWork();
  auto& results = NewResults();
  Call(a, "k", work.After(1, "red"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  Call(b, "k", work.After(1, "blue"), &results);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 2; }));
  EXPECT_EQ(results[0].value(), "red");
  EXPECT_EQ(results[1].value(), "blue");
  EXPECT_EQ(work.runs, 2);
  a.Forget("k");  // red's invalidation must not reach blue
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.stats().invalidations >= 1; }));
  EXPECT_EQ(b.stats().invalidations, 0u);
  EXPECT_EQ(redis_.Command({"EXISTS", "blue:{k}:result"}).integer, 1);
}

}  // namespace
}  // namespace singleflight
