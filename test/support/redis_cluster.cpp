#include "support/redis_cluster.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <tuple>
#include <utility>

#include "support/child_process.h"
#include "support/poll.h"
#include "support/replies.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;
using internal::Reply;

// Generous: on a quiet machine Start takes a few seconds (redis-cli create
// itself waits for the nodes to meet).
constexpr auto kStartTimeout = std::chrono::seconds(60);
constexpr auto kMigrationTimeout = std::chrono::seconds(60);
// Keys moved per MIGRATE, and its own timeout for the transfer.
constexpr int kMigrateBatch = 100;
constexpr const char* kMigrateTimeoutMs = "5000";

uint64_t MillisecondsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<uint64_t>(left.count()) : 1;
}

// redis-cli colours its output even into a pipe; the escapes only clutter
// an error message.
std::string WithoutColours(const std::string& text) {
  std::string plain;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      size_t end = text.find('m', i);
      if (end != std::string::npos) {
        i = end;
        continue;
      }
    }
    plain += text[i];
  }
  return plain;
}

bool IsOk(const Reply& reply) {
  return reply.type == Reply::Type::kStatus && reply.str == "OK";
}

// The port of "host:port" (as in MOVED and ASK), or 0.
int PortOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? 0 : std::atoi(address.c_str() + colon + 1);
}

}  // namespace

bool RedisCliAvailable() {
  const char* path = SF_REDIS_CLI;
  return path[0] != '\0' && access(path, X_OK) == 0;
}

bool RedisCluster::SlotRange::operator==(const SlotRange& other) const {
  return std::tie(first, last, master, replicas) ==
         std::tie(other.first, other.last, other.master, other.replicas);
}

RedisCluster::RedisCluster() : RedisCluster(Config{}) {}
RedisCluster::RedisCluster(Config config) : config_(config) {}

RedisCluster::~RedisCluster() {
  // Nothing of theirs is kept, so there is no clean shutdown to wait for (a
  // master's SIGTERM waits for lagging replicas).
  for (Node& node : nodes_) node.server->Kill();
}

bool RedisCluster::Fail(const std::string& message, const RedisServer* log_of) {
  error_ = message;
  if (log_of != nullptr && !log_of->dir().empty()) {
    error_ += "\nlast lines of " + log_of->dir() + "/redis.log:" + log_of->LogTail();
  }
  return false;
}

bool RedisCluster::Start() {
  if (!nodes_.empty()) return Fail("Start called twice", nullptr);
  if (config_.masters < 3 || config_.replicas_per_master < 0) {
    // redis-cli --cluster create refuses fewer than 3 masters.
    return Fail("a cluster needs at least 3 masters and no negative replica count", nullptr);
  }
  auto deadline = Clock::now() + kStartTimeout;

  RedisServer::Config node;
  node.cluster = true;
  // A full sync waits repl-diskless-sync-delay (5 s by default) for more
  // replicas to join it. CLUSTER SLOTS lists a replica only once its
  // replication offset is not 0, which after a sync of an empty master takes
  // the master's first replication PING: repl-ping-replica-period, 10 s by
  // default.
  node.extra_args = {"--cluster-node-timeout",     "2000", "--repl-diskless-sync-delay", "0",
                     "--repl-ping-replica-period", "1"};
  const int count = config_.masters * (1 + config_.replicas_per_master);
  std::vector<std::string> create = {"--cluster", "create"};
  for (int i = 0; i < count; ++i) {
    nodes_.emplace_back();
    nodes_.back().server = std::make_unique<RedisServer>(node);
    RedisServer& server = *nodes_.back().server;
    if (!server.Start()) return Fail("node " + std::to_string(i) + " did not start", &server);
    create.push_back(server.host() + ":" + std::to_string(server.port()));
  }
  create.insert(create.end(), {"--cluster-replicas", std::to_string(config_.replicas_per_master),
                               "--cluster-yes"});
  ProgramRun run = RunProgram(SF_REDIS_CLI, create, MillisecondsLeft(deadline));
  std::string output = WithoutColours(run.output);
  if (!run.succeeded() || output.find("[OK] All 16384 slots covered") == std::string::npos) {
    return Fail(std::string("redis-cli --cluster create ") +
                    (run.ended ? "failed" : "did not end within 60 s") + "; its output:\n" + output,
                nodes_.front().server.get());
  }

  for (Node& n : nodes_) {
    Reply id = n.server->Command({"CLUSTER", "MYID"});
    if (id.type != Reply::Type::kString || id.str.empty()) {
      return Fail("CLUSTER MYID: " + DescribeReply(id), n.server.get());
    }
    n.id = id.str;
  }

  SlotMap map;
  std::string why;
  if (!PollUntil(deadline, [&] {
        if (!Agreed(&map, &why)) return false;
        std::set<int> masters;
        for (const SlotRange& range : map) {
          masters.insert(range.master);
          if (static_cast<int>(range.replicas.size()) != config_.replicas_per_master) {
            why = "slots " + std::to_string(range.first) + "-" + std::to_string(range.last) +
                  " list " + std::to_string(range.replicas.size()) + " replicas";
            return false;
          }
          for (int replica : range.replicas) {
            std::string info = nodes_[replica].server->Command({"INFO", "replication"}).str;
            if (info.find("master_link_status:up") == std::string::npos) {
              why = "the link of node " + std::to_string(replica) + " to its master is not up";
              return false;
            }
          }
        }
        if (static_cast<int>(masters.size()) != config_.masters) {
          why = std::to_string(masters.size()) + " masters own slots";
          return false;
        }
        return true;
      })) {
    return Fail("the cluster was not usable within 60 s: " + why, nodes_.front().server.get());
  }

  // Shards in slot order; redis-cli's own assignment of replicas to masters
  // is not the order they were given in (it shuffles them for
  // "anti-affinity"), so it is read back.
  for (const SlotRange& range : map) {
    Node& master = nodes_[range.master];
    if (master.shard < 0) {
      master.shard = static_cast<int>(shards_.size());
      shards_.push_back(range.master);
    }
    for (int replica : range.replicas) nodes_[replica].shard = master.shard;
  }
  return true;
}

