// The flight state machine in local-only mode, on a clock the test moves.
#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>

#include "group_impl.h"
#include "support/manual_scheduler.h"

namespace singleflight::internal {
namespace {

class FlightLocalTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(Options{}); }
  void TearDown() override {
    if (group_) Shutdown();
  }

  void Make(Options options) {
    clock_holder_ = std::make_unique<test::ManualScheduler>();
    group_ = new GroupImpl(std::move(options), clock_holder_.get(), nullptr);
  }

  void Shutdown() {
    bool closed = false;
    group_->Close([&] { closed = true; });
    clock().RunPending();
    ASSERT_TRUE(closed);
    ASSERT_TRUE(clock().shut_down());
    group_ = nullptr;
  }

  // A producer that parks its Done so the test decides when it completes.
  Producer Parked() {
    return [this](const ProducerContext&, Done done) {
      ++runs_;
      parked_.push_back(std::move(done));
    };
  }
  Producer Immediate(std::string value) {
    return [this, value](const ProducerContext&, Done done) {
      ++runs_;
      done(value);
    };
  }
  Callback Record() {
    return [this](const Result& r) { results_.push_back(r); };
  }
  Call DoKey(std::string_view key, Producer p, CallOptions o = {}) {
    Call call = group_->Do(key, std::move(p), Record(), o);
    EXPECT_TRUE(call.ok()) << call.status().ToString();
    return call;
  }

  std::unique_ptr<test::ManualScheduler> clock_holder_;
  test::ManualScheduler& clock() { return *clock_holder_; }
  GroupImpl* group_ = nullptr;
  int runs_ = 0;
  std::vector<Done> parked_;
  std::vector<Result> results_;
};

TEST_F(FlightLocalTest, ConcurrentCallersShareOneExecution) {
  for (int i = 0; i < 3; ++i) (void)DoKey("k", Parked());
  EXPECT_EQ(runs_, 1);
  ASSERT_EQ(parked_.size(), 1u);
  EXPECT_TRUE(parked_[0]("v"));
  clock().RunPending();
  ASSERT_EQ(results_.size(), 3u);
  EXPECT_EQ(results_[0].source, Source::kLed);
  EXPECT_EQ(results_[1].source, Source::kJoined);
  EXPECT_EQ(results_[2].source, Source::kJoined);
  for (auto& r : results_) {
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.value(), "v");
    EXPECT_TRUE(r.shared);
    EXPECT_EQ(r.value_ptr, results_[0].value_ptr);  // one immutable buffer
  }
  Stats s = group_->stats();
  EXPECT_EQ(s.calls, 3u);
  EXPECT_EQ(s.joins, 2u);
  EXPECT_EQ(s.leads, 1u);
}

TEST_F(FlightLocalTest, SingleCallerIsNotShared) {
  (void)DoKey("k", Immediate("v"));
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_FALSE(results_[0].shared);
}

TEST_F(FlightLocalTest, CallbackNeverRunsInsideDo) {
  (void)DoKey("k", Immediate("v"));  // done runs inside the producer
  EXPECT_TRUE(results_.empty());
  clock().RunPending();
  EXPECT_EQ(results_.size(), 1u);
  (void)DoKey("k", Immediate("v"));  // an L1 hit, also deferred
  EXPECT_EQ(results_.size(), 1u);
  clock().RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_EQ(results_[1].source, Source::kLocalCache);
}

TEST_F(FlightLocalTest, L1HitRunsNothingUntilItExpires) {
  (void)DoKey("k", Immediate("v"));
  clock().RunPending();
  (void)DoKey("k", Immediate("other"));
  clock().RunPending();
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(results_.back().value(), "v");
  EXPECT_EQ(group_->stats().l1_hits, 1u);
  clock().Advance(Options{}.l1_ttl_ms);
  (void)DoKey("k", Immediate("fresh"));
  clock().RunPending();
  EXPECT_EQ(runs_, 2);
  EXPECT_EQ(results_.back().value(), "fresh");
}

