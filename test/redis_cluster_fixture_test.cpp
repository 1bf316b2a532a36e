// The RedisCluster fixture against real servers, checked only through its own
// synchronous connections (and a blocking hiredis connection for sharded
// pub/sub): the node it names as a slot's owner is the one the others redirect
// to, before and after a migration and a failover. Nothing of the library
// runs. Timings are printed, not asserted.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "hiredis_reply.h"
#include "support/redis_cluster.h"
#include "support/replies.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;
using internal::Reply;

long long MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

std::string Address(const RedisServer& server) {
  return server.host() + ":" + std::to_string(server.port());
}

// What a node answers for a key of `slot` that `owner` owns.
std::string Moved(int slot, const RedisServer& owner) {
  return "MOVED " + std::to_string(slot) + " " + Address(owner);
}
std::string Ask(int slot, const RedisServer& target) {
  return "ASK " + std::to_string(slot) + " " + Address(target);
}

// A master other than `owner`.
RedisServer* OtherMaster(RedisCluster& cluster, const RedisServer* owner) {
  for (RedisServer* master : cluster.masters()) {
    if (master != owner) return master;
  }
  return nullptr;
}

// A blocking hiredis connection that reads pushed messages as replies.
class Subscriber {
 public:
  explicit Subscriber(const RedisServer& server) {
    timeval timeout{5, 0};
    context_ = redisConnectWithTimeout(server.host().c_str(), server.port(), timeout);
    if (context_ != nullptr && context_->err == 0) redisSetTimeout(context_, timeout);
  }
  ~Subscriber() {
    if (context_ != nullptr) redisFree(context_);
  }
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  bool connected() const { return context_ != nullptr && context_->err == 0; }
  Reply Command(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<size_t> lengths;
    for (const std::string& arg : argv) {
      args.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    return Take(
        redisCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data()));
  }
  // The next pushed message (within the 5 s socket timeout).
  Reply Next() {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK) return Err(context_->errstr);
    return Take(raw);
  }

 private:
  Reply Take(void* raw) {
    if (raw == nullptr) return Err(context_->errstr);
    Reply reply = internal::ToReply(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    return reply;
  }
  redisContext* context_ = nullptr;
};

std::vector<std::string> Strings(const Reply& reply) {
  std::vector<std::string> strings;
  for (const Reply& element : reply.elements) {
    strings.push_back(element.type == Reply::Type::kInteger ? std::to_string(element.integer)
                                                            : element.str);
  }
  return strings;
}

// A flight's names share one slot by their hash tag.
constexpr const char* kKey = "sf:{user:42}:result";
constexpr const char* kChannel = "sf:{user:42}:ch";

TEST(RedisClusterFixture, TheOwnerServesAKeyAndEveryOtherMasterRedirectsToIt) {
  RedisCluster cluster;
  Clock::time_point start = Clock::now();
  SF_START_REDIS_CLUSTER(cluster);
  std::cout << "[ timing ] RedisCluster::Start (3 masters): " << MillisecondsSince(start)
            << " ms\n";
  ASSERT_EQ(cluster.shard_count(), 3);
  EXPECT_EQ(cluster.NodeForSlot(0), &cluster.master(0));
  EXPECT_EQ(cluster.NodeForSlot(RedisCluster::kSlots - 1), &cluster.master(2));

  int slot = cluster.KeySlot(kKey);
  ASSERT_GE(slot, 0) << cluster.error();
  EXPECT_EQ(slot, cluster.KeySlot("sf:{user:42}:lock"));
  RedisServer* owner = cluster.NodeForSlot(slot);
  ASSERT_NE(owner, nullptr) << cluster.error();

  for (RedisServer* master : cluster.masters()) {
    Reply set = master->Command({"SET", kKey, "v"});
    if (master == owner) {
      EXPECT_EQ(set.str, "OK");
    } else {
      EXPECT_TRUE(set.is_error());
      EXPECT_EQ(set.str, Moved(slot, *owner));
    }
  }
  EXPECT_EQ(cluster.Command(kKey, {"GET", kKey}).str, "v");
}

TEST(RedisClusterFixture, ShardedPubSubDeliversOnTheOwner) {
  RedisCluster cluster;
  SF_START_REDIS_CLUSTER(cluster);
  int slot = cluster.KeySlot(kChannel);
  RedisServer* owner = cluster.NodeForSlot(slot);
  ASSERT_NE(owner, nullptr) << cluster.error();

  Subscriber subscriber(*owner);
  ASSERT_TRUE(subscriber.connected());
  EXPECT_EQ(Strings(subscriber.Command({"SSUBSCRIBE", kChannel})),
            (std::vector<std::string>{"ssubscribe", kChannel, "1"}));
  Reply published = owner->Command({"SPUBLISH", kChannel, "payload"});
  EXPECT_EQ(published.type, Reply::Type::kInteger) << DescribeReply(published);
  EXPECT_EQ(published.integer, 1);
  EXPECT_EQ(Strings(subscriber.Next()),
            (std::vector<std::string>{"smessage", kChannel, "payload"}));

  RedisServer* other = OtherMaster(cluster, owner);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->Command({"SPUBLISH", kChannel, "payload"}).str, Moved(slot, *owner));
}

