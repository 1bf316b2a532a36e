// Options::FromUrl: the URL shapes Redis clients agree on, and a clear error
// (never a guess) for everything else.
#include <gtest/gtest.h>

#include "singleflight/options.h"

namespace singleflight {
namespace {

RedisOptions Parse(std::string_view url) {
  Options options;
  Status status = Options::FromUrl(url, &options);
  EXPECT_TRUE(status.ok()) << url << ": " << status.ToString();
  return options.redis;
}

std::string Error(std::string_view url) {
  Options options;
  options.redis.host = "untouched";
  Status status = Options::FromUrl(url, &options);
  EXPECT_EQ(status.code(), Code::kInvalidArgument) << url;
  EXPECT_EQ(options.redis.host, "untouched") << url << ": a failed parse changes nothing";
  return status.message();
}

TEST(RedisUrlTest, HostPortDbAndCredentials) {
  RedisOptions r = Parse("redis://alice:s3cr%40t@cache.internal:6380/2");
  EXPECT_EQ(r.host, "cache.internal");
  EXPECT_EQ(r.port, 6380);
  EXPECT_EQ(r.username, "alice");
  EXPECT_EQ(r.password, "s3cr@t");
  EXPECT_EQ(r.db, 2);
  EXPECT_TRUE(r.unix_socket.empty());
}

TEST(RedisUrlTest, ClusterIsAQueryParameter) {
  EXPECT_FALSE(Parse("redis://127.0.0.1:7000").cluster);
  RedisOptions r = Parse("redis://127.0.0.1:7000?cluster=1");
  EXPECT_TRUE(r.cluster);
  EXPECT_EQ(r.port, 7000);
  EXPECT_TRUE(Parse("rediss://node:7000?tls_verify=0&cluster=1").cluster);
  EXPECT_FALSE(Parse("redis://127.0.0.1:7000?cluster=0").cluster);
}

TEST(RedisUrlTest, ClusterRefusesWhatAClusterCannotDo) {
  EXPECT_NE(Error("redis://h?cluster=yes").find("cluster is 0 or 1"), std::string::npos);
  EXPECT_NE(Error("redis://h/2?cluster=1").find("only db 0"), std::string::npos);
  EXPECT_NE(Error("unix:///tmp/r.sock?cluster=1").find("cluster=1 needs"), std::string::npos);
  EXPECT_NE(Error("redis+sentinel://h/m?cluster=1").find("cluster=1 needs"), std::string::npos);
}

TEST(RedisUrlTest, DefaultsAndPasswordOnly) {
  RedisOptions r = Parse("redis://127.0.0.1");
  EXPECT_EQ(r.host, "127.0.0.1");
  EXPECT_EQ(r.port, 6379);
  EXPECT_EQ(r.db, 0);
  r = Parse("redis://:pw@h/");
  EXPECT_EQ(r.username, "");
  EXPECT_EQ(r.password, "pw");
  EXPECT_EQ(r.db, 0);
  EXPECT_EQ(Parse("redis://h?db=5").db, 5);
  EXPECT_EQ(Parse("redis://user@h").username, "user");
}

TEST(RedisUrlTest, Ipv6AndBareHostPort) {
  RedisOptions r = Parse("redis://[::1]:7000");
  EXPECT_EQ(r.host, "::1");
  EXPECT_EQ(r.port, 7000);
  r = Parse("10.0.0.5:6390");
  EXPECT_EQ(r.host, "10.0.0.5");
  EXPECT_EQ(r.port, 6390);
  EXPECT_EQ(Parse("[fe80::1]:1").host, "fe80::1");
}

TEST(RedisUrlTest, UnixSocket) {
  RedisOptions r = Parse("unix:///run/redis/redis.sock?db=3");
  EXPECT_EQ(r.unix_socket, "/run/redis/redis.sock");
  EXPECT_EQ(r.db, 3);
  EXPECT_TRUE(r.host.empty());
  r = Parse("unix://:pw@/tmp/r.sock");
  EXPECT_EQ(r.password, "pw");
  EXPECT_EQ(r.unix_socket, "/tmp/r.sock");
}

TEST(RedisUrlTest, KeepsTheTimeoutsAndReplacesTheAddress) {
  Options options;
  options.redis.unix_socket = "/old.sock";
  options.redis.command_timeout_ms = 123;
  ASSERT_TRUE(Options::FromUrl("redis://h:1", &options).ok());
  EXPECT_TRUE(options.redis.unix_socket.empty());
  EXPECT_EQ(options.redis.command_timeout_ms, 123u);
}

TEST(RedisUrlTest, RedissTurnsOnTlsWithItsFilesAndNames) {
  RedisOptions plain = Parse("redis://h:6380");
  EXPECT_FALSE(plain.tls.enabled);
  RedisOptions r = Parse("rediss://:pw@cache.example:6380/2");
  EXPECT_TRUE(r.tls.enabled);
  EXPECT_TRUE(r.tls.verify_peer);
  EXPECT_EQ(r.host, "cache.example");
  EXPECT_EQ(r.port, 6380);
  EXPECT_EQ(r.db, 2);
  EXPECT_EQ(r.password, "pw");
  EXPECT_TRUE(r.tls.ca_file.empty());  // the system's CAs
  r = Parse(
      "rediss://10.0.0.5?tls_ca=/etc/ca%20dir/ca.pem&tls_cert=/c.pem&tls_key=/k.pem"
      "&tls_server_name=redis.internal&tls_ca_dir=/cas&tls_verify=0");
  EXPECT_EQ(r.port, 6379);
  EXPECT_EQ(r.tls.ca_file, "/etc/ca dir/ca.pem");
  EXPECT_EQ(r.tls.ca_dir, "/cas");
  EXPECT_EQ(r.tls.cert_file, "/c.pem");
  EXPECT_EQ(r.tls.key_file, "/k.pem");
  EXPECT_EQ(r.tls.server_name, "redis.internal");
  EXPECT_FALSE(r.tls.verify_peer);
}

TEST(RedisUrlTest, SentinelListsTheSentinelsAndTheMaster) {
  RedisOptions r = Parse(
      "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380,[::1]/my%20master/4"
      "?sentinel_password=spw&sentinel_user=watcher");
  EXPECT_TRUE(r.enabled());
  EXPECT_TRUE(r.host.empty());
  ASSERT_EQ(r.sentinel.sentinels.size(), 3u);
  EXPECT_EQ(r.sentinel.sentinels[0].host, "10.0.0.1");
  EXPECT_EQ(r.sentinel.sentinels[0].port, 26379);
  EXPECT_EQ(r.sentinel.sentinels[1].port, 26380);
  EXPECT_EQ(r.sentinel.sentinels[2].host, "::1");
  EXPECT_EQ(r.sentinel.master_name, "my master");
  EXPECT_EQ(r.db, 4);
  EXPECT_EQ(r.password, "pw");
  EXPECT_EQ(r.sentinel.password, "spw");
  EXPECT_EQ(r.sentinel.username, "watcher");
  EXPECT_FALSE(r.tls.enabled);
  EXPECT_TRUE(Parse("rediss+sentinel://s/m?tls_ca=/ca.pem").tls.enabled);
}

TEST(RedisUrlTest, TlsParametersAreChecked) {
  EXPECT_NE(Error("redis://h?tls_ca=/ca.pem").find("tls_ca needs rediss://"), std::string::npos);
  EXPECT_NE(Error("rediss://h?tls_cert=/c.pem").find("tls_cert and tls_key go together"),
            std::string::npos);
  EXPECT_NE(Error("rediss://h?tls_verify=no").find("tls_verify is 0 or 1"), std::string::npos);
  EXPECT_NE(Error("rediss://h?tls_ca=").find("tls_ca is empty"), std::string::npos);
  EXPECT_NE(Error("rediss://h?tls_sni=x").find("unknown parameter"), std::string::npos);
}

TEST(RedisUrlTest, RefusesWhatItCannotHonour) {
  EXPECT_NE(Error("").find("empty"), std::string::npos);
  EXPECT_NE(Error("redis+sentinel://s1,s2").find("no master name"), std::string::npos);
  EXPECT_NE(Error("redis+sentinel://s1/").find("no master name"), std::string::npos);
  EXPECT_NE(Error("redis+sentinel://s1,/m").find("no host"), std::string::npos);
  EXPECT_NE(Error("redis://h?sentinel_password=x").find("unknown parameter"), std::string::npos);
  EXPECT_NE(Error("http://h").find("unknown scheme"), std::string::npos);
  EXPECT_NE(Error("redis://").find("no host"), std::string::npos);
  EXPECT_NE(Error("redis://h:0").find("not 1-65535"), std::string::npos);
  EXPECT_NE(Error("redis://h:65536").find("not 1-65535"), std::string::npos);
  EXPECT_NE(Error("redis://h:").find("empty port"), std::string::npos);
  EXPECT_NE(Error("redis://h:12ab").find("not 1-65535"), std::string::npos);
  EXPECT_NE(Error("redis://h/x").find("is not a number"), std::string::npos);
  EXPECT_NE(Error("redis://h?tls=1").find("unknown parameter \"tls\""), std::string::npos);
  EXPECT_NE(Error("redis://::1:6379").find("needs brackets"), std::string::npos);
  EXPECT_NE(Error("redis://[::1").find("unclosed"), std::string::npos);
  EXPECT_NE(Error("redis://:%zz@h").find("bad %-escape"), std::string::npos);
  EXPECT_NE(Error("redis://:%4@h").find("bad %-escape"), std::string::npos);
  EXPECT_NE(Error("unix://").find("no socket path"), std::string::npos);
  EXPECT_NE(Error("unix://host/tmp/s").find("takes no host"), std::string::npos);
  EXPECT_NE(Error("localhost").find("no scheme and no port"), std::string::npos);
  EXPECT_NE(Error("redis://h?db=x").find("db is not a number"), std::string::npos);
}

TEST(RedisUrlTest, ErrorsDoNotShowThePassword) {
  std::string message = Error("redis://alice:hunter2@h:0");
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
  EXPECT_NE(message.find("redis://alice:***@h:0"), std::string::npos) << message;
  EXPECT_EQ(Error("unix://:hunter2@/x?bad=1").find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace singleflight
