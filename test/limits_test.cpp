// Every input with a size has a bound: a test at the bound and one past it
// (docs/reliability.md, "Limits", lists them all and where each is tested).
// The ones already pinned elsewhere are not repeated here:
//   key length (local)        flight_local_test BadKeysAreRejectedSynchronouslyWithoutCallback,
//                             key_naming_test ValidateKey*
//   value size (local leader) flight_local_test ValueOverTheLimitIsTooLarge
//   value on a channel, past  distributed_test OversizedValueOnTheChannelIsDropped
//   envelope input, past      envelope_test OversizedInputIsRefusedBeforeParsing
//   in-flight keys, waiters   flight_local_test CapacityBoundsAnswerUnavailable
// This file adds the bounds against a real redis-server, where the receipt
// path matters, and the exact envelope bound.
#include <gtest/gtest.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "envelope.h"
#include "group_impl.h"
#include "key_naming.h"
#include "singleflight/group.h"
#include "support/fleet_fixture.h"
#include "support/loop_helpers.h"
#include "support/manual_scheduler.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

using test::RunUntil;

// --- the envelope: max_value_bytes + kEnvelopeSlackBytes ----------------------

// A valid ok envelope padded with an unknown field to exactly `size` bytes
// (readers ignore unknown fields, so only the size can make it fail).
std::string EnvelopeOfSize(size_t size, size_t value_bytes) {
  auto encode = [&](size_t pad) {
    msgpack::sbuffer out;
    msgpack::packer<msgpack::sbuffer> pk(out);
    pk.pack_map(6);
    pk.pack("v");
    pk.pack(1);
    pk.pack("ok");
    pk.pack(true);
    pk.pack("val");
    pk.pack_bin(static_cast<uint32_t>(value_bytes));
    pk.pack_bin_body(std::string(value_bytes, 'v').data(), static_cast<uint32_t>(value_bytes));
    pk.pack("tok");
    pk.pack_bin(16);
    pk.pack_bin_body(std::string(16, 't').data(), 16);
    pk.pack("at");
    pk.pack(uint64_t{1});
    pk.pack("pad");
    pk.pack_bin(static_cast<uint32_t>(pad));
    pk.pack_bin_body(std::string(pad, 'p').data(), static_cast<uint32_t>(pad));
    return std::string(out.data(), out.size());
  };
  // Past 255 bytes the pad's bin header has a fixed size, so the envelope
  // grows one byte per pad byte.
  size_t base = encode(1000).size() - 1000;
  return encode(size - base);
}

TEST(LimitsEnvelope, EnvelopeAtTheBoundDecodesAndOnePastIsTooLarge) {
  internal::DecodeLimits limits = internal::DecodeLimits::ForMaxValue(1024);
  ASSERT_EQ(limits.max_envelope_bytes, 1024 + internal::kEnvelopeSlackBytes);
  std::string at = EnvelopeOfSize(limits.max_envelope_bytes, 1024);
  std::string past = EnvelopeOfSize(limits.max_envelope_bytes + 1, 1024);
  ASSERT_EQ(at.size(), limits.max_envelope_bytes);
  internal::Envelope out;
  Status ok = internal::DecodeEnvelope(at, limits, &out);
  EXPECT_TRUE(ok.ok()) << ok.ToString();
  EXPECT_EQ(out.value.size(), 1024u);
  EXPECT_EQ(internal::DecodeEnvelope(past, limits, &out).code(), Code::kTooLarge);
}

TEST(LimitsEnvelope, ErrorMessageIsCutAtItsBoundOnTheWire) {
  internal::Envelope e;
  e.ok = false;
  e.error_code = "producer_error";
  e.token = std::string(16, 't');
  internal::Envelope out;
  internal::DecodeLimits limits = internal::DecodeLimits::ForMaxValue(16);
  e.error = std::string(internal::kMaxErrorBytes, 'e');
  ASSERT_TRUE(internal::DecodeEnvelope(internal::EncodeEnvelope(e), limits, &out).ok());
  EXPECT_EQ(out.error, e.error);
  e.error += "!";
  ASSERT_TRUE(internal::DecodeEnvelope(internal::EncodeEnvelope(e), limits, &out).ok());
  EXPECT_EQ(out.error.size(), internal::kMaxErrorBytes);
}

// --- in-flight keys: flights dropped by Forget still count ----------------------

