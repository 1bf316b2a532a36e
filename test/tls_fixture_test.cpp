// The TLS test fixture itself (support/test_certs.h, RedisServer::Config::tls),
// checked with independent real tools only: `openssl verify` for what each
// certificate is, redis-cli for what the server accepts. The library's own TLS
// transport is tested against this fixture elsewhere; here nothing of the
// library runs.
//
// redis-cli does not check the server's name (it verifies the chain only:
// against the wrong_name certificate it still answers PONG), so the name
// mismatch is shown with `openssl verify -verify_ip/-verify_hostname`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/redis_server.h"
#include "support/test_certs.h"

namespace singleflight {
namespace {

using test::ProgramRun;
using test::RedisServer;
using test::RunProgram;
using test::TestCertificates;

// A hang guard for one tool run, not an expectation: each takes milliseconds.
constexpr uint64_t kToolTimeoutMs = 30000;

// `openssl verify` of one certificate against one CA, with extra options.
ProgramRun Verify(const std::string& ca, const std::string& cert,
                  const std::vector<std::string>& options = {}) {
  std::vector<std::string> args = {"verify", "-CAfile", ca};
  args.insert(args.end(), options.begin(), options.end());
  args.push_back(cert);
  return RunProgram(SF_OPENSSL, args, kToolTimeoutMs);
}

class TestCertificatesTest : public ::testing::Test {
 protected:
  void SetUp() override { SF_TEST_CERTIFICATES(certs_); }

  const TestCertificates* certs_ = nullptr;
};

TEST_F(TestCertificatesTest, ServerCertificateIsForLoopbackAndLocalhost) {
  ProgramRun ip = Verify(certs_->ca_cert(), certs_->server_cert(),
                         {"-purpose", "sslserver", "-verify_ip", "127.0.0.1"});
  EXPECT_TRUE(ip.succeeded()) << ip.output;
  ProgramRun name = Verify(certs_->ca_cert(), certs_->server_cert(),
                           {"-purpose", "sslserver", "-verify_hostname", "localhost"});
  EXPECT_TRUE(name.succeeded()) << name.output;
}

TEST_F(TestCertificatesTest, WrongNameCertificateHasTheRightCaButOnlyWrongExample) {
  ProgramRun chain = Verify(certs_->ca_cert(), certs_->wrong_name_cert(),
                            {"-purpose", "sslserver", "-verify_hostname", "wrong.example"});
  EXPECT_TRUE(chain.succeeded()) << chain.output;
  ProgramRun ip = Verify(certs_->ca_cert(), certs_->wrong_name_cert(), {"-verify_ip", "127.0.0.1"});
  EXPECT_FALSE(ip.succeeded()) << ip.output;
  EXPECT_NE(ip.output.find("IP address mismatch"), std::string::npos) << ip.output;
  ProgramRun name =
      Verify(certs_->ca_cert(), certs_->wrong_name_cert(), {"-verify_hostname", "localhost"});
  EXPECT_FALSE(name.succeeded()) << name.output;
  EXPECT_NE(name.output.find("hostname mismatch"), std::string::npos) << name.output;
}

TEST_F(TestCertificatesTest, ClientCertificatesBelongToTheirOwnCaOnly) {
  ProgramRun client = Verify(certs_->ca_cert(), certs_->client_cert(), {"-purpose", "sslclient"});
  EXPECT_TRUE(client.succeeded()) << client.output;
  ProgramRun other =
      Verify(certs_->other_ca_cert(), certs_->other_client_cert(), {"-purpose", "sslclient"});
  EXPECT_TRUE(other.succeeded()) << other.output;
  ProgramRun untrusted = Verify(certs_->ca_cert(), certs_->other_client_cert());
  EXPECT_FALSE(untrusted.succeeded()) << untrusted.output;
  EXPECT_NE(untrusted.output.find("unable to get local issuer certificate"), std::string::npos)
      << untrusted.output;
}

TEST_F(TestCertificatesTest, OtherCaDoesNotVouchForTheServer) {
  ProgramRun run = Verify(certs_->other_ca_cert(), certs_->server_cert());
  EXPECT_FALSE(run.succeeded()) << run.output;
  EXPECT_NE(run.output.find("unable to get local issuer certificate"), std::string::npos)
      << run.output;
}

TEST_F(TestCertificatesTest, SharedSetIsGeneratedOnce) {
  std::string error;
  EXPECT_EQ(TestCertificates::Shared(&error), certs_);
  EXPECT_EQ(access(certs_->ca_cert().c_str(), R_OK), 0) << certs_->ca_cert();
}

// A TLS RedisServer (server.crt) and redis-cli as the client.
class TlsRedisServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::RedisServerAvailable()) {
      GTEST_SKIP() << "no redis-server (apt-get install redis-server, then reconfigure)";
    }
    if (access(SF_REDIS_CLI, X_OK) != 0) {
      GTEST_SKIP() << "no redis-cli (apt-get install redis-tools, then reconfigure)";
    }
    SF_TEST_CERTIFICATES(certs_);
  }

  RedisServer::Config TlsConfig(bool auth_clients) const {
    RedisServer::Config config;
    config.tls.cert_file = certs_->server_cert();
    config.tls.key_file = certs_->server_key();
    config.tls.ca_cert_file = certs_->ca_cert();
    config.tls.auth_clients = auth_clients;
    return config;
  }

  // redis-cli ARGS... -h 127.0.0.1 -p PORT PING.
  static ProgramRun Ping(const RedisServer& server, std::vector<std::string> args) {
    args.insert(args.end(), {"-h", server.host(), "-p", std::to_string(server.port()), "PING"});
    return RunProgram(SF_REDIS_CLI, args, kToolTimeoutMs);
  }

  std::vector<std::string> TrustingCa() const { return {"--tls", "--cacert", certs_->ca_cert()}; }
  std::vector<std::string> WithClientCert() const {
    return {"--tls", "--cacert",          certs_->ca_cert(), "--cert", certs_->client_cert(),
            "--key", certs_->client_key()};
  }

  const TestCertificates* certs_ = nullptr;
};