RedisServer& RedisCluster::master(int shard) {
  return *nodes_[shards_.at(shard)].server;
}

std::vector<RedisServer*> RedisCluster::masters() {
  std::vector<RedisServer*> servers;
  for (int index : shards_) servers.push_back(nodes_[index].server.get());
  return servers;
}

std::vector<RedisServer*> RedisCluster::replicas(int shard) {
  std::vector<RedisServer*> servers;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& node = nodes_[i];
    if (node.shard == shard && !node.killed && static_cast<int>(i) != shards_.at(shard)) {
      servers.push_back(node.server.get());
    }
  }
  return servers;
}

std::string RedisCluster::NodeId(const RedisServer& server) const {
  int index = IndexOf(server);
  return index < 0 ? std::string() : nodes_[index].id;
}

int RedisCluster::IndexOf(const RedisServer& server) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].server.get() == &server) return static_cast<int>(i);
  }
  return -1;
}

int RedisCluster::IndexOfPort(int port) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].server->port() == port) return static_cast<int>(i);
  }
  return -1;
}

RedisServer* RedisCluster::AnyLiveNode() {
  for (int index : shards_) {
    if (!nodes_[index].killed) return nodes_[index].server.get();
  }
  for (Node& node : nodes_) {
    if (!node.killed) return node.server.get();
  }
  return nullptr;
}

bool RedisCluster::ReadSlots(RedisServer& server, SlotMap* map, std::string* why) {
  Reply slots = server.Command({"CLUSTER", "SLOTS"});
  std::string port = std::to_string(server.port());
  if (slots.type != Reply::Type::kArray) {
    *why = "CLUSTER SLOTS on port " + port + ": " + DescribeReply(slots);
    return false;
  }
  map->clear();
  // [first, last, [ip, port, id, ...] of the master, then of each replica]
  for (const Reply& entry : slots.elements) {
    if (entry.elements.size() < 3) {
      *why = "CLUSTER SLOTS on port " + port + " has an entry " + DescribeReply(entry);
      return false;
    }
    SlotRange range;
    range.first = static_cast<int>(entry.elements[0].integer);
    range.last = static_cast<int>(entry.elements[1].integer);
    for (size_t i = 2; i < entry.elements.size(); ++i) {
      const Reply& address = entry.elements[i];
      int index = address.elements.size() >= 2
                      ? IndexOfPort(static_cast<int>(address.elements[1].integer))
                      : -1;
      if (index < 0) {
        *why =
            "CLUSTER SLOTS on port " + port + " names a server not ours: " + DescribeReply(address);
        return false;
      }
      if (i == 2) {
        range.master = index;
      } else {
        range.replicas.push_back(index);
      }
    }
    std::sort(range.replicas.begin(), range.replicas.end());
    map->push_back(std::move(range));
  }
  std::sort(map->begin(), map->end(),
            [](const SlotRange& a, const SlotRange& b) { return a.first < b.first; });
  return true;
}

