#include "cluster_slots.h"

#include <gtest/gtest.h>

#include <string>

#include "key_naming.h"
#include "support/replies.h"

namespace singleflight::internal {
namespace {

using test::Arr;
using test::Bulk;
using test::Err;
using test::Int;

Reply Range(long long first, long long last, const std::string& host, long long port) {
  return Arr({Int(first), Int(last), Arr({Bulk(host), Int(port), Bulk("id")})});
}

TEST(ClusterSlots, Crc16IsXmodemWithTheSpecsTestVector) {
  EXPECT_EQ(Crc16("123456789"), 0x31C3);
  EXPECT_EQ(Crc16(""), 0);
}

// Slots as redis-server 7.0.15 reports them with CLUSTER KEYSLOT.
TEST(ClusterSlots, KeySlotMatchesTheServer) {
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("sf:{user:42}:lock"), 15880);
  EXPECT_EQ(KeySlot("123456789"), 0x31C3);
}

TEST(ClusterSlots, HashTagIsBetweenTheFirstBraces) {
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  EXPECT_EQ(KeySlot("foo{bar}{zap}"), KeySlot("bar"));
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));
  // An empty tag does not count: the whole key is hashed.
  EXPECT_EQ(KeySlot("foo{}{bar}"), Crc16("foo{}{bar}") % kClusterSlots);
  EXPECT_EQ(KeySlot("foo{bar"), Crc16("foo{bar") % kClusterSlots);
}

TEST(ClusterSlots, AFlightsNamesShareOneSlot) {
  FlightKeys keys = NameFlight("sf:", "a{b}c");
  EXPECT_EQ(KeySlot(keys.lock), KeySlot(keys.result));
  EXPECT_EQ(KeySlot(keys.lock), KeySlot(keys.channel));
}

TEST(ClusterSlots, ParsesRedirects) {
  Redirect redirect;
  ASSERT_TRUE(ParseRedirect(Err("MOVED 3999 127.0.0.1:6381"), &redirect));
  EXPECT_FALSE(redirect.ask);
  EXPECT_EQ(redirect.slot, 3999);
  EXPECT_EQ(redirect.to.ToString(), "127.0.0.1:6381");
  ASSERT_TRUE(ParseRedirect(Err("ASK 0 ::1:7000"), &redirect));
  EXPECT_TRUE(redirect.ask);
  EXPECT_EQ(redirect.to.host, "::1");
  EXPECT_EQ(redirect.to.port, 7000);
}

TEST(ClusterSlots, RefusesMalformedRedirects) {
  Redirect redirect;
  EXPECT_FALSE(ParseRedirect(Err("MOVED"), &redirect));
  EXPECT_FALSE(ParseRedirect(Err("MOVED 16384 h:1"), &redirect));
  EXPECT_FALSE(ParseRedirect(Err("MOVED 1 h:0"), &redirect));
  EXPECT_FALSE(ParseRedirect(Err("MOVED 1 h"), &redirect));
  EXPECT_FALSE(ParseRedirect(Err("MOVED -1 h:1"), &redirect));
  EXPECT_FALSE(ParseRedirect(Err("ERR MOVED 1 h:1"), &redirect));
  EXPECT_FALSE(ParseRedirect(Bulk("MOVED 1 h:1"), &redirect));
}

TEST(ClusterSlots, MapsEverySlotToItsMaster) {
  SlotMap map;
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(map.Owner(0), nullptr);
  ASSERT_TRUE(map.Parse(Arr({Range(0, 5460, "10.0.0.1", 7000), Range(5461, 10922, "", 7001),
                             Range(10923, 16383, "10.0.0.1", 7002)}),
                        "seed")
                  .ok());
  ASSERT_EQ(map.masters().size(), 3u);
  EXPECT_EQ(map.Owner(0)->ToString(), "10.0.0.1:7000");
  EXPECT_EQ(map.Owner(5461)->ToString(), "seed:7001");  // empty host: the one asked
  EXPECT_EQ(map.Owner(16383)->ToString(), "10.0.0.1:7002");
  EXPECT_EQ(map.Owner(16384), nullptr);
  map.Set(0, NodeAddress{"10.0.0.1", 7002});
  EXPECT_EQ(map.Owner(0)->ToString(), "10.0.0.1:7002");
  EXPECT_EQ(map.Owner(1)->ToString(), "10.0.0.1:7000");
}

TEST(ClusterSlots, RefusesAPartialOrMalformedMapAndKeepsTheOld) {
  SlotMap map;
  ASSERT_TRUE(map.Parse(Arr({Range(0, 16383, "h", 1)}), "").ok());
  Status partial = map.Parse(Arr({Range(0, 100, "h", 2)}), "");
  EXPECT_EQ(partial.code(), Code::kUnavailable);
  EXPECT_NE(partial.message().find("slot 101"), std::string::npos) << partial.message();
  EXPECT_FALSE(map.Parse(Arr({Range(0, 16384, "h", 2)}), "").ok());
  EXPECT_FALSE(map.Parse(Arr({Arr({Int(0)})}), "").ok());
  EXPECT_FALSE(map.Parse(Err("ERR This instance has cluster support disabled"), "").ok());
  EXPECT_EQ(map.Owner(5)->ToString(), "h:1");
}

}  // namespace
}  // namespace singleflight::internal