TEST_F(FlightLocalTest, TimedOutCallerDoesNotPoisonTheOthers) {
  (void)DoKey("k", Parked(), CallOptions{100});
  (void)DoKey("k", Parked(), CallOptions{5000});
  clock().Advance(100);
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kTimeout);
  parked_[0]("v");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_TRUE(results_[1].ok());
  EXPECT_EQ(group_->stats().timeouts, 1u);
}

TEST_F(FlightLocalTest, CancelDeliversCancelledOnceAndLetsTheFlightFinish) {
  Call first = DoKey("k", Parked());
  (void)DoKey("k", Parked());
  EXPECT_TRUE(first.Cancel());
  EXPECT_FALSE(first.Cancel());
  EXPECT_TRUE(results_.empty());  // not inside Cancel
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kCancelled);
  parked_[0]("v");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_EQ(results_[1].value(), "v");
}

TEST_F(FlightLocalTest, CancelAfterTheResultReturnsFalse) {
  Call call = DoKey("k", Immediate("v"));
  clock().RunPending();
  EXPECT_FALSE(call.Cancel());
  EXPECT_EQ(results_.size(), 1u);
}

TEST_F(FlightLocalTest, ProducerThatThrowsFailsEveryCaller) {
  Producer throws = [](const ProducerContext&, Done) { throw std::runtime_error("db down"); };
  (void)DoKey("k", throws);
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kProducerError);
  EXPECT_NE(results_[0].status.message().find("db down"), std::string::npos);
  EXPECT_EQ(results_[0].value_ptr, nullptr);
}

TEST_F(FlightLocalTest, ProducerErrorReachesEveryWaiterAndIsNotCached) {
  (void)DoKey("k", Parked());
  (void)DoKey("k", Parked());
  EXPECT_TRUE(parked_[0].Fail("upstream 503"));
  clock().RunPending();
  ASSERT_EQ(results_.size(), 2u);
  for (auto& r : results_) {
    EXPECT_EQ(r.status.code(), Code::kProducerError);
    EXPECT_EQ(r.status.message(), "upstream 503");
  }
  EXPECT_EQ(results_[0].source, Source::kLed);  // where the error came from
  EXPECT_EQ(results_[1].source, Source::kJoined);
  (void)DoKey("k", Immediate("v"));
  clock().RunPending();
  EXPECT_EQ(runs_, 2);
  EXPECT_EQ(group_->stats().producer_errors, 1u);
}

TEST_F(FlightLocalTest, SecondDoneIsIgnoredAndCounted) {
  (void)DoKey("k", Parked());
  EXPECT_TRUE(parked_[0]("first"));
  EXPECT_FALSE(parked_[0]("second"));
  EXPECT_FALSE(parked_[0].Fail("third"));
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "first");
}

TEST_F(FlightLocalTest, ProducerThatNeverCallsDoneTimesOutAndFreesTheKey) {
  Options options;
  options.producer_timeout_ms = 500;
  TearDown();
  Make(options);
  (void)DoKey("k", Parked(), CallOptions{100});
  clock().Advance(100);
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kTimeout);
  clock().Advance(400);
  EXPECT_EQ(group_->stats().producer_timeouts, 1u);
  EXPECT_FALSE(parked_[0]("too late"));
  (void)DoKey("k", Immediate("v"));
  clock().RunPending();
  EXPECT_EQ(runs_, 2);
  EXPECT_EQ(results_.back().value(), "v");
}