bool RedisCluster::Agreed(SlotMap* map, std::string* why) {
  bool first = true;
  std::string first_port;
  for (const Node& node : nodes_) {
    if (node.killed) continue;
    RedisServer& server = *node.server;
    std::string port = std::to_string(server.port());
    Reply info = server.Command({"CLUSTER", "INFO"});
    if (info.str.find("cluster_state:ok") == std::string::npos) {
      *why = "port " + port + " says " + info.str.substr(0, info.str.find('\r'));
      return false;
    }
    SlotMap seen;
    if (!ReadSlots(server, &seen, why)) return false;
    if (first) {
      *map = std::move(seen);
      first = false;
      first_port = port;
    } else if (seen != *map) {
      *why = "port " + port + " disagrees with port " + first_port + " on CLUSTER SLOTS";
      return false;
    }
  }
  if (first) {
    *why = "no live node";
    return false;
  }
  int covered = 0;
  for (const SlotRange& range : *map) {
    if (nodes_[range.master].killed) {
      *why = "slots " + std::to_string(range.first) + "-" + std::to_string(range.last) +
             " are still owned by the killed node " + std::to_string(range.master);
      return false;
    }
    covered += range.last - range.first + 1;
  }
  if (covered != kSlots) {
    *why = std::to_string(covered) + " slots are owned";
    return false;
  }
  return true;
}

int RedisCluster::KeySlot(std::string_view key) {
  RedisServer* node = AnyLiveNode();
  if (node == nullptr) {
    Fail("no live node", nullptr);
    return -1;
  }
  Reply slot = node->Command({"CLUSTER", "KEYSLOT", std::string(key)});
  if (slot.type != Reply::Type::kInteger) {
    Fail("CLUSTER KEYSLOT: " + DescribeReply(slot), node);
    return -1;
  }
  return static_cast<int>(slot.integer);
}

RedisServer* RedisCluster::NodeForSlot(int slot) {
  if (slot < 0 || slot >= kSlots) {
    Fail("no slot " + std::to_string(slot), nullptr);
    return nullptr;
  }
  RedisServer* node = AnyLiveNode();
  if (node == nullptr) {
    Fail("no live node", nullptr);
    return nullptr;
  }
  SlotMap map;
  std::string why;
  if (!ReadSlots(*node, &map, &why)) {
    Fail(why, node);
    return nullptr;
  }
  for (const SlotRange& range : map) {
    if (range.first <= slot && slot <= range.last) return nodes_[range.master].server.get();
  }
  Fail("port " + std::to_string(node->port()) + " knows no owner of slot " + std::to_string(slot),
       node);
  return nullptr;
}

internal::Reply RedisCluster::Command(std::string_view key, const std::vector<std::string>& argv) {
  int slot = KeySlot(key);
  RedisServer* node = slot < 0 ? nullptr : NodeForSlot(slot);
  if (node == nullptr) return Err(error_);
  Reply reply = node->Command(argv);
  if (!reply.is_error()) return reply;
  // "MOVED <slot> <host:port>" or "ASK <slot> <host:port>"
  std::vector<std::string> words = SplitWords(reply.str);
  if (words.size() != 3 || (words[0] != "MOVED" && words[0] != "ASK")) return reply;
  int index = IndexOfPort(PortOf(words[2]));
  if (index < 0) return reply;
  RedisServer& target = *nodes_[index].server;
  if (words[0] == "ASK") return target.Commands({{"ASKING"}, argv})[1];
  return target.Command(argv);
}

void RedisCluster::KillMaster(int shard) {
  Node& node = nodes_[shards_.at(shard)];
  node.server->Kill();
  node.killed = true;
}

RedisServer* RedisCluster::WaitForFailover(int shard, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::vector<RedisServer*> candidates = replicas(shard);
  if (candidates.empty()) {
    Fail("shard " + std::to_string(shard) + " has no live replica to promote", nullptr);
    return nullptr;
  }
  RedisServer* promoted = nullptr;
  SlotMap map;
  std::string why;
  if (!PollUntil(deadline, [&] {
        promoted = nullptr;
        for (RedisServer* candidate : candidates) {
          Reply role = candidate->Command({"ROLE"});
          if (!role.elements.empty() && role.elements[0].str == "master") promoted = candidate;
        }
        if (promoted == nullptr) {
          why = "no replica of shard " + std::to_string(shard) + " says ROLE master";
          return false;
        }
        if (!Agreed(&map, &why)) return false;
        int index = IndexOf(*promoted);
        for (const SlotRange& range : map) {
          if (range.master == index) return true;
        }
        why = "the promoted port " + std::to_string(promoted->port()) + " owns no slot";
        return false;
      })) {
    Fail("no failover of shard " + std::to_string(shard) + " within " +
             std::to_string(timeout.count()) + " ms: " + why,
         promoted != nullptr ? promoted : candidates.front());
    return nullptr;
  }
  shards_[shard] = IndexOf(*promoted);
  return promoted;
}

