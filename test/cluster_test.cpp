// Groups on a real Redis Cluster (test/support/redis_cluster.h), through the
// cluster link (RedisOptions::cluster): flights on every master, followers
// woken by sharded pub/sub, a fleet of real processes, a slot migrated by
// hand mid-flight and a master killed mid-flight. What the servers hold is
// read back through the fixture, which asks the servers, never the library.
//
// Waiting is for events (results, counters, server state); the only time
// bounds are RunUntil's hang guards and the callers' own deadlines.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "key_naming.h"
#include "singleflight/group.h"
#include "subscriber.h"
#include "support/child_process.h"
#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/redis_cluster.h"
#include "support/replies.h"

namespace singleflight {
namespace {

using internal::Reply;
using test::RedisCluster;
using test::RedisServer;
using test::RunUntil;
using test::Work;

class ClusterTest : public ::testing::Test {
 protected:
  ClusterTest() = default;
  explicit ClusterTest(RedisCluster::Config config) : cluster_(config) {}

  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);  // first: TearDown closes it even after a skip
    SF_START_REDIS_CLUSTER(cluster_);
  }
  void TearDown() override {
    for (auto& group : groups_) group->Close();
    EXPECT_TRUE(test::Drain(&loop_));
    groups_.clear();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // Options pointing at the first master, in cluster mode.
  Options ClusterOptions() {
    Options options;
    options.redis.host = cluster_.master(0).host();
    options.redis.port = cluster_.master(0).port();
    options.redis.cluster = true;
    options.lock_ttl_ms = 3000;
    return options;
  }
  Group& NewGroup(Options options) {
    groups_.push_back(std::make_unique<Group>(&loop_, std::move(options)));
    return *groups_.back();
  }
  Group& NewGroup() { return NewGroup(ClusterOptions()); }
  std::vector<Result>& NewResults() { return result_lists_.emplace_back(); }
  Work& NewWork() { return works_.emplace_back(&loop_); }

  void Call(Group& group, const std::string& key, Producer producer, std::vector<Result>* out,
            uint32_t timeout_ms = 20000) {
    auto call = group.Do(
        key, std::move(producer), [out](const Result& r) { out->push_back(r); },
        CallOptions{timeout_ms});
    ASSERT_TRUE(call.ok()) << call.status().ToString();
  }

  // A key (of the form "<stem>-<n>") whose flight lives on shard `shard`.
  std::string KeyOnShard(int shard, const std::string& stem) {
    for (int n = 0; n < 1000; ++n) {
      std::string key = stem + "-" + std::to_string(n);
      if (OwnerOf(key) == &cluster_.master(shard)) return key;
    }
    ADD_FAILURE() << "no key of shard " << shard;
    return stem;
  }
  RedisServer* OwnerOf(const std::string& key) {
    return cluster_.NodeForSlot(cluster_.KeySlot(internal::NameFlight("sf:", key).lock));
  }
  bool Stored(const std::string& key) {
    std::string result = internal::NameFlight("sf:", key).result;
    return cluster_.Command(result, {"EXISTS", result}).integer == 1;
  }

  // The follower has subscribed and re-checked once (its second check).
  bool WaitForFollower(Group& group, uint64_t checks_before) {
    return RunUntil(&loop_, [&] { return group.stats().checks >= checks_before + 2; });
  }

  RedisCluster cluster_;
  uv_loop_t loop_;
  std::deque<std::vector<Result>> result_lists_;
  std::deque<Work> works_;
  std::vector<std::unique_ptr<Group>> groups_;
};

// A flight on each master runs once, is stored on its slot's owner, and
// none of it degrades: MOVED from the seed is followed, never fatal.
TEST_F(ClusterTest, FlightsOnEveryMasterRunAndAreStoredOnTheirOwner) {
  Group& group = NewGroup();
  Work& work = NewWork();
  auto& results = NewResults();
  std::vector<std::string> keys;
  for (int shard = 0; shard < cluster_.shard_count(); ++shard) {
    keys.push_back(KeyOnShard(shard, "k"));
    Call(group, keys.back(), work.Now("v-" + keys.back()), &results);
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == keys.size(); }));
  for (const Result& r : results) {
    EXPECT_TRUE(r.ok()) << r.status.ToString();
    EXPECT_FALSE(r.degraded);
  }
  EXPECT_EQ(work.runs, static_cast<int>(keys.size()));
  for (const std::string& key : keys) {
    EXPECT_TRUE(RunUntil(&loop_, [&] { return Stored(key); })) << key;
  }
  EXPECT_EQ(group.stats().degraded_calls, 0u);
  EXPECT_EQ(group.stats().error_replies_fatal, 0u);
}

