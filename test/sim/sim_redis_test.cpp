// The shim itself: the Lua <-> RESP conversions, the commands, expiry, and the
// library's scripts on an empty store (only the reply shapes that every
// protocol version keeps: the scripts' text is read from the library).
#include "sim/sim_redis.h"

#include <gtest/gtest.h>

#include "lua_scripts.h"

namespace singleflight::sim {
namespace {

using internal::ScriptId;
using internal::ScriptSource;

class SimRedisShim : public ::testing::Test {
 protected:
  uint64_t now_ = 1000;
  SimRedis redis_{[this] { return now_; }};

  Reply Eval(const std::string& body, std::vector<std::string> keys = {},
             std::vector<std::string> args = {}) {
    return redis_.Eval(body, keys, args);
  }
};

TEST_F(SimRedisShim, LuaValuesBecomeRespAsInRedis) {
  Reply r = Eval("return 3.7");
  EXPECT_EQ(r.type, Reply::Type::kInteger);
  EXPECT_EQ(r.integer, 3);
  EXPECT_EQ(Eval("return -2.9").integer, -2);
  EXPECT_EQ(Eval("return true").integer, 1);
  EXPECT_TRUE(Eval("return false").is_nil());
  EXPECT_TRUE(Eval("return nil").is_nil());
  r = Eval("return {1, 'two', nil, 4}");
  ASSERT_EQ(r.type, Reply::Type::kArray);
  ASSERT_EQ(r.elements.size(), 2u);  // stops at the first nil
  EXPECT_EQ(r.elements[1].str, "two");
  r = Eval("return {err='NOPE it failed'}");
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(r.str, "NOPE it failed");
  r = Eval("return redis.status_reply('FINE')");
  EXPECT_EQ(r.type, Reply::Type::kStatus);
  EXPECT_EQ(r.str, "FINE");
  r = Eval("return redis.error_reply('ERR custom')");
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(r.str, "ERR custom");
}

TEST_F(SimRedisShim, KeysAndArgvAreGlobals) {
  Reply r = Eval("return {KEYS[1], ARGV[1], ARGV[2], #KEYS}", {"a"}, {"b", "c"});
  ASSERT_EQ(r.elements.size(), 4u);
  EXPECT_EQ(r.elements[0].str, "a");
  EXPECT_EQ(r.elements[2].str, "c");
  EXPECT_EQ(r.elements[3].integer, 1);
}

TEST_F(SimRedisShim, RedisRepliesBecomeLuaValues) {
  EXPECT_EQ(Eval("return redis.call('GET', 'missing') == false and 1 or 0").integer, 1);
  Reply r = Eval("local s = redis.call('SET', 'k', 'v') return s.ok");
  EXPECT_EQ(r.str, "OK");
  EXPECT_EQ(Eval("return redis.call('GET', 'k')").str, "v");
  EXPECT_EQ(Eval("return redis.call('PTTL', 'k')").integer, -1);
  EXPECT_EQ(Eval("return redis.call('PTTL', 'nope')").integer, -2);
  EXPECT_EQ(Eval("return type(redis.call('DEL', 'k', 'nope'))").str, "number");
  // A number argument is sent as its decimal string.
  EXPECT_EQ(Eval("redis.call('SET', 'n', 42) return redis.call('GET', 'n')").str, "42");
}

TEST_F(SimRedisShim, CallRaisesAndPcallReturnsTheError) {
  Reply r = Eval("redis.call('SET', 'k', 'v', 'PX', 'soon') return 1");
  EXPECT_TRUE(r.is_error());
  EXPECT_NE(r.str.find("not an integer"), std::string::npos);
  r = Eval("local e = redis.pcall('SET', 'k', 'v', 'PX', '0') return e.err");
  EXPECT_EQ(r.type, Reply::Type::kString);
  EXPECT_NE(r.str.find("invalid expire time"), std::string::npos);
  r = Eval("return redis.call('INCR', 'k')");
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(redis_.unsupported(), 1u);  // reported, not silently ignored
  EXPECT_TRUE(Eval("this is not lua").is_error());
}

TEST_F(SimRedisShim, SetNxPxAndExpiryOnTheVirtualClock) {
  std::vector<std::string> removed;
  redis_.hooks().on_remove = [&](const std::string& key, const std::string&, SimRedis::Removal how,
                                 uint64_t at) {
    removed.push_back(key + (how == SimRedis::Removal::kExpired ? ":expired@" : ":deleted@") +
                      std::to_string(at));
  };
  EXPECT_EQ(redis_.Command({"SET", "l", "a", "NX", "PX", "100"}).type, Reply::Type::kStatus);
  EXPECT_TRUE(redis_.Command({"SET", "l", "b", "NX", "PX", "100"}).is_nil());
  now_ += 40;
  EXPECT_EQ(redis_.Command({"PTTL", "l"}).integer, 60);
  EXPECT_EQ(redis_.Command({"PEXPIRE", "l", "100"}).integer, 1);
  now_ += 100;  // exactly at the deadline the key still exists (Redis: now > when)
  EXPECT_EQ(redis_.Command({"GET", "l"}).str, "a");
  now_ += 1;
  EXPECT_TRUE(redis_.Command({"GET", "l"}).is_nil());
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0], "l:expired@1140");
  EXPECT_EQ(redis_.Command({"PEXPIRE", "l", "100"}).integer, 0);
}

TEST_F(SimRedisShim, PublishReachesSubscribersInOrder) {
  std::vector<std::string> got;
  redis_.hooks().on_publish = [&](uint64_t client, const std::string& ch, const std::string& m) {
    got.push_back(std::to_string(client) + ch + m);
  };
  redis_.Subscribe(7, "c");
  redis_.Subscribe(3, "c");
  EXPECT_EQ(Eval("return redis.call('PUBLISH', 'c', 'x')").integer, 2);
  EXPECT_EQ(got, (std::vector<std::string>{"7cx", "3cx"}));
  redis_.DropClient(7);
  EXPECT_EQ(Eval("return redis.call('PUBLISH', 'c', 'y')").integer, 1);
  EXPECT_EQ(redis_.SubscriptionCount(), 1u);
}

// The library's own get_or_lock, whatever its version: on an empty store the
// caller gets the lock ({2, ...}); another token is then told the lock is
// busy for how long ({0, pttl, ...}).
TEST_F(SimRedisShim, LibraryGetOrLockOnAnEmptyStoreThenBusy) {
  std::string a(16, 'a'), b(16, 'b');
  Reply r =
      redis_.Eval(ScriptSource(ScriptId::kGetOrLock), {"sf:{k}:result", "sf:{k}:lock"}, {a, "300"});
  ASSERT_EQ(r.type, Reply::Type::kArray) << r.str;
  ASSERT_GE(r.elements.size(), 1u);
  EXPECT_EQ(r.elements[0].integer, internal::kGetOrLockAcquired);
  EXPECT_EQ(redis_.Command({"GET", "sf:{k}:lock"}).str, a);
  now_ += 100;
  r = redis_.Eval(ScriptSource(ScriptId::kGetOrLock), {"sf:{k}:result", "sf:{k}:lock"}, {b, "300"});
  ASSERT_EQ(r.type, Reply::Type::kArray) << r.str;
  ASSERT_GE(r.elements.size(), 2u);
  EXPECT_EQ(r.elements[0].integer, internal::kGetOrLockBusy);
  EXPECT_EQ(r.elements[1].integer, 200);
  EXPECT_EQ(redis_.unsupported(), 0u);
}

}  // namespace
}  // namespace singleflight::sim
