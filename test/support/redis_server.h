// RedisServer: a real redis-server owned by one test, on a free loopback port
// (and a unix socket in its temp dir), with the faults tests need to inject:
// kill, stop, pause, restart on the same port, commands that block the server
// (a long script, DEBUG SLEEP) sent without waiting for their reply, and a
// replica of another RedisServer. The same binary runs as a Sentinel given a
// config file and --sentinel (see SentinelSet), and as a Redis Cluster node
// with Config::cluster (see RedisCluster).
//
// With Config::tls the TCP port speaks only TLS (Redis's tls-port; there is
// no plaintext TCP port) and the unix socket stays plaintext. The fixture's
// own connections (the readiness check, Command, Send, CommandCalls,
// WaitForReplicas) then go over the unix socket, since its hiredis 0.14 has
// no TLS; without TLS they use the TCP port, as before.
//
// Not thread-safe. The server is a child process of the test; the destructor
// stops it and removes its directory.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "redis_reply.h"

namespace singleflight::test {

class RedisServer {
 public:
  // The server's TLS files (PEM paths, see support/test_certs.h). Empty
  // cert_file: plaintext.
  struct Tls {
    std::string cert_file;
    std::string key_file;
    // Verifies client certificates, and a replica's view of its master.
    // Required by Redis with auth_clients, and for a replica over TLS.
    std::string ca_cert_file;
    // Mutual TLS (tls-auth-clients yes): a client must present a certificate
    // signed by ca_cert_file.
    bool auth_clients = false;

    bool enabled() const { return !cert_file.empty(); }
  };

  struct Config {
    std::string requirepass;
    // Appended to the command line, e.g. {"--user", "alice", "on", ">pw", "~sf:*", "+@all"}.
    std::vector<std::string> extra_args;
    // The text of a config file, written to redis.conf in the server's
    // directory on the first Start and kept across restarts; the command line
    // overrides it. A Sentinel requires one (extra_args {"--sentinel"}) and
    // rewrites it with its state.
    std::string config_file = {};
    // Default-initialised, like config_file: the aggregate initialisers
    // {requirepass, extra_args} in existing tests keep their meaning and
    // need no more members (-Wmissing-field-initializers).
    Tls tls = {};
    // A Redis Cluster node: cluster-enabled, its state in nodes.conf in
    // dir(), and its cluster bus on a second free port (cluster_port()),
    // chosen with the client port: Redis's default, port + 10000, is past
    // 65535 for a fifth of Linux's ephemeral ports (32768-60999), and may be taken. Both
    // ports are kept across Restart, as the other nodes know them.
    bool cluster = false;
  };

  // The configuration of a read-only replica of `master` (replicaof). For a
  // TLS master the replica gets the master's TLS files and replicates over
  // TLS (tls-replication), presenting the master's certificate as its client
  // certificate.
  static Config ReplicaOf(const RedisServer& master);

  // Two constructors, not a `Config config = {}` default argument: GCC
  // rejects that for a nested struct with default member initialisers.
  RedisServer();
  explicit RedisServer(Config config);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts on a free port and returns once the server answers and its INFO
  // process_id is our child (so the port is really ours; with TLS, asked over
  // the unix socket). Tries a few ports; false if none worked.
  bool Start();
  void Stop();  // SIGTERM, then SIGKILL if it lingers; waits for it
  void Kill();  // SIGKILL; waits for it
  // SIGSTOP / SIGCONT, returning once the server has really stopped (or
  // resumed): between the two, nothing sent to it is read, let alone answered,
  // exactly as while it sleeps in DEBUG SLEEP or a long script — but with a
  // start and an end the test observes instead of guessing.
  void Pause();
  void Resume();
  // Stops (or finds stopped) the server and starts it again on the same port.
  bool Restart();

  // The TCP port: with Config::tls, the TLS port.
  int port() const { return port_; }
  // The cluster bus port with Config::cluster, else 0.
  int cluster_port() const { return cluster_port_; }
  bool tls() const { return config_.tls.enabled(); }
  std::string host() const { return "127.0.0.1"; }
  std::string unix_socket() const { return dir_.empty() ? std::string() : dir_ + "/redis.sock"; }
  pid_t pid() const { return pid_; }
  // The server's temp directory (its log is redis.log there); empty before Start.
  const std::string& dir() const { return dir_; }
  // The last `lines` lines of its log, each on its own line indented by two
  // spaces after a newline, for error messages; empty before Start.
  std::string LogTail(size_t lines = 20) const;

  // A synchronous command on a fresh blocking connection (test side only,
  // never on a loop). Authenticates with Config::requirepass if set. A
  // connection failure comes back as a kError reply with its message.
  internal::Reply Command(const std::vector<std::string>& argv);
  // Several commands in order on one fresh connection, for those that act on
  // the connection's next command (ASKING, then a command for a slot being
  // imported): a reply for each. After a connection failure the rest come
  // back as kError replies with its message.
  std::vector<internal::Reply> Commands(const std::vector<std::vector<std::string>>& commands);

  // A command written on its own connection whose reply is collected later,
  // for commands that block the server (EVAL of a long script, DEBUG SLEEP,
  // CLIENT PAUSE's effects): the test keeps running its loop meanwhile.
  class PendingCommand {
   public:
    ~PendingCommand();
    PendingCommand(const PendingCommand&) = delete;
    PendingCommand& operator=(const PendingCommand&) = delete;
    // Blocks until the reply arrives (or the 30 s socket timeout passes).
    internal::Reply Wait();

   private:
    friend class RedisServer;
    PendingCommand() = default;
    void* context_ = nullptr;  // a redisContext
    std::string error_;        // set when the command could not be sent
  };
  std::unique_ptr<PendingCommand> Send(const std::vector<std::string>& argv);

  // INFO commandstats as command name -> calls (e.g. "evalsha" -> 3).
  std::map<std::string, long long> CommandCalls();

  // For a master: waits until `count` replicas have finished their sync, by
  // Redis's own WAIT (the server answers when they acknowledge; bounded).
  bool WaitForReplicas(int count);

 private:
  std::string config_path() const { return dir_ + "/redis.conf"; }
  bool Launch();
  bool WaitReady();
  void Reap(int signal);

  Config config_;
  std::string dir_;
  int port_ = 0;
  int cluster_port_ = 0;  // with Config::cluster
  pid_t pid_ = -1;
  bool paused_ = false;
};

// Whether there is a redis-server to start: configuring does not require one
// (SF_REDIS_SERVER is then empty), so that the unit tests build and run on a
// machine without it and the integration tests report themselves skipped.
bool RedisServerAvailable();

}  // namespace singleflight::test

// Starts `server` in a test (or its SetUp), skipping the test with the reason
// when there is no redis-server, failing it when the server does not start.
#define SF_START_REDIS(server)                                                            \
  do {                                                                                    \
    if (!::singleflight::test::RedisServerAvailable()) {                                  \
      GTEST_SKIP() << "no redis-server (apt-get install redis-server, then reconfigure)"; \
    }                                                                                     \
    ASSERT_TRUE((server).Start()) << "redis-server did not start";                        \
  } while (0)