// Without RedisOptions::cluster, the first MOVED makes the group a cluster
// group: nothing fails or degrades, and followers are woken by SPUBLISH.
TEST_F(ClusterTest, AClusterNodeIsDetectedWithoutTheOption) {
  Options options = ClusterOptions();
  options.redis.cluster = false;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  std::vector<std::string> keys;
  for (int shard = 0; shard < cluster_.shard_count(); ++shard) {
    keys.push_back(KeyOnShard(shard, "detected"));
    Call(leader, keys.back(), work.Parked(), &led);
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == cluster_.shard_count(); }));
  for (const std::string& key : keys)
    Call(follower, key, work.Now("a second execution"), &followed);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return follower.stats().checks >= 2 * static_cast<uint64_t>(keys.size()); }));
  for (Done& done : work.parked) done("detected value");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == keys.size(); }));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return led.size() == keys.size(); }));
  for (const auto* list : {&led, &followed}) {
    for (const Result& r : *list) {
      ASSERT_TRUE(r.ok()) << r.status.ToString();
      EXPECT_EQ(r.value(), "detected value");
      EXPECT_FALSE(r.degraded);
    }
  }
  EXPECT_EQ(work.runs, static_cast<int>(keys.size()));
  EXPECT_EQ(leader.stats().error_replies_fatal + follower.stats().error_replies_fatal, 0u);
  EXPECT_EQ(leader.stats().degraded_calls + follower.stats().degraded_calls, 0u);
}

// A follower on another shard's key is woken by the leader's SPUBLISH, on the
// shard of its flight.
TEST_F(ClusterTest, FollowerIsWokenBySharedPubSub) {
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  std::string key = KeyOnShard(cluster_.shard_count() - 1, "woken");
  Call(leader, key, work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  uint64_t checks = follower.stats().checks;
  Call(follower, key, work.Now("a second execution"), &followed);
  ASSERT_TRUE(WaitForFollower(follower, checks));
  std::string channel = internal::NameFlight("sf:", key).channel;
  EXPECT_EQ(cluster_.Command(channel, {"PUBSUB", "SHARDNUMSUB", channel}).elements.at(1).integer,
            1);
  work.parked.front()("the one value");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return led.size() == 1 && followed.size() == 1; }));
  ASSERT_TRUE(followed[0].ok()) << followed[0].status.ToString();
  EXPECT_EQ(followed[0].value(), "the one value");
  EXPECT_EQ(work.runs, 1);
  EXPECT_EQ(follower.stats().pubsub_wakes, 1u);
}

