// ClusterNodes: the bench's own bookkeeping connections, on a standalone
// server or on every master of a Redis Cluster (RedisOptions::cluster).
//
// sf_bench counts executions with INCR and Redis's work with INFO
// commandstats. On a cluster, a counter's key lives on one master (a MOVED
// from the seed names it) and each master counts only its own commands, so
// both must go to every master. Blocking, single-threaded; bookkeeping only,
// never the library's traffic.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/redis_target.h"
#include "common/sync_redis.h"

namespace bench {

class ClusterNodes {
 public:
  // nullptr and the reason when the seed cannot be reached.
  static std::unique_ptr<ClusterNodes> Connect(const examples::RedisTarget& seed,
                                               std::string* error);

  // argv on the node that owns its key: sent to the seed, then where each
  // MOVED says (3 hops at most). Standalone: the seed's reply.
  examples::Reply Routed(const std::vector<std::string>& argv);

  // Every master in CLUSTER SLOTS (asked afresh) when the seed is a cluster
  // node; otherwise (standalone) the seed.
  std::vector<examples::SyncRedis*> Masters();

 private:
  examples::SyncRedis* Node(const std::string& host, int port);

  examples::RedisTarget seed_;
  std::unique_ptr<examples::SyncRedis> seed_connection_;
  std::map<std::string, std::unique_ptr<examples::SyncRedis>> nodes_;  // "host:port"
};

}  // namespace bench
