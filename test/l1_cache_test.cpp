#include "l1_cache.h"

#include <gtest/gtest.h>

namespace singleflight::internal {
namespace {

L1Cache::Value V(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

TEST(L1Cache, MissOnEmpty) {
  L1Cache cache(10, 1000);
  EXPECT_EQ(cache.Get("k", 0), nullptr);
}

TEST(L1Cache, HitReturnsTheSameBuffer) {
  L1Cache cache(10, 1000);
  auto value = V("hello");
  cache.Put("k", value, 100);
  EXPECT_EQ(cache.Get("k", 50), value);
}

TEST(L1Cache, EntryExpiresAtItsDeadline) {
  L1Cache cache(10, 1000);
  cache.Put("k", V("v"), 100);
  EXPECT_NE(cache.Get("k", 99), nullptr);
  EXPECT_EQ(cache.Get("k", 100), nullptr);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

TEST(L1Cache, EvictsLeastRecentlyUsedPastEntryBound) {
  L1Cache cache(2, 1000);
  cache.Put("a", V("1"), 100);
  cache.Put("b", V("2"), 100);
  ASSERT_NE(cache.Get("a", 0), nullptr);  // a is now the most recent
  cache.Put("c", V("3"), 100);
  EXPECT_NE(cache.Get("a", 0), nullptr);
  EXPECT_EQ(cache.Get("b", 0), nullptr);
  EXPECT_NE(cache.Get("c", 0), nullptr);
}

TEST(L1Cache, EvictsPastByteBoundCountingKeysAndValues) {
  L1Cache cache(100, 10);
  cache.Put("a", V("1234"), 100);  // 5 bytes
  cache.Put("b", V("1234"), 100);  // 10 bytes
  EXPECT_EQ(cache.bytes(), 10u);
  cache.Put("c", V("1"), 100);  // 12 bytes -> a goes
  EXPECT_EQ(cache.Get("a", 0), nullptr);
  EXPECT_EQ(cache.bytes(), 7u);
}

TEST(L1Cache, EntryLargerThanTheWholeCacheIsNotKept) {
  L1Cache cache(100, 10);
  cache.Put("a", V("1"), 100);
  cache.Put("big", V(std::string(20, 'x')), 100);
  EXPECT_EQ(cache.Get("big", 0), nullptr);
  EXPECT_NE(cache.Get("a", 0), nullptr);
}

TEST(L1Cache, ReplacingAKeyUpdatesBytes) {
  L1Cache cache(10, 1000);
  cache.Put("k", V("12345"), 100);
  cache.Put("k", V("1"), 100);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.bytes(), 2u);
  EXPECT_EQ(*cache.Get("k", 0), "1");
}

TEST(L1Cache, EraseAndClear) {
  L1Cache cache(10, 1000);
  cache.Put("a", V("1"), 100);
  cache.Put("b", V("2"), 100);
  cache.Erase("a");
  EXPECT_EQ(cache.Get("a", 0), nullptr);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
}

TEST(L1Cache, ZeroEntriesDisablesIt) {
  L1Cache cache(0, 1000);
  cache.Put("a", V("1"), 100);
  EXPECT_EQ(cache.Get("a", 0), nullptr);
}

TEST(L1Cache, BinaryKeys) {
  L1Cache cache(10, 1000);
  std::string key("a\0b", 3);
  cache.Put(key, V("x"), 100);
  EXPECT_EQ(cache.Get(std::string_view("a", 1), 0), nullptr);
  EXPECT_NE(cache.Get(key, 0), nullptr);
}

}  // namespace
}  // namespace singleflight::internal
