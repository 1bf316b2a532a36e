// Do<T>: typed values over the bytes API. Local mode on a real loop, and two
// groups sharing a real redis-server so that a follower decodes what another
// group's leader encoded.
#include "singleflight/typed.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

using test::RunUntil;

struct User {
  std::string name;
  int age = 0;
  std::vector<std::string> roles;
  std::map<std::string, double> scores;
  MSGPACK_DEFINE_MAP(name, age, roles, scores)  // no ";": -Wpedantic
};

bool operator==(const User& a, const User& b) {
  return a.name == b.name && a.age == b.age && a.roles == b.roles && a.scores == b.scores;
}

User Ada() {
  return User{"ada", 36, {"admin", "dev"}, {{"chess", 9.5}}};
}

template <class T>
TypedProducer<T> Produce(T value, int* runs) {
  return [value, runs](const ProducerContext&, TypedDone<T> done) {
    ++*runs;
    done(value);
  };
}

template <class T>
TypedCallback<T> Into(std::vector<TypedResult<T>>* out) {
  return [out](const TypedResult<T>& r) { out->push_back(r); };
}

class TypedLocalTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    group_->Close();
    group_.reset();
    EXPECT_TRUE(test::Drain(&loop_));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  uv_loop_t loop_;
  std::unique_ptr<Group> group_ = nullptr;
};

TEST_F(TypedLocalTest, StructRoundTrips) {
  group_ = std::make_unique<Group>(&loop_);
  int runs = 0;
  std::vector<TypedResult<User>> results;
  Call call = Do<User>(*group_, "user:1", Produce(Ada(), &runs), Into(&results));
  ASSERT_TRUE(call.ok()) << call.status().ToString();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  ASSERT_TRUE(results[0].ok()) << results[0].status.ToString();
  EXPECT_EQ(results[0].value(), Ada());
  EXPECT_EQ(results[0].source, Source::kLed);
  EXPECT_EQ(runs, 1);
}

TEST_F(TypedLocalTest, PlainTypesRoundTrip) {
  group_ = std::make_unique<Group>(&loop_);
  int runs = 0;
  std::vector<TypedResult<std::string>> strings;
  std::vector<TypedResult<std::map<std::string, std::vector<int64_t>>>> maps;
  std::map<std::string, std::vector<int64_t>> m = {{"a", {1, -2, 1LL << 40}}, {"", {}}};
  ASSERT_TRUE(
      Do<std::string>(*group_, "s", Produce<std::string>({"\0\xff", 2}, &runs), Into(&strings))
          .ok());
  ASSERT_TRUE(Do<decltype(m)>(*group_, "m", Produce(m, &runs), Into(&maps)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return strings.size() == 1 && maps.size() == 1; }));
  EXPECT_EQ(strings[0].value(), std::string("\0\xff", 2));
  EXPECT_EQ(maps[0].value(), m);
}

TEST_F(TypedLocalTest, CallersOfOneFlightShareOneDecodedObject) {
  group_ = std::make_unique<Group>(&loop_);
  int runs = 0;
  std::vector<TypedResult<User>> results;
  std::vector<TypedDone<User>> parked;
  TypedProducer<User> park = [&](const ProducerContext&, TypedDone<User> done) {
    ++runs;
    parked.push_back(done);
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Do<User>(*group_, "k", park, Into(&results)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return parked.size() == 1; }));
  EXPECT_TRUE(parked[0](Ada()));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 3; }));
  // The L1 hit shares the flight's buffer, and so its decoded object too.
  ASSERT_TRUE(Do<User>(*group_, "k", park, Into(&results)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 4; }));
  EXPECT_EQ(results[3].source, Source::kLocalCache);
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status.ToString();
    EXPECT_EQ(r.value_ptr, results[0].value_ptr);
  }
  EXPECT_EQ(runs, 1);
}

TEST_F(TypedLocalTest, ValueOfAnotherTypeIsAClearErrorNotACrash) {
  group_ = std::make_unique<Group>(&loop_);
  int runs = 0;
  std::vector<TypedResult<User>> users;
  std::vector<TypedResult<std::vector<int>>> vectors;
  ASSERT_TRUE(Do<User>(*group_, "k", Produce(Ada(), &runs), Into(&users)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return users.size() == 1; }));
  // The User now sits in L1; a caller that expects a vector<int> reads it.
  ASSERT_TRUE(
      Do<std::vector<int>>(*group_, "k", Produce(std::vector<int>{1}, &runs), Into(&vectors)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return vectors.size() == 1; }));
  EXPECT_EQ(vectors[0].status.code(), Code::kInvalidArgument);
  EXPECT_NE(vectors[0].status.message().find("typed:"), std::string::npos);
  EXPECT_EQ(vectors[0].value_ptr, nullptr);
  EXPECT_EQ(vectors[0].source, Source::kLocalCache);  // where the bytes came from
  EXPECT_EQ(runs, 1);
}