bool RedisCluster::MoveKeys(int slot, int from, int to) {
  RedisServer& source = *nodes_[from].server;
  const RedisServer& target = *nodes_[to].server;
  auto deadline = Clock::now() + kMigrationTimeout;
  for (;;) {
    Reply keys = source.Command(
        {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(kMigrateBatch)});
    if (keys.type != Reply::Type::kArray) {
      return Fail("CLUSTER GETKEYSINSLOT: " + DescribeReply(keys), &source);
    }
    if (keys.elements.empty()) return true;
    if (Clock::now() >= deadline) {
      return Fail("slot " + std::to_string(slot) + " still has keys after 60 s of MIGRATE",
                  &source);
    }
    std::vector<std::string> migrate = {"MIGRATE", target.host(), std::to_string(target.port()),
                                        "",        "0",           kMigrateTimeoutMs,
                                        "KEYS"};
    for (const Reply& key : keys.elements) migrate.push_back(key.str);
    Reply moved = source.Command(migrate);
    // NOKEY: the keys went away meanwhile.
    if (!IsOk(moved) && moved.str != "NOKEY") {
      return Fail("MIGRATE: " + DescribeReply(moved), &source);
    }
  }
}

bool RedisCluster::BeginSlotMigration(int slot, RedisServer& to) {
  if (migrations_.count(slot) != 0) {
    return Fail("slot " + std::to_string(slot) + " is already being migrated", nullptr);
  }
  int target = IndexOf(to);
  if (target < 0 || nodes_[target].killed ||
      std::find(shards_.begin(), shards_.end(), target) == shards_.end()) {
    return Fail("the target of a migration must be a live master of the cluster", nullptr);
  }
  RedisServer* owner = NodeForSlot(slot);
  if (owner == nullptr) return false;
  int source = IndexOf(*owner);
  if (source == target) {
    return Fail("port " + std::to_string(to.port()) + " already owns slot " + std::to_string(slot),
                nullptr);
  }
  // The target first, as Redis documents: a client redirected by ASK must
  // find it importing.
  Reply importing =
      to.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", nodes_[source].id});
  if (!IsOk(importing)) {
    return Fail("CLUSTER SETSLOT IMPORTING: " + DescribeReply(importing), &to);
  }
  Reply migrating =
      owner->Command({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", nodes_[target].id});
  if (!IsOk(migrating)) {
    return Fail("CLUSTER SETSLOT MIGRATING: " + DescribeReply(migrating), owner);
  }
  if (!MoveKeys(slot, source, target)) return false;
  migrations_[slot] = Migration{source, target};
  return true;
}

bool RedisCluster::FinishSlotMigration(int slot) {
  auto found = migrations_.find(slot);
  if (found == migrations_.end()) {
    return Fail("slot " + std::to_string(slot) + " is not being migrated", nullptr);
  }
  Migration migration = found->second;
  migrations_.erase(found);
  if (!MoveKeys(slot, migration.from, migration.to)) return false;
  // The target first, as Redis documents: it takes a new config epoch, so
  // its claim wins over the old owner's in the gossip.
  std::vector<int> order = {migration.to, migration.from};
  for (int index : shards_) {
    if (index != migration.to && index != migration.from) order.push_back(index);
  }
  const std::string& target_id = nodes_[migration.to].id;
  for (int index : order) {
    if (nodes_[index].killed) continue;
    RedisServer& server = *nodes_[index].server;
    Reply set = server.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", target_id});
    if (!IsOk(set)) return Fail("CLUSTER SETSLOT NODE: " + DescribeReply(set), &server);
  }
  SlotMap map;
  std::string why;
  if (!PollUntil(Clock::now() + kMigrationTimeout, [&] {
        if (!Agreed(&map, &why)) return false;
        for (const SlotRange& range : map) {
          if (range.first <= slot && slot <= range.last) {
            if (range.master == migration.to) return true;
            why = "slot " + std::to_string(slot) + " is still owned by port " +
                  std::to_string(nodes_[range.master].server->port());
            return false;
          }
        }
        return false;
      })) {
    return Fail("the nodes did not agree on the migrated slot within 60 s: " + why,
                nodes_[migration.to].server.get());
  }
  return true;
}

bool RedisCluster::MigrateSlot(int slot, RedisServer& to) {
  return BeginSlotMigration(slot, to) && FinishSlotMigration(slot);
}

}  // namespace singleflight::test