TEST_F(FlightLocalTest, OnAbandonRunsOnceWhenTheProducerTimesOut) {
  Options options;
  options.producer_timeout_ms = 500;
  TearDown();
  Make(options);
  int abandoned = 0;
  size_t answered_before = 99;
  (void)DoKey("k", [&](const ProducerContext&, Done done) {
    done.OnAbandon([&] {
      ++abandoned;
      answered_before = results_.size();
    });
    parked_.push_back(std::move(done));
  });
  clock().Advance(499);
  EXPECT_EQ(abandoned, 0);
  clock().Advance(1);
  EXPECT_EQ(abandoned, 1);
  EXPECT_EQ(answered_before, 0u);  // the producer hears before its callers
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kTimeout);
  EXPECT_FALSE(parked_[0]("too late"));
  int late = 0;
  parked_[0].OnAbandon([&] { ++late; });  // already given up: runs at once
  EXPECT_EQ(late, 1);
  EXPECT_EQ(abandoned, 1);
}

TEST_F(FlightLocalTest, OnAbandonRunsWhenTheGroupClosesAndNeverAfterDone) {
  int abandoned_a = 0;
  int abandoned_b = 0;
  (void)DoKey("a", [&](const ProducerContext&, Done done) {
    done.OnAbandon([&] { ++abandoned_a; });
    parked_.push_back(std::move(done));
  });
  (void)DoKey("b", [&](const ProducerContext&, Done done) {
    done.OnAbandon([&] { ++abandoned_b; });
    done("v");
  });
  clock().RunPending();
  Shutdown();
  EXPECT_EQ(abandoned_a, 1);
  EXPECT_EQ(abandoned_b, 0);
}

TEST_F(FlightLocalTest, ValueOverTheLimitIsTooLarge) {
  Options options;
  options.max_value_bytes = 4;
  TearDown();
  Make(options);
  (void)DoKey("k", Immediate("12345"));
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].status.code(), Code::kTooLarge);
  (void)DoKey("j", Immediate("1234"));
  clock().RunPending();
  EXPECT_TRUE(results_.back().ok());
}