// P processes x C callers x K keys spread over every master: K executions.
TEST_F(ClusterTest, ProcessesTimesCallersOverKeysOnEveryMasterRunKTimes) {
  constexpr int kProcs = 3, kCallers = 12, kKeys = 12;
  std::set<RedisServer*> owners;
  for (int i = 0; i < kKeys; ++i) owners.insert(OwnerOf("key-" + std::to_string(i)));
  ASSERT_EQ(owners.size(), static_cast<size_t>(cluster_.shard_count()));  // every master
  std::vector<std::unique_ptr<test::ChildProcess>> children;
  for (int p = 0; p < kProcs; ++p) {
    auto child = std::make_unique<test::ChildProcess>();
    ASSERT_TRUE(child->Spawn(
        SF_HELPER_sf_worker,
        {"--redis", cluster_.master(0).host() + ":" + std::to_string(cluster_.master(0).port()),
         "--cluster", "--callers", std::to_string(kCallers), "--keys", std::to_string(kKeys),
         "--work-ms", "100"}));
    std::string line;
    ASSERT_TRUE(child->ReadLine(&line, 10000) && line == "ready") << line;
    children.push_back(std::move(child));
  }
  for (auto& child : children) child->WriteLine("go");
  std::map<std::string, std::set<std::string>> values;
  long long leads = 0;
  for (auto& child : children) {
    test::WorkerOutput out;
    std::vector<std::string> lines;
    ASSERT_TRUE(child->ReadAll(&lines, 60000)) << "a worker hung";
    for (auto& l : lines) {
      if (l.rfind("result ", 0) == 0) out.results.push_back(test::SplitWords(l));
      if (l.rfind("stats ", 0) == 0) out.stats = l;
    }
    int status = child->Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(out.results.size(), static_cast<size_t>(kCallers));
    for (auto& r : out.results) {
      EXPECT_EQ(r[3], "ok") << r[5];
      values[r[2]].insert(r[5]);
    }
    EXPECT_EQ(out.Stat("error_replies_fatal"), 0) << out.stats;
    leads += out.Stat("leads");
  }
  ASSERT_EQ(values.size(), static_cast<size_t>(kKeys));
  for (auto& [key, seen] : values) {
    EXPECT_EQ(seen.size(), 1u) << key;
    std::string counter = "sf:exec:" + key;
    EXPECT_EQ(cluster_.Command(counter, {"GET", counter}).str, "1") << key;
  }
  EXPECT_EQ(leads, kKeys);
}

// The flight's slot is migrated by hand while its leader runs and its
// follower waits: the leader's renewals and completion follow ASK (then
// MOVED), the follower's sharded subscription is ended by the server and
// re-made on the new owner, and every caller gets the one execution's value.
TEST_F(ClusterTest, SlotMigratedMidFlightIsFollowed) {
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  std::string key = KeyOnShard(0, "moving");
  int slot = cluster_.KeySlot(internal::NameFlight("sf:", key).lock);
  RedisServer& to = cluster_.master(1);
  Call(leader, key, work.Parked(), &led);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  uint64_t checks = follower.stats().checks;
  Call(follower, key, work.Now("a second execution"), &followed);
  ASSERT_TRUE(WaitForFollower(follower, checks));

  ASSERT_TRUE(cluster_.BeginSlotMigration(slot, to)) << cluster_.error();
  // Mid-migration (the lock is on `to` now): the old owner answers ASK, and
  // `to`, after ASKING, TRYAGAIN (a multi-key script whose result key is not
  // there yet): the completion retries with backoff until the slot is moved.
  work.parked.front()("migrated value");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return led.size() == 1; }));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return leader.stats().error_replies_retryable > 0; }));
  ASSERT_TRUE(cluster_.FinishSlotMigration(slot)) << cluster_.error();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return followed.size() == 1; }));
  EXPECT_TRUE(RunUntil(&loop_, [&] { return Stored(key); }));
  ASSERT_TRUE(led[0].ok()) << led[0].status.ToString();
  ASSERT_TRUE(followed[0].ok()) << followed[0].status.ToString();
  EXPECT_EQ(followed[0].value(), "migrated value");
  EXPECT_EQ(work.runs, 1);

  // After it, a new flight on the moved slot runs on its new owner.
  auto& after = NewResults();
  Call(leader, key + "-again", work.Now("after"), &after);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return after.size() == 1; }));
  EXPECT_TRUE(after[0].ok()) << after[0].status.ToString();
  EXPECT_EQ(leader.stats().error_replies_fatal, 0u);
  EXPECT_EQ(follower.stats().error_replies_fatal, 0u);
}

struct ShardListener : internal::Subscriber::Listener {
  int subscribed = 0;
  std::vector<std::string> messages;
  void OnSubscribed(std::string_view) override { ++subscribed; }
  void OnMessage(std::string_view, std::string_view payload) override {
    messages.emplace_back(payload);
  }
};

