// SentinelSet: a real Redis Sentinel deployment owned by one test — one
// master, one replica of it and one Sentinel monitoring the master (quorum 1),
// each a RedisServer on its own free loopback port and in its own temp dir —
// with the fault the Sentinel tests need: kill the master and wait for the
// Sentinel to promote the replica.
//
// Start returns once a failover can succeed: the replica has finished its
// first sync and the Sentinel knows it as a healthy replica. (Sentinel aborts
// a failover with -failover-abort-no-good-slave otherwise, and then refuses
// another for twice the failover timeout.)
//
// Timings set here: down-after-milliseconds 1000, failover-timeout 5000,
// parallel-syncs 1, repl-diskless-sync-delay 0 on both data servers. So a
// failover takes about 2–3 s after the kill, and a second failover of the same
// master cannot start within 10 s of the first.
//
// Not thread-safe; test side only (every call blocks). The destructor stops
// the Sentinel first (so that it starts no failover meanwhile), then the
// replica and the master, and removes their directories.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "redis_reply.h"
#include "support/redis_server.h"

namespace singleflight::test {

class SentinelSet {
 public:
  struct Config {
    std::string master_name;  // empty: "sf-master"
    // requirepass of the master and the replica (which also gets it as
    // masterauth); the Sentinel gets it as its auth-pass for the master.
    std::string requirepass;
    // The Sentinel's own requirepass: its clients must AUTH with it.
    std::string sentinel_requirepass;
  };

  struct Address {
    std::string host;
    int port = 0;
  };

  explicit SentinelSet(Config config = {});
  ~SentinelSet();
  SentinelSet(const SentinelSet&) = delete;
  SentinelSet& operator=(const SentinelSet&) = delete;

  // Starts the master, then the replica, waits for the replica's
  // master_link_status:up, then starts the Sentinel (whose first INFO of the
  // master then already lists the replica) and waits until SENTINEL replicas
  // shows the replica healthy. Bounded (60 s); false with error() set if any
  // step fails. Call once.
  bool Start();

  // The servers as started: after a failover, replica() is the master.
  RedisServer& master() { return *master_; }
  RedisServer& replica() { return *replica_; }
  const std::string& master_name() const { return name_; }
  std::string sentinel_host() const;
  int sentinel_port() const;

  // A synchronous command to the Sentinel on a fresh blocking connection,
  // authenticated with Config::sentinel_requirepass if set (as
  // RedisServer::Command).
  internal::Reply Command(const std::vector<std::string>& argv);

  // SIGKILLs the master (waits until it is gone).
  void KillMaster();

  // Waits for the next +switch-master of this master that the Sentinel
  // publishes (the fixture subscribes in Start, so a failover however caused
  // is seen, and each is returned once), then checks that the promoted server
  // answers ROLE as master. Returns its address, or port 0 with error() set
  // when `timeout` passes first (which ends the subscription: later calls
  // fail too) or the check fails.
  Address WaitForFailover(std::chrono::milliseconds timeout);

  // Why the last Start or WaitForFailover failed, with the tail of the
  // Sentinel's log.
  const std::string& error() const { return error_; }

 private:
  bool Fail(const std::string& message, const RedisServer* log_of);
  bool Subscribe();

  Config config_;
  std::string name_;
  std::unique_ptr<RedisServer> master_;
  std::unique_ptr<RedisServer> replica_;
  std::unique_ptr<RedisServer> sentinel_;
  // A blocking hiredis context (redisContext) subscribed to +switch-master on
  // the Sentinel since Start; messages queue in its socket until read.
  struct Subscription;
  std::unique_ptr<Subscription> subscription_;
  std::string error_;
};

}  // namespace singleflight::test

// Starts `set` in a test (or its SetUp), skipping the test with the reason
// when there is no redis-server, failing it with the reason when the set does
// not become ready.
#define SF_START_SENTINEL_SET(set)                                                        \
  do {                                                                                    \
    if (!::singleflight::test::RedisServerAvailable()) {                                  \
      GTEST_SKIP() << "no redis-server (apt-get install redis-server, then reconfigure)"; \
    }                                                                                     \
    ASSERT_TRUE((set).Start()) << (set).error();                                          \
  } while (0)