TEST_F(FlightLocalTest, BadKeysAreRejectedSynchronouslyWithoutCallback) {
  Options options;
  options.max_key_bytes = 8;
  TearDown();
  Make(options);
  Call empty = group_->Do("", Immediate("v"), Record());
  Call longer = group_->Do("123456789", Immediate("v"), Record());
  Call at_bound = group_->Do("12345678", Immediate("v"), Record());
  EXPECT_EQ(empty.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(longer.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(at_bound.ok());
  EXPECT_FALSE(empty.Cancel());
  clock().RunPending();
  EXPECT_EQ(results_.size(), 1u);
  EXPECT_EQ(group_->stats().rejected, 2u);
}

TEST_F(FlightLocalTest, MissingProducerOrCallbackIsRejected) {
  EXPECT_EQ(group_->Do("k", nullptr, Record(), {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(group_->Do("k", Immediate("v"), nullptr, {}).status().code(), Code::kInvalidArgument);
}

TEST_F(FlightLocalTest, CapacityBoundsAnswerUnavailable) {
  Options options;
  options.max_inflight_keys = 1;
  options.max_waiters_per_flight = 2;
  TearDown();
  Make(options);
  (void)DoKey("a", Parked());
  (void)DoKey("a", Parked());
  EXPECT_EQ(group_->Do("a", Parked(), Record()).status().code(), Code::kUnavailable);
  EXPECT_EQ(group_->Do("b", Parked(), Record()).status().code(), Code::kUnavailable);
  parked_[0]("v");
  clock().RunPending();
  (void)DoKey("b", Immediate("w"));
  clock().RunPending();
  EXPECT_EQ(results_.back().value(), "w");
}

TEST_F(FlightLocalTest, WaitersThatLeftDoNotCountTowardTheBound) {
  Options options;
  options.max_waiters_per_flight = 2;
  TearDown();
  Make(options);
  (void)DoKey("a", Parked(), CallOptions{100});
  (void)DoKey("a", Parked(), CallOptions{100});
  clock().Advance(100);  // both left
  for (int i = 0; i < 2; ++i) (void)DoKey("a", Parked());
  EXPECT_EQ(group_->Do("a", Parked(), Record()).status().code(), Code::kUnavailable);
  parked_[0]("v");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 4u);
  EXPECT_EQ(results_[2].value(), "v");
  EXPECT_EQ(results_[3].value(), "v");
}

TEST_F(FlightLocalTest, ManyDepartedWaitersAreCompactedAndTheRestAnswered) {
  for (int i = 0; i < 200; ++i) (void)DoKey("a", Parked(), CallOptions{100});
  (void)DoKey("a", Parked(), CallOptions{5000});
  clock().Advance(100);
  EXPECT_EQ(results_.size(), 200u);
  parked_[0]("v");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 201u);
  EXPECT_EQ(results_.back().value(), "v");
}

TEST_F(FlightLocalTest, ForgetDuringAFlightStartsANewOneAndSkipsL1) {
  (void)DoKey("k", Parked());
  group_->Forget("k");
  (void)DoKey("k", Parked());
  ASSERT_EQ(runs_, 2);
  parked_[0]("old");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 1u);
  EXPECT_EQ(results_[0].value(), "old");
  EXPECT_EQ(results_[0].source, Source::kLed);
  parked_[1]("new");
  clock().RunPending();
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_EQ(results_[1].value(), "new");
  (void)DoKey("k", Immediate("unused"));
  clock().RunPending();
  EXPECT_EQ(results_.back().value(), "new");  // the newer flight filled L1
  EXPECT_EQ(results_.back().source, Source::kLocalCache);
}

TEST_F(FlightLocalTest, ForgetDropsL1) {
  (void)DoKey("k", Immediate("v1"));
  clock().RunPending();
  group_->Forget("k");
  (void)DoKey("k", Immediate("v2"));
  clock().RunPending();
  EXPECT_EQ(results_.back().value(), "v2");
}

TEST_F(FlightLocalTest, CloseFailsPendingCallersBeforeItsCallback) {
  (void)DoKey("a", Parked());
  (void)DoKey("b", Parked());
  bool closed = false;
  group_->Close([&] {
    closed = true;
    EXPECT_EQ(results_.size(), 2u);
  });
  EXPECT_FALSE(closed);
  EXPECT_EQ(group_->Do("c", Immediate("v"), Record()).status().code(), Code::kClosed);
  clock().RunPending();
  EXPECT_TRUE(closed);
  ASSERT_EQ(results_.size(), 2u);
  for (auto& r : results_) EXPECT_EQ(r.status.code(), Code::kClosed);
  EXPECT_FALSE(parked_[0]("late"));  // the flight is gone; done is harmless
  group_ = nullptr;
}

TEST_F(FlightLocalTest, CloseFromInsideACallback) {
  bool closed = false;
  GroupImpl* group = group_;
  Call call =
      group_->Do("k", Immediate("v"), [&](const Result&) { group->Close([&] { closed = true; }); });
  ASSERT_TRUE(call.ok());
  clock().RunPending();
  EXPECT_TRUE(closed);
  group_ = nullptr;
}

TEST_F(FlightLocalTest, ThrowingCallbackDoesNotStopTheOthers) {
  Call a = group_->Do("k", Parked(), [](const Result&) { throw std::runtime_error("oops"); });
  ASSERT_TRUE(a.ok());
  (void)DoKey("k", Parked());
  parked_[0]("v");
  clock().RunPending();
  EXPECT_EQ(results_.size(), 1u);
}

TEST_F(FlightLocalTest, DistinctKeysRunSeparately) {
  (void)DoKey("a", Immediate("1"));
  (void)DoKey("b", Immediate("2"));
  clock().RunPending();
  EXPECT_EQ(runs_, 2);
}

TEST_F(FlightLocalTest, InvalidOptionsRejectEveryCall) {
  Options options;
  options.key_prefix = "bad{";
  TearDown();
  Make(options);
  EXPECT_EQ(group_->Do("k", Immediate("v"), Record()).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace singleflight::internal
