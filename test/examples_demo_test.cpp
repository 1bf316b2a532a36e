// The sf_demo example end to end (what scripts/demo.sh runs), small and fast:
// its own invariant checks decide, and it says "sf_demo: OK" and exits 0 when they hold.
#ifdef SF_EXAMPLE_sf_demo

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

TEST(ExamplesDemoTest, ThreeBurstsHoldTheirInvariants) {
  test::RedisServer redis;
  SF_START_REDIS(redis);
  test::ChildProcess demo;
  ASSERT_TRUE(demo.Spawn(SF_EXAMPLE_sf_demo,
                         {"--redis", redis.host() + ":" + std::to_string(redis.port()), "--workers",
                          "3", "--callers", "6", "--keys", "2", "--work-ms", "100",
                          "--result-ttl-ms", "2000", "--lock-ttl-ms", "1500"}));
  std::vector<std::string> lines;
  ASSERT_TRUE(demo.ReadAll(&lines, 60000)) << "the demo hung";
  int status = demo.Wait();
  std::string output;
  for (auto& line : lines) output += line + "\n";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "sf_demo: OK") << output;
  EXPECT_NE(output.find("takeovers="), std::string::npos) << output;
}

// The same demo reached by URL: a unix socket, a password and a db, passed on
// to every worker (--redis-url) and to the demo's own counter connections.
TEST(ExamplesDemoTest, ReachesRedisByUrlWithPasswordSocketAndDb) {
  test::RedisServer::Config config;
  config.requirepass = "s3cr@t";
  test::RedisServer redis(config);
  SF_START_REDIS(redis);
  ASSERT_FALSE(redis.unix_socket().empty());
  test::ChildProcess demo;
  ASSERT_TRUE(demo.Spawn(SF_EXAMPLE_sf_demo,
                         {"--redis-url", "unix://:s3cr%40t@" + redis.unix_socket() + "?db=3",
                          "--workers", "2", "--callers", "3", "--keys", "1", "--work-ms", "50",
                          "--result-ttl-ms", "2000", "--lock-ttl-ms", "1500"}));
  std::vector<std::string> lines;
  ASSERT_TRUE(demo.ReadAll(&lines, 60000)) << "the demo hung";
  int status = demo.Wait();
  std::string output;
  for (auto& line : lines) output += line + "\n";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "sf_demo: OK") << output;
  std::string keyspace = redis.Command({"INFO", "keyspace"}).str;
  EXPECT_NE(keyspace.find("db3:keys="), std::string::npos) << keyspace;
  EXPECT_EQ(keyspace.find("db0:keys="), std::string::npos) << keyspace;
}

TEST(ExamplesDemoTest, ABadRedisUrlIsRefusedWithTheReason) {
  test::ChildProcess demo;
  ASSERT_TRUE(demo.Spawn(SF_EXAMPLE_sf_demo, {"--redis-url", "rediss://:hunter2@h:6380"}));
  std::vector<std::string> lines;
  ASSERT_TRUE(demo.ReadAll(&lines, 60000));
  int status = demo.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
}

}  // namespace
}  // namespace singleflight

#endif  // SF_EXAMPLE_sf_demo