TEST(LimitsLocal, ForgetDoesNotLetFlightsPastMaxInflightKeys) {
  // A forgotten flight keeps running its producer for its own callers, so it
  // still takes a slot: otherwise Do + Forget in a loop would start any
  // number of concurrent producers and hold any amount of memory.
  Options options;
  options.max_inflight_keys = 1;
  test::ManualScheduler clock;
  auto* group = new internal::GroupImpl(options, &clock, nullptr);
  std::vector<Done> parked;
  std::vector<Result> results;
  auto producer = [&](const ProducerContext&, Done done) { parked.push_back(std::move(done)); };
  auto record = [&](const Result& r) { results.push_back(r); };
  ASSERT_TRUE(group->Do("a", producer, record).ok());
  group->Forget("a");
  EXPECT_EQ(group->Do("a", producer, record).status().code(), Code::kUnavailable);
  EXPECT_EQ(group->Do("b", producer, record).status().code(), Code::kUnavailable);
  parked[0]("v");
  clock.RunPending();
  EXPECT_TRUE(group->Do("b", producer, record).ok());  // the slot is free again
  bool closed = false;
  group->Close([&] { closed = true; });
  clock.RunPending();
  EXPECT_TRUE(closed);
}

// --- against a real redis-server -------------------------------------------------

class LimitsTest : public test::FleetTest {
 protected:
  Options BaseOptions() {
    Options options = FleetTest::BaseOptions();
    options.when_redis_down = DegradedMode::kFailFast;  // a limit, never an outage, is tested
    return options;
  }

  Producer Parked() {
    return [this](const ProducerContext&, Done done) {
      ++runs_;
      parked_.push_back(std::move(done));
    };
  }
  Producer Value(std::string value) {
    return [this, value](const ProducerContext&, Done done) {
      ++runs_;
      done(value);
    };
  }
  void Start(Group& group, const std::string& key, Producer producer, uint32_t timeout_ms = 20000) {
    singleflight::Call call = group.Do(
        key, std::move(producer), [this](const Result& r) { results_.push_back(r); },
        CallOptions{timeout_ms});
    ASSERT_TRUE(call.ok()) << call.status().ToString();
  }
  // `leader` leads `key` with a parked producer and `follower` follows it:
  // subscribed, and its re-check after subscribing answered (a re-check
  // still in flight when the test completes the flight could find the lock
  // free and make the follower lead instead).
  void LeadAndFollow(Group& leader, Group& follower, const std::string& key) {
    Start(leader, key, Parked());
    ASSERT_TRUE(RunUntil(&loop_, [&] { return runs_ == 1; }));
    uint64_t checks = follower.stats().checks;
    Start(follower, key, Parked());
    ASSERT_TRUE(RunUntil(&loop_, [&] { return follower.stats().checks >= checks + 2; }));
  }

  int runs_ = 0;
  std::vector<Done> parked_;
  std::deque<Result> results_;
};

// --- key length: max_key_bytes ---------------------------------------------------

TEST_F(LimitsTest, KeyAtTheBoundWorksAcrossProcessesEvenWhenEscapingTriplesIt) {
  // Every '}' escapes to three bytes: the Redis names are ~3x the key.
  Options options = BaseOptions();
  std::string key(options.max_key_bytes, '}');
  Group& a = NewGroup(options);
  Group& b = NewGroup(options);
  Start(a, key, Value("v"));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 1; }));
  ASSERT_TRUE(WaitStored(key));
  Start(b, key, Value("not used"));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  EXPECT_EQ(results_[1].value(), "v");
  EXPECT_EQ(results_[1].source, Source::kRedisCache);
  EXPECT_EQ(runs_, 1);
}

TEST_F(LimitsTest, KeyOnePastTheBoundIsRefusedBeforeAnythingIsSent) {
  Options options = BaseOptions();
  Group& a = NewGroup(options);
  std::string key(options.max_key_bytes + 1, 'k');
  singleflight::Call call =
      a.Do(key, Value("v"), [this](const Result& r) { results_.push_back(r); });
  EXPECT_EQ(call.status().code(), Code::kInvalidArgument);
  a.Forget(key);                  // ignored too
  uv_run(&loop_, UV_RUN_NOWAIT);  // a wrongly accepted call would answer here
  EXPECT_TRUE(results_.empty());
  EXPECT_EQ(runs_, 0);
  EXPECT_EQ(redis_.Command({"DBSIZE"}).integer, 0);
}

// --- value size: max_value_bytes, in the leader ----------------------------------

TEST_F(LimitsTest, ValueAtTheBoundReachesAFollowerInAnotherProcess) {
  Options options = BaseOptions();
  options.max_value_bytes = 64;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  LeadAndFollow(leader, follower, "k");
  parked_[0](std::string(64, 'x'));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  for (auto& r : results_) {
    EXPECT_TRUE(r.ok()) << r.status.ToString();
    EXPECT_EQ(r.value().size(), 64u);
  }
}