TEST_F(TlsRedisServerTest, RedisCliPingsOverTls) {
  RedisServer redis(TlsConfig(false));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  EXPECT_TRUE(redis.tls());
  ProgramRun run = Ping(redis, TrustingCa());
  EXPECT_TRUE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output, "PONG\n");
}

TEST_F(TlsRedisServerTest, PlaintextClientGetsNoPongFromTheTlsPort) {
  RedisServer redis(TlsConfig(false));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  ProgramRun run = Ping(redis, {});
  EXPECT_TRUE(run.ended) << run.output;
  EXPECT_FALSE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output.find("PONG"), std::string::npos) << run.output;
}

TEST_F(TlsRedisServerTest, ClientTrustingTheOtherCaRejectsTheServer) {
  RedisServer redis(TlsConfig(false));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  ProgramRun run = Ping(redis, {"--tls", "--cacert", certs_->other_ca_cert()});
  EXPECT_FALSE(run.succeeded()) << run.output;
  EXPECT_NE(run.output.find("certificate verify failed"), std::string::npos) << run.output;
}

TEST_F(TlsRedisServerTest, MutualTlsRefusesAClientWithoutCertificate) {
  RedisServer redis(TlsConfig(true));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  ProgramRun run = Ping(redis, TrustingCa());
  EXPECT_FALSE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output.find("PONG"), std::string::npos) << run.output;
}

TEST_F(TlsRedisServerTest, MutualTlsAcceptsTheClientCertificate) {
  RedisServer redis(TlsConfig(true));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  ProgramRun run = Ping(redis, WithClientCert());
  EXPECT_TRUE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output, "PONG\n");
}

TEST_F(TlsRedisServerTest, MutualTlsRefusesAClientCertificateFromTheOtherCa) {
  RedisServer redis(TlsConfig(true));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  ProgramRun run = Ping(redis, {"--tls", "--cacert", certs_->ca_cert(), "--cert",
                                certs_->other_client_cert(), "--key", certs_->other_client_key()});
  EXPECT_FALSE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output.find("PONG"), std::string::npos) << run.output;
}

// The fixture's own calls go over the plaintext unix socket, also with mTLS.
TEST_F(TlsRedisServerTest, FixtureCommandsUseTheUnixSocket) {
  RedisServer redis(TlsConfig(true));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  internal::Reply set = redis.Command({"SET", "k", "v"});
  EXPECT_EQ(set.type, internal::Reply::Type::kStatus) << set.str;
  auto pending = redis.Send({"GET", "k"});
  internal::Reply get = pending->Wait();
  EXPECT_EQ(get.type, internal::Reply::Type::kString) << get.str;
  EXPECT_EQ(get.str, "v");
  EXPECT_EQ(redis.CommandCalls()["set"], 1);
  // What the server says it listens on: TLS on port(), no plaintext port.
  internal::Reply port = redis.Command({"CONFIG", "GET", "port"});
  ASSERT_EQ(port.elements.size(), 2u);
  EXPECT_EQ(port.elements[1].str, "0");
  internal::Reply tls_port = redis.Command({"CONFIG", "GET", "tls-port"});
  ASSERT_EQ(tls_port.elements.size(), 2u);
  EXPECT_EQ(tls_port.elements[1].str, std::to_string(redis.port()));
}

TEST_F(TlsRedisServerTest, RestartKeepsTheTlsPort) {
  RedisServer redis(TlsConfig(false));
  ASSERT_TRUE(redis.Start()) << "redis-server did not start";
  int port = redis.port();
  ASSERT_TRUE(redis.Restart());
  EXPECT_EQ(redis.port(), port);
  ProgramRun run = Ping(redis, TrustingCa());
  EXPECT_TRUE(run.succeeded()) << run.output;
  EXPECT_EQ(run.output, "PONG\n");
}

// ReplicaOf a TLS master replicates over TLS, its certificate accepted by a
// master that requires client certificates.
TEST_F(TlsRedisServerTest, ReplicaOfATlsMasterSyncsOverTls) {
  RedisServer master(TlsConfig(true));
  ASSERT_TRUE(master.Start()) << "redis-server did not start";
  master.Command({"CONFIG", "SET", "repl-diskless-sync-delay", "0"});
  RedisServer replica(RedisServer::ReplicaOf(master));
  ASSERT_TRUE(replica.Start()) << "the replica did not start";
  EXPECT_TRUE(replica.tls());
  ASSERT_TRUE(master.WaitForReplicas(1)) << master.Command({"INFO", "replication"}).str;
  ProgramRun run = Ping(replica, WithClientCert());
  EXPECT_TRUE(run.succeeded()) << run.output;
}

}  // namespace
}  // namespace singleflight