// The sharded Subscriber on its own: a node that does not own the channel's
// slot refuses it (MOVED) and the owner is told; the owner confirms it and
// delivers SPUBLISH; a migration ends it (the server's own sunsubscribe) and
// the owner is told again. Never a hang, never a message lost silently.
TEST_F(ClusterTest, ShardedSubscriberReportsRefusedAndEndedSubscriptions) {
  test::LoopScheduler scheduler(&loop_);
  std::string channel = internal::NameFlight("sf:", KeyOnShard(0, "sharded")).channel;
  int slot = cluster_.KeySlot(channel);
  std::vector<std::string> dropped_by_owner, dropped_by_other;
  auto make = [&](RedisServer& node, std::vector<std::string>* dropped) {
    RedisOptions options;
    options.host = node.host();
    options.port = node.port();
    internal::Subscriber::Handlers handlers;
    handlers.on_dropped = [dropped](const std::string& name) { dropped->push_back(name); };
    return std::make_unique<internal::Subscriber>(&loop_, scheduler.get(), options, handlers, true,
                                                  /*sharded=*/true);
  };
  auto owner = make(cluster_.master(0), &dropped_by_owner);
  auto other = make(cluster_.master(1), &dropped_by_other);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return owner->connected() && other->connected(); }));
  ShardListener on_owner, on_other;
  other->Add(channel, &on_other);
  owner->Add(channel, &on_owner);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return dropped_by_other.size() == 1; }));
  EXPECT_EQ(dropped_by_other[0], channel);
  EXPECT_EQ(on_other.subscribed, 0);
  other->Remove(channel, &on_other);

  ASSERT_TRUE(RunUntil(&loop_, [&] { return on_owner.subscribed == 1; }));
  EXPECT_EQ(cluster_.Command(channel, {"SPUBLISH", channel, "hello"}).integer, 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return on_owner.messages.size() == 1; }));
  EXPECT_EQ(on_owner.messages[0], "hello");

  ASSERT_TRUE(cluster_.MigrateSlot(slot, cluster_.master(2))) << cluster_.error();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return dropped_by_owner.size() == 1; }));
  EXPECT_EQ(dropped_by_owner[0], channel);
  owner->Remove(channel, &on_owner);  // dropped: nothing is sent for it

  bool closed_owner = false, closed_other = false;
  owner->Close([&] { closed_owner = true; });
  other->Close([&] { closed_other = true; });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return closed_owner && closed_other; }));
}

class ClusterFailoverTest : public ClusterTest {
 protected:
  ClusterFailoverTest() : ClusterTest(RedisCluster::Config{3, 1}) {}
};

// The master of a flight's shard is killed while its leader runs and its
// follower waits, and a replica is promoted: every caller is answered by its
// deadline, and flights on that shard then run on the new master.
TEST_F(ClusterFailoverTest, MasterKilledMidFlightEveryCallerEndsByItsDeadline) {
  constexpr uint32_t kDeadlineMs = 8000;
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  Work& work = NewWork();
  auto& led = NewResults();
  auto& followed = NewResults();
  constexpr int kShard = 1;
  std::string key = KeyOnShard(kShard, "failing");
  Call(leader, key, work.Parked(), &led, kDeadlineMs);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
  uint64_t checks = follower.stats().checks;
  Call(follower, key, work.Now("follower ran"), &followed, kDeadlineMs);
  ASSERT_TRUE(WaitForFollower(follower, checks));

  cluster_.KillMaster(kShard);
  work.parked.front()("leader's value");
  ASSERT_NE(cluster_.WaitForFailover(kShard, std::chrono::seconds(30)), nullptr)
      << cluster_.error();
  // The hang guard is far past the deadlines: the callers end by those.
  ASSERT_TRUE(RunUntil(&loop_, [&] { return led.size() == 1 && followed.size() == 1; }));
  for (const Result* r : {&led[0], &followed[0]}) {
    EXPECT_TRUE(r->ok() || r->status.code() == Code::kTimeout ||
                r->status.code() == Code::kUnavailable)
        << r->status.ToString();
  }

  // The shard's new master serves new flights, through the same groups.
  auto& after = NewResults();
  std::string next = KeyOnShard(kShard, "after-failover");
  Call(follower, next, work.Now("after"), &after);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return after.size() == 1; }));
  ASSERT_TRUE(after[0].ok()) << after[0].status.ToString();
  EXPECT_FALSE(after[0].degraded);
  EXPECT_TRUE(RunUntil(&loop_, [&] { return Stored(next); }));
}

}  // namespace
}  // namespace singleflight
