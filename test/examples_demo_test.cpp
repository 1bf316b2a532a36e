// The sf_demo example end to end (what scripts/demo.sh runs), small and fast:
// its own invariant checks decide, and it says "sf_demo: OK" and exits 0 when they hold.
#ifdef SF_EXAMPLE_sf_demo

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/redis_server.h"
#include "support/test_certs.h"

namespace singleflight {
namespace {

// One sf_demo run to its end: its exit status and what it printed.
struct DemoRun {
  bool ended = false;  // spawned, and its output ended within the bound
  int status = 0;
  std::vector<std::string> lines;
  std::string output;  // lines joined, for failure messages
};

DemoRun RunDemo(const std::vector<std::string>& args) {
  DemoRun run;
  test::ChildProcess demo;
  if (!demo.Spawn(SF_EXAMPLE_sf_demo, args)) return run;
  run.ended = demo.ReadAll(&run.lines, 60000);
  if (!run.ended) return run;  // the ChildProcess destructor stops it
  run.status = demo.Wait();
  for (auto& line : run.lines) run.output += line + "\n";
  return run;
}

// Exit 0 and the demo's own verdict as its last line.
void ExpectOk(const DemoRun& run) {
  EXPECT_TRUE(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0) << run.output;
  ASSERT_FALSE(run.lines.empty());
  EXPECT_EQ(run.lines.back(), "sf_demo: OK") << run.output;
}

TEST(ExamplesDemoTest, ThreeBurstsHoldTheirInvariants) {
  test::RedisServer redis;
  SF_START_REDIS(redis);
  DemoRun run = RunDemo({"--redis", redis.host() + ":" + std::to_string(redis.port()), "--workers",
                         "3", "--callers", "6", "--keys", "2", "--work-ms", "100",
                         "--result-ttl-ms", "2000", "--lock-ttl-ms", "1500"});
  ASSERT_TRUE(run.ended) << "the demo hung";
  ExpectOk(run);
  EXPECT_NE(run.output.find("takeovers="), std::string::npos) << run.output;
}

// The same demo reached by URL: a unix socket, a password and a db, passed on
// to every worker (--redis-url) and to the demo's own counter connections.
TEST(ExamplesDemoTest, ReachesRedisByUrlWithPasswordSocketAndDb) {
  test::RedisServer::Config config;
  config.requirepass = "s3cr@t";
  test::RedisServer redis(config);
  SF_START_REDIS(redis);
  ASSERT_FALSE(redis.unix_socket().empty());
  DemoRun run = RunDemo({"--redis-url", "unix://:s3cr%40t@" + redis.unix_socket() + "?db=3",
                         "--workers", "2", "--callers", "3", "--keys", "1", "--work-ms", "50",
                         "--result-ttl-ms", "2000", "--lock-ttl-ms", "1500"});
  ASSERT_TRUE(run.ended) << "the demo hung";
  ExpectOk(run);
  std::string keyspace = redis.Command({"INFO", "keyspace"}).str;
  EXPECT_NE(keyspace.find("db3:keys="), std::string::npos) << keyspace;
  EXPECT_EQ(keyspace.find("db0:keys="), std::string::npos) << keyspace;
}

// Over TLS: rediss:// with the test CA, for the workers' groups and for the
// demo's own counter connections alike.
TEST(ExamplesDemoTest, RunsOverTls) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  test::RedisServer::Config config;
  config.tls = {certs->server_cert(), certs->server_key(), certs->ca_cert(), false};
  test::RedisServer redis(config);
  SF_START_REDIS(redis);
  DemoRun run =
      RunDemo({"--redis-url",
               "rediss://127.0.0.1:" + std::to_string(redis.port()) + "?tls_ca=" + certs->ca_cert(),
               "--workers", "2", "--callers", "3", "--keys", "1", "--work-ms", "50",
               "--result-ttl-ms", "2000", "--lock-ttl-ms", "1500"});
  ASSERT_TRUE(run.ended) << "the demo hung";
  ExpectOk(run);
  EXPECT_NE(redis.Command({"INFO", "keyspace"}).str.find("db0:keys="), std::string::npos);
}

TEST(ExamplesDemoTest, ABadRedisUrlIsRefusedWithTheReason) {
  DemoRun run = RunDemo({"--redis-url", "rediss://:hunter2@h:6380?tls_verify=maybe"});
  ASSERT_TRUE(run.ended);
  EXPECT_TRUE(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 2);
}

}  // namespace
}  // namespace singleflight

#endif  // SF_EXAMPLE_sf_demo
