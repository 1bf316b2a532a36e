// RedisCluster: a real Redis Cluster owned by one test — N masters (3 by
// default), each with R replicas (0 by default), each a RedisServer
// (Config::cluster) on its own free loopback ports and in its own temp dir,
// joined by `redis-cli --cluster create` — with what the Cluster tests need:
// which node owns a slot, a command sent where its key lives, a master killed
// and its replica promoted, and a slot migrated by hand in two steps, so that
// a client sees ASK during the migration and MOVED after it.
//
// Shards: shard i is a master and its replicas, numbered by the slots the
// master held when the cluster was created (shard 0 owns slot 0). A shard
// keeps its number through a failover: master(i) is then the promoted
// replica. Slots migrated between masters do not change the shards.
//
// Every question about the cluster (KeySlot, NodeForSlot, the readiness and
// failover checks) is asked of the servers, never computed here, so that the
// fixture stays independent of the library's own CRC16 and slot map.
//
// Timings set here: cluster-node-timeout 2000, repl-diskless-sync-delay 0,
// repl-ping-replica-period 1. So a master is declared failed about 2 s after
// it dies and a replica is promoted within another second or two (its
// election waits 500-1000 ms); Start takes about 2 s, most of it redis-cli.
//
// Not thread-safe; test side only (every call blocks). The destructor kills
// every server and removes their directories.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_reply.h"
#include "support/redis_server.h"

namespace singleflight::test {

class RedisCluster {
 public:
  static constexpr int kSlots = 16384;

  struct Config {
    int masters = 3;
    int replicas_per_master = 0;
  };

  // Two constructors, not a `Config config = {}` default argument: GCC
  // rejects that for a nested struct with default member initialisers.
  RedisCluster();
  explicit RedisCluster(Config config);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // Starts every server, creates the cluster with redis-cli (checking its
  // exit status and its "[OK] All 16384 slots covered"), and returns once the
  // cluster is usable: every node says cluster_state:ok and reports the same
  // CLUSTER SLOTS — every slot owned, by the expected number of masters, each
  // listed with all its replicas — and every replica's link to its master is
  // up (its first sync done, without which it would not be promoted).
  // Bounded (60 s); false with error() set if any step fails. Call once.
  bool Start();

  int shard_count() const { return static_cast<int>(shards_.size()); }
  // The master of shard `shard` as last observed (by Start or
  // WaitForFailover): after KillMaster and before WaitForFailover, the dead
  // one.
  RedisServer& master(int shard);
  // The current master of every shard, in shard order.
  std::vector<RedisServer*> masters();
  // The other servers of shard `shard` that KillMaster did not kill.
  std::vector<RedisServer*> replicas(int shard);
  // The node ID (CLUSTER MYID) of one of the cluster's servers.
  std::string NodeId(const RedisServer& server) const;

  // The slot of `key` by CLUSTER KEYSLOT; -1 with error() set if no node
  // answers.
  int KeySlot(std::string_view key);
  // The master that owns `slot` by CLUSTER SLOTS of a live node (a master
  // if one is live); nullptr with error() set if none answers or the owner
  // is not one of ours. During a migration, the node it is migrating from.
  RedisServer* NodeForSlot(int slot);

  // `argv` sent to the node that owns `key`'s slot, for test-side checks.
  // A MOVED or ASK reply is followed once (ASK with ASKING first, on the
  // same connection); a second redirection comes back as it is.
  internal::Reply Command(std::string_view key, const std::vector<std::string>& argv);

  // SIGKILLs the current master of `shard` (waits until it is gone).
  void KillMaster(int shard);
  // Waits until one of the shard's replicas says ROLE master and the live
  // nodes agree again (cluster_state:ok on each, the same CLUSTER SLOTS,
  // every slot owned by a live master), then makes it master(shard) and
  // returns it; nullptr with error() set when `timeout` passes first.
  RedisServer* WaitForFailover(int shard, std::chrono::milliseconds timeout);

  // Moves `slot` from the master that owns it to `to` (another master of the
  // cluster), by hand as Redis documents it, in two steps:
  //   Begin: CLUSTER SETSLOT IMPORTING on `to`, MIGRATING on the owner, then
  //     MIGRATEs every key of the slot to `to`. Until Finish the owner
  //     answers a command for any key of the slot with ASK to `to`, and `to`
  //     answers it only after ASKING (else MOVED back to the owner).
  //   Finish: MIGRATEs any key left, CLUSTER SETSLOT NODE on `to`, the old
  //     owner and every other live master, and returns once every live node
  //     reports `to` as the owner in CLUSTER SLOTS: from then on every other
  //     node answers MOVED to `to`.
  // False with error() set if a step fails (the slot may then be left
  // half-migrated). MigrateSlot does both.
  bool BeginSlotMigration(int slot, RedisServer& to);
  bool FinishSlotMigration(int slot);
  bool MigrateSlot(int slot, RedisServer& to);

  // Why the last failed call failed, with the tail of a relevant log.
  const std::string& error() const { return error_; }

 private:
  struct Node {
    std::unique_ptr<RedisServer> server;
    std::string id;  // CLUSTER MYID, known once Start has created the cluster
    int shard = -1;
    bool killed = false;  // by KillMaster
  };
  // One entry of CLUSTER SLOTS, with servers as indices into nodes_.
  struct SlotRange {
    int first = 0;
    int last = 0;
    int master = -1;
    std::vector<int> replicas;  // sorted
    bool operator==(const SlotRange& other) const;
  };
  using SlotMap = std::vector<SlotRange>;  // sorted by first slot
  struct Migration {
    int from = -1;  // nodes_ indices
    int to = -1;
  };

  bool Fail(const std::string& message, const RedisServer* log_of);
  int IndexOf(const RedisServer& server) const;
  int IndexOfPort(int port) const;
  // A live node to ask about the cluster: a master if one is live.
  RedisServer* AnyLiveNode();
  // CLUSTER SLOTS of one node; false with `*why` set if it does not answer
  // or names a server that is not ours.
  bool ReadSlots(RedisServer& server, SlotMap* map, std::string* why);
  // Whether every live node says cluster_state:ok and reports the same slot
  // map covering every slot, each owned by a live master; the map in `*map`,
  // or the reason it is not agreed yet in `*why`.
  bool Agreed(SlotMap* map, std::string* why);
  bool MoveKeys(int slot, int from, int to);

  Config config_;
  std::vector<Node> nodes_;
  std::vector<int> shards_;              // shard -> nodes_ index of its master
  std::map<int, Migration> migrations_;  // slot -> begun, not finished
  std::string error_;
};

// Whether redis-cli, which creates the cluster, is there (see SF_REDIS_CLI).
bool RedisCliAvailable();

}  // namespace singleflight::test

// Starts `cluster` in a test (or its SetUp), skipping the test with the
// reason when there is no redis-server or redis-cli, failing it with the
// reason when the cluster does not become usable.
#define SF_START_REDIS_CLUSTER(cluster)                                                   \
  do {                                                                                    \
    if (!::singleflight::test::RedisServerAvailable()) {                                  \
      GTEST_SKIP() << "no redis-server (apt-get install redis-server, then reconfigure)"; \
    }                                                                                     \
    if (!::singleflight::test::RedisCliAvailable()) {                                     \
      GTEST_SKIP() << "no redis-cli (apt-get install redis-tools, then reconfigure)";     \
    }                                                                                     \
    ASSERT_TRUE((cluster).Start()) << (cluster).error();                                  \
  } while (0)