TEST_F(LimitsTest, ValueOnePastTheBoundIsTooLargeForEveryProcessAndNotStored) {
  Options options = BaseOptions();
  options.max_value_bytes = 64;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  LeadAndFollow(leader, follower, "k");
  parked_[0](std::string(65, 'x'));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  for (auto& r : results_) EXPECT_EQ(r.status.code(), Code::kTooLarge) << r.status.ToString();
  EXPECT_EQ(results_[1].source, Source::kPubSub);  // the leader's error envelope
  EXPECT_TRUE(redis_.Command({"GET", internal::NameFlight("sf:", "k").result}).is_nil());
}

// --- value size: max_value_bytes, on receipt by a follower --------------------------

TEST_F(LimitsTest, ValueAtTheBoundOnTheChannelIsAccepted) {
  // The past-the-bound twin is distributed_test OversizedValueOnTheChannelIsDropped.
  Options options = BaseOptions();
  options.max_value_bytes = 64;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(options);
  LeadAndFollow(leader, follower, "k");
  internal::Envelope envelope;
  envelope.ok = true;
  envelope.value = std::string(64, 'y');
  // Followers trust only the lock's holder (protocol v2): speak as the leader.
  envelope.token = redis_.Command({"GET", internal::NameFlight("sf:", "k").lock}).str;
  redis_.Command(
      {"PUBLISH", internal::NameFlight("sf:", "k").channel, internal::EncodeEnvelope(envelope)});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 1; }));
  EXPECT_EQ(results_[0].value(), envelope.value);
  EXPECT_EQ(results_[0].source, Source::kPubSub);
  parked_[0]("the leader's own");  // the leader still finishes its flight
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
}

TEST_F(LimitsTest, StoredValueOverTheReadersBoundIsTooLargeAtOnce) {
  // A fleet whose processes disagree on max_value_bytes: the value one
  // stored is too large for another. That reader answers kTooLarge at once
  // (README: "too_large ... also on receipt") instead of waiting for a
  // message that can never be accepted until its caller times out.
  Options big = BaseOptions();
  big.max_value_bytes = 1024;
  Options small = BaseOptions();
  small.max_value_bytes = 64;
  Group& writer = NewGroup(big);
  Group& reader = NewGroup(small);
  Start(writer, "k", Value(std::string(65, 'z')));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 1; }));
  Start(reader, "k", Value("not used"), 20000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  EXPECT_EQ(results_[1].status.code(), Code::kTooLarge) << results_[1].status.ToString();
  EXPECT_EQ(runs_, 1);
  EXPECT_GE(reader.stats().too_large, 1u);
}

TEST_F(LimitsTest, PublishedValueOverTheReadersBoundIsTooLargeForTheFollower) {
  // The same disagreement while following: the leader's message is dropped
  // (anyone may publish on a channel), the re-check reads the stored result
  // and answers kTooLarge.
  Options big = BaseOptions();
  big.max_value_bytes = 1024;
  Options small = BaseOptions();
  small.max_value_bytes = 64;
  small.fallback_interval_ms = 60000;  // only the message and its re-check can help
  Group& leader = NewGroup(big);
  Group& follower = NewGroup(small);
  LeadAndFollow(leader, follower, "k");
  parked_[0](std::string(65, 'z'));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  EXPECT_TRUE(results_[0].ok());
  EXPECT_EQ(results_[1].status.code(), Code::kTooLarge) << results_[1].status.ToString();
  EXPECT_EQ(follower.stats().malformed_dropped, 1u);
}

// --- in-flight keys per process: max_inflight_keys ------------------------------

TEST_F(LimitsTest, FollowingFlightsCountAgainstMaxInflightKeys) {
  Options options = BaseOptions();
  Options one = options;
  one.max_inflight_keys = 1;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(one);
  LeadAndFollow(leader, follower, "a");  // at the bound: one following flight
  singleflight::Call past =
      follower.Do("b", Value("b"), [this](const Result& r) { results_.push_back(r); });
  EXPECT_EQ(past.status().code(), Code::kUnavailable);
  parked_[0]("a");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 2; }));
  Start(follower, "b", Value("b"));  // the slot is free again
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 3; }));
  EXPECT_EQ(results_[2].value(), "b");
}

// --- waiters per flight: max_waiters_per_flight -----------------------------------

TEST_F(LimitsTest, WaitersBoundHoldsForAFollowingFlight) {
  Options options = BaseOptions();
  Options two = options;
  two.max_waiters_per_flight = 2;
  Group& leader = NewGroup(options);
  Group& follower = NewGroup(two);
  LeadAndFollow(leader, follower, "k");
  Start(follower, "k", Parked());  // the second waiter: at the bound
  singleflight::Call past =
      follower.Do("k", Parked(), [this](const Result& r) { results_.push_back(r); });
  EXPECT_EQ(past.status().code(), Code::kUnavailable);
  parked_[0]("v");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return results_.size() == 3; }));
  for (auto& r : results_) EXPECT_EQ(r.value(), "v");
  EXPECT_EQ(runs_, 1);
}

}  // namespace
}  // namespace singleflight