TEST_F(TypedLocalTest, BytesThatAreNotMsgpackAreAClearError) {
  group_ = std::make_unique<Group>(&loop_);
  const std::vector<std::string> not_a_user = {
      std::string("\xc1", 1),                  // never used in msgpack
      std::string("\x82\xa4name", 6),          // truncated map
      std::string("\xdd\x10\x00\x00\x00", 5),  // array32 claiming 2^28 elements
      std::string("\xc0\xc0", 2),              // nil, then a trailing byte
  };
  std::vector<TypedResult<User>> results;
  for (size_t i = 0; i < not_a_user.size(); ++i) {
    Producer raw = [bytes = not_a_user[i]](const ProducerContext&, Done done) { done(bytes); };
    ASSERT_TRUE(group_->Do("raw" + std::to_string(i), raw, [](const Result&) {}).ok());
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return group_->stats().leads == not_a_user.size(); }));
  for (size_t i = 0; i < not_a_user.size(); ++i) {
    int runs = 0;
    ASSERT_TRUE(
        Do<User>(*group_, "raw" + std::to_string(i), Produce(Ada(), &runs), Into(&results)).ok());
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == not_a_user.size(); }));
  for (auto& r : results) {
    EXPECT_EQ(r.status.code(), Code::kInvalidArgument) << r.status.ToString();
    EXPECT_EQ(r.source, Source::kLocalCache);
  }
}

TEST_F(TypedLocalTest, ProducerFailureReachesTheTypedCallback) {
  group_ = std::make_unique<Group>(&loop_);
  std::vector<TypedResult<User>> results;
  TypedProducer<User> failing = [](const ProducerContext&, TypedDone<User> done) {
    done.Fail("no such user");
  };
  ASSERT_TRUE(Do<User>(*group_, "k", failing, Into(&results)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results.size() == 1; }));
  EXPECT_EQ(results[0].status.code(), Code::kProducerError);
  EXPECT_EQ(results[0].status.message(), "no such user");
}

TEST_F(TypedLocalTest, RejectedCallNeverCallsBack) {
  group_ = std::make_unique<Group>(&loop_);
  std::vector<TypedResult<User>> results;
  int runs = 0;
  Call call = Do<User>(*group_, "", Produce(Ada(), &runs), Into(&results));
  EXPECT_EQ(call.status().code(), Code::kInvalidArgument);
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(results.empty());
}

// --- against a real redis-server ---------------------------------------------

class TypedRedisTest : public test::FleetTest {
 protected:
  long long NumSub(const std::string& channel) {
    internal::Reply r = redis_.Command({"PUBSUB", "NUMSUB", channel});
    return r.elements.size() == 2 ? r.elements[1].integer : -1;
  }

  // Written by callbacks that may still run in TearDown's Close.
  std::vector<TypedResult<User>> led_, followed_;
  std::vector<TypedDone<User>> parked_;
};

TEST_F(TypedRedisTest, FollowerInAnotherGroupGetsTheStruct) {
  Group& leader = NewGroup();
  Group& follower = NewGroup();
  int runs = 0;
  TypedProducer<User> park = [&](const ProducerContext&, TypedDone<User> done) {
    ++runs;
    parked_.push_back(done);
  };
  ASSERT_TRUE(Do<User>(leader, "user:7", park, Into(&led_)).ok());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return parked_.size() == 1; }));
  ASSERT_TRUE(Do<User>(follower, "user:7", park, Into(&followed_)).ok());
  // Finish only once the follower listens, so the value travels by pub/sub
  // (a fallback GET would also be correct, just not this test's point).
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    uv_run(&loop_, UV_RUN_NOWAIT);
    return NumSub("sf:{user:7}:ch") >= 1;
  }));
  EXPECT_TRUE(parked_[0](Ada()));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return led_.size() == 1 && followed_.size() == 1; }));
  ASSERT_TRUE(followed_[0].ok()) << followed_[0].status.ToString();
  EXPECT_EQ(followed_[0].value(), Ada());
  EXPECT_TRUE(followed_[0].source == Source::kPubSub || followed_[0].source == Source::kFallbackGet)
      << SourceName(followed_[0].source);
  EXPECT_EQ(led_[0].value(), Ada());
  EXPECT_EQ(runs, 1);
}

}  // namespace
}  // namespace singleflight
