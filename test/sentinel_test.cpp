// Groups behind Sentinel, against a real master + replica + sentinel
// (test/support/sentinel_set.h): the master is found through the sentinel,
// and when it is killed mid-flights every caller ends by its deadline, both
// groups follow the failover to the promoted replica, and flights are shared
// between them again. Two groups on one loop stand for two processes: each
// has its own connections.
#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "key_naming.h"
#include "singleflight/group.h"
#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/sentinel_set.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;

class SentinelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);  // first: TearDown closes it even after a skip
    SF_START_SENTINEL_SET(set_);
  }
  void TearDown() override {
    for (auto& group : groups_) group->Close();
    EXPECT_TRUE(Drain(&loop_));
    groups_.clear();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  Options SentinelOptions() {
    Options options;
    options.redis.sentinel.sentinels = {{set_.sentinel_host(), set_.sentinel_port()}};
    options.redis.sentinel.master_name = set_.master_name();
    options.redis.connect_timeout_ms = 500;
    options.redis.command_timeout_ms = 500;
    options.redis.reconnect_max_ms = 200;
    options.lock_ttl_ms = 3000;
    return options;
  }
  Group& NewGroup() {
    groups_.push_back(std::make_unique<Group>(&loop_, SentinelOptions()));
    return *groups_.back();
  }

  // Leader in `a`, follower in `b`, one execution: the flight is shared
  // through Redis. Returns the runs of the producer.
  int SharedFlight(Group& a, Group& b, const std::string& key, std::vector<Result>* results) {
    Work& work = works_.emplace_back(&loop_);
    auto record = [results](const Result& r) { results->push_back(r); };
    EXPECT_TRUE(a.Do(key, work.Parked(), record, CallOptions{20000}).ok());
    EXPECT_TRUE(RunUntil(&loop_, [&] { return work.runs == 1; }));
    EXPECT_TRUE(b.Do(key, work.Parked(), record, CallOptions{20000}).ok());
    // b is a follower once it has asked Redis and found the lock.
    uint64_t checks = b.stats().checks;
    EXPECT_TRUE(RunUntil(&loop_, [&] { return b.stats().checks > checks; }));
    if (!work.parked.empty()) work.parked.front()("value of " + key);
    EXPECT_TRUE(RunUntil(&loop_, [&] { return results->size() == 2; }));
    return work.runs;
  }

  SentinelSet set_;
  uv_loop_t loop_;
  std::deque<Work> works_;
  std::deque<std::vector<Result>> results_;
  std::vector<std::unique_ptr<Group>> groups_;
};

bool Exists(RedisServer& server, const std::string& key) {
  return server.Command({"EXISTS", internal::NameFlight("sf:", key).result}).integer == 1;
}

TEST_F(SentinelTest, GroupsFindTheMasterThroughTheSentinelAndShareFlights) {
  Group& a = NewGroup();
  Group& b = NewGroup();
  std::vector<Result>& results = results_.emplace_back();
  EXPECT_EQ(SharedFlight(a, b, "k", &results), 1);
  for (const Result& r : results) EXPECT_TRUE(r.ok()) << r.status.ToString();
  EXPECT_EQ(a.stats().leads + b.stats().leads, 1u);
  EXPECT_EQ(a.stats().degraded_calls + b.stats().degraded_calls, 0u);
  EXPECT_TRUE(RunUntil(&loop_, [&] { return Exists(set_.master(), "k"); }));
}

TEST_F(SentinelTest, MasterKilledMidFlightsEveryCallerEndsAndFlightsAreSharedAgain) {
  Group& a = NewGroup();
  Group& b = NewGroup();
  std::vector<Result>& warmup = results_.emplace_back();
  ASSERT_EQ(SharedFlight(a, b, "warmup", &warmup), 1);

  // Flights in the air when the master dies: leaders parked in a, followers
  // waiting in b, each caller with a 3 s deadline.
  constexpr int kKeys = 5;
  constexpr uint32_t kDeadlineMs = 3000;
  Work& inflight = works_.emplace_back(&loop_);
  std::vector<Result>& ended = results_.emplace_back();
  auto record = [&ended](const Result& r) { ended.push_back(r); };
  for (int i = 0; i < kKeys; ++i) {
    std::string key = "inflight-" + std::to_string(i);
    ASSERT_TRUE(a.Do(key, inflight.Parked(), record, CallOptions{kDeadlineMs}).ok());
    ASSERT_TRUE(b.Do(key, inflight.Parked(), record, CallOptions{kDeadlineMs}).ok());
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return inflight.runs == kKeys; }));

  Stats a_before = a.stats();
  Stats b_before = b.stats();
  Clock::time_point killed = Clock::now();
  set_.KillMaster();
  // Every caller ends (by its deadline at the latest), with a result or an
  // error, exactly once.
  ASSERT_TRUE(RunUntil(&loop_, [&] { return ended.size() == 2 * kKeys; }));
  int executions = inflight.runs;  // > kKeys: a flight ran twice across the failover
  for (Done& done : inflight.parked) done("late");
  inflight.parked.clear();

  SentinelSet::Address promoted = set_.WaitForFailover(std::chrono::seconds(60));
  ASSERT_EQ(promoted.port, set_.replica().port()) << set_.error();
  // Both groups reconnect (command and subscriber connections) to the new
  // master; only then can a flight be shared again.
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    return a.stats().reconnects > a_before.reconnects &&
           b.stats().reconnects > b_before.reconnects &&
           a.stats().subscriber_reconnects > a_before.subscriber_reconnects &&
           b.stats().subscriber_reconnects > b_before.subscriber_reconnects;
  }));
  std::vector<Result>& after = results_.emplace_back();
  EXPECT_EQ(SharedFlight(a, b, "after-failover", &after), 1);
  for (const Result& r : after) EXPECT_TRUE(r.ok()) << r.status.ToString();
  auto to_shared = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
  EXPECT_TRUE(Exists(set_.replica(), "after-failover"));
  int ok = 0;
  for (const Result& r : ended) ok += r.ok() ? 1 : 0;
  std::cout << "[ timing ] master kill -> first shared flight on the promoted master: "
            << to_shared.count() << " ms; " << kKeys << " flights in the air: " << executions
            << " executions (degraded " << b.stats().degraded_calls - b_before.degraded_calls
            << ", takeovers " << b.stats().takeovers - b_before.takeovers << "), " << ok << " of "
            << 2 * kKeys << " callers answered ok\n";
}

}  // namespace
}  // namespace singleflight::test