TEST(RedisClusterFixture, AMigrationAnswersAskUntilItFinishesThenMoved) {
  RedisCluster cluster;
  SF_START_REDIS_CLUSTER(cluster);
  int slot = cluster.KeySlot(kKey);
  ASSERT_EQ(cluster.Command(kKey, {"SET", kKey, "v"}).str, "OK");
  RedisServer* from = cluster.NodeForSlot(slot);
  ASSERT_NE(from, nullptr) << cluster.error();
  RedisServer* to = OtherMaster(cluster, from);
  ASSERT_NE(to, nullptr);
  // A shard subscriber of the slot is told when its node loses the slot.
  Subscriber subscriber(*from);
  ASSERT_TRUE(subscriber.connected());
  ASSERT_EQ(Strings(subscriber.Command({"SSUBSCRIBE", kChannel})),
            (std::vector<std::string>{"ssubscribe", kChannel, "1"}));

  Clock::time_point begun = Clock::now();
  ASSERT_TRUE(cluster.BeginSlotMigration(slot, *to)) << cluster.error();
  std::cout << "[ timing ] BeginSlotMigration (1 key): " << MillisecondsSince(begun) << " ms\n";
  EXPECT_EQ(cluster.NodeForSlot(slot), from);
  EXPECT_EQ(from->Command({"GET", kKey}).str, Ask(slot, *to));
  // The importing node serves the slot only after ASKING.
  EXPECT_EQ(to->Command({"GET", kKey}).str, Moved(slot, *from));
  std::vector<Reply> asked = to->Commands({{"ASKING"}, {"GET", kKey}});
  EXPECT_EQ(asked[0].str, "OK");
  EXPECT_EQ(asked[1].str, "v");
  EXPECT_EQ(cluster.Command(kKey, {"GET", kKey}).str, "v");

  Clock::time_point finishing = Clock::now();
  ASSERT_TRUE(cluster.FinishSlotMigration(slot)) << cluster.error();
  std::cout << "[ timing ] FinishSlotMigration (until all agree): " << MillisecondsSince(finishing)
            << " ms\n";
  EXPECT_EQ(cluster.NodeForSlot(slot), to);
  for (RedisServer* master : cluster.masters()) {
    EXPECT_EQ(master->Command({"GET", kKey}).str, master == to ? "v" : Moved(slot, *to));
  }
  EXPECT_EQ(Strings(subscriber.Next()), (std::vector<std::string>{"sunsubscribe", kChannel, "0"}));
}

TEST(RedisClusterFixture, AKilledMastersReplicaIsPromotedAndTakesItsSlots) {
  RedisCluster::Config config;
  config.replicas_per_master = 1;
  RedisCluster cluster(config);
  Clock::time_point start = Clock::now();
  SF_START_REDIS_CLUSTER(cluster);
  std::cout << "[ timing ] RedisCluster::Start (3 masters, 3 replicas): "
            << MillisecondsSince(start) << " ms\n";
  ASSERT_EQ(cluster.replicas(0).size(), 1u);
  RedisServer* replica = cluster.replicas(0).front();
  Reply role = replica->Command({"ROLE"});
  ASSERT_FALSE(role.elements.empty()) << role.str;
  EXPECT_EQ(role.elements[0].str, "slave");

  // A key of shard 0, replicated before its master dies.
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i) {
    std::string candidate = "k" + std::to_string(i);
    if (cluster.NodeForSlot(cluster.KeySlot(candidate)) == &cluster.master(0)) key = candidate;
  }
  ASSERT_FALSE(key.empty());
  int slot = cluster.KeySlot(key);
  ASSERT_EQ(cluster.master(0).Command({"SET", key, "v"}).str, "OK");
  ASSERT_TRUE(cluster.master(0).WaitForReplicas(1));

  cluster.KillMaster(0);
  Clock::time_point killed = Clock::now();
  // Generous: "it ended at all"; a failover here takes a few seconds.
  RedisServer* promoted = cluster.WaitForFailover(0, std::chrono::seconds(60));
  std::cout << "[ timing ] kill -> failover agreed: " << MillisecondsSince(killed) << " ms\n";
  ASSERT_NE(promoted, nullptr) << cluster.error();

  EXPECT_EQ(promoted, replica);
  EXPECT_EQ(&cluster.master(0), replica);
  EXPECT_TRUE(cluster.replicas(0).empty());
  EXPECT_EQ(cluster.NodeForSlot(0), replica);
  EXPECT_EQ(cluster.NodeForSlot(slot), replica);
  role = replica->Command({"ROLE"});
  ASSERT_FALSE(role.elements.empty()) << role.str;
  EXPECT_EQ(role.elements[0].str, "master");
  EXPECT_EQ(replica->Command({"GET", key}).str, "v");
  EXPECT_EQ(cluster.master(1).Command({"GET", key}).str, Moved(slot, *replica));
  EXPECT_EQ(cluster.Command(key, {"GET", key}).str, "v");
}

}  // namespace
}  // namespace singleflight::test
