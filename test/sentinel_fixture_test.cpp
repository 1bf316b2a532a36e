// The SentinelSet fixture against real servers, checked only through its own
// synchronous connections: the Sentinel names the master after Start, and the
// replica after the master is killed. Timings are printed, not asserted.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "support/sentinel_set.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;
using internal::Reply;

long long MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// The port SENTINEL get-master-addr-by-name reports, or 0.
int MasterPortBySentinel(SentinelSet& set) {
  Reply addr = set.Command({"SENTINEL", "get-master-addr-by-name", set.master_name()});
  if (addr.elements.size() != 2) return 0;
  return std::atoi(addr.elements[1].str.c_str());
}

TEST(SentinelFixture, SentinelNamesTheMasterThenTheReplicaAfterTheMasterIsKilled) {
  SentinelSet set;
  Clock::time_point start = Clock::now();
  SF_START_SENTINEL_SET(set);
  std::cout << "[ timing ] SentinelSet::Start: " << MillisecondsSince(start) << " ms\n";
  EXPECT_EQ(MasterPortBySentinel(set), set.master().port());

  set.KillMaster();
  Clock::time_point killed = Clock::now();
  // Generous: "it ended at all"; a failover here takes about 2-3 s.
  SentinelSet::Address promoted = set.WaitForFailover(std::chrono::seconds(60));
  std::cout << "[ timing ] kill -> +switch-master: " << MillisecondsSince(killed) << " ms\n";
  ASSERT_NE(promoted.port, 0) << set.error();

  EXPECT_EQ(promoted.host, set.replica().host());
  EXPECT_EQ(promoted.port, set.replica().port());
  EXPECT_EQ(MasterPortBySentinel(set), set.replica().port());
  Reply role = set.replica().Command({"ROLE"});
  ASSERT_FALSE(role.elements.empty()) << role.str;
  EXPECT_EQ(role.elements[0].str, "master");
}

TEST(SentinelFixture, PasswordsGuardTheServersAndTheSentinel) {
  SentinelSet::Config config;
  config.master_name = "guarded";
  config.requirepass = "data-pw";
  config.sentinel_requirepass = "sentinel-pw";
  SentinelSet set(config);
  // Start waits for the Sentinel to see the replica, which it learns from
  // the master's INFO: that needs auth-pass.
  SF_START_SENTINEL_SET(set);
  EXPECT_EQ(MasterPortBySentinel(set), set.master().port());

  timeval timeout{5, 0};
  redisContext* c =
      redisConnectWithTimeout(set.sentinel_host().c_str(), set.sentinel_port(), timeout);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->err, 0) << c->errstr;
  auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
  ASSERT_NE(reply, nullptr) << c->errstr;
  EXPECT_EQ(reply->type, REDIS_REPLY_ERROR);
  EXPECT_EQ(std::string(reply->str, reply->len).rfind("NOAUTH", 0), 0u) << reply->str;
  freeReplyObject(reply);
  redisFree(c);
}

}  // namespace
}  // namespace singleflight::test
