// The public Group on a real libuv loop, Redis disabled (local-only mode).
#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "singleflight/group.h"

namespace singleflight {
namespace {

// A producer that finishes on a uv timer, as real asynchronous work would.
struct TimerWork {
  uv_timer_t timer;
  Done done;
  std::string value;
};

Producer AfterMs(uv_loop_t* loop, uint64_t ms, std::string value, int* runs) {
  return [loop, ms, value, runs](const ProducerContext&, Done done) {
    ++*runs;
    auto* work = new TimerWork{{}, std::move(done), value};
    uv_timer_init(loop, &work->timer);
    work->timer.data = work;
    uv_timer_start(
        &work->timer,
        [](uv_timer_t* t) {
          auto* w = static_cast<TimerWork*>(t->data);
          w->done(w->value);
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete static_cast<TimerWork*>(h->data); });
        },
        ms, 0);
  };
}

class GroupLocalTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    // Every handle is closed: the loop has nothing left and closes cleanly.
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  uv_loop_t loop_;
};

TEST_F(GroupLocalTest, CoalescesCallersOnTheLoop) {
  Group group(&loop_);
  int runs = 0;
  std::vector<Result> results;
  for (int i = 0; i < 10; ++i) {
    Call call = group.Do("key", AfterMs(&loop_, 5, "value", &runs),
                         [&](const Result& r) { results.push_back(r); });
    ASSERT_TRUE(call.ok());
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(runs, 1);
  ASSERT_EQ(results.size(), 10u);
  for (auto& r : results) EXPECT_EQ(r.value(), "value");
  group.Close();
}

TEST_F(GroupLocalTest, DeadlineFiresForAProducerThatNeverCallsDone) {
  Group group(&loop_);
  std::vector<Result> results;
  Producer never = [](const ProducerContext&, Done) {};
  Call call = group.Do(
      "key", never, [&](const Result& r) { results.push_back(r); }, CallOptions{20});
  ASSERT_TRUE(call.ok());
  bool closed = false;
  // Run until the deadline delivers; the loop has only our timer left.
  while (results.empty() && uv_run(&loop_, UV_RUN_ONCE) != 0) {
  }
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status.code(), Code::kTimeout);
  group.Close([&] { closed = true; });
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(closed);
}

TEST_F(GroupLocalTest, CloseFailsPendingCallsAndThenCallsBack) {
  Group group(&loop_);
  int runs = 0;
  std::vector<Code> codes;
  bool closed = false;
  Call call = group.Do("key", AfterMs(&loop_, 50, "v", &runs),
                       [&](const Result& r) { codes.push_back(r.status.code()); });
  ASSERT_TRUE(call.ok());
  group.Close([&] {
    closed = true;
    EXPECT_EQ(codes.size(), 1u);
  });
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(closed);
  ASSERT_EQ(codes.size(), 1u);
  EXPECT_EQ(codes[0], Code::kClosed);
  EXPECT_EQ(group.Do("key", AfterMs(&loop_, 1, "v", &runs), [](const Result&) {}).status().code(),
            Code::kClosed);
}

TEST_F(GroupLocalTest, DestroyingAnOpenGroupClosesIt) {
  int runs = 0;
  std::vector<Code> codes;
  {
    Group group(&loop_);
    Call call = group.Do("key", AfterMs(&loop_, 10, "v", &runs),
                         [&](const Result& r) { codes.push_back(r.status.code()); });
    ASSERT_TRUE(call.ok());
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(codes.size(), 1u);
  EXPECT_EQ(codes[0], Code::kClosed);
}

TEST_F(GroupLocalTest, StatsSurviveClose) {
  Group group(&loop_);
  int runs = 0;
  Call call = group.Do("key", AfterMs(&loop_, 1, "v", &runs), [](const Result&) {});
  ASSERT_TRUE(call.ok());
  uv_run(&loop_, UV_RUN_DEFAULT);
  group.Close();
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(group.stats().calls, 1u);
  EXPECT_EQ(group.stats().leads, 1u);
}

int ActiveHandles(uv_loop_t* loop) {
  int active = 0;
  uv_walk(
      loop, [](uv_handle_t* h, void* arg) { *static_cast<int*>(arg) += uv_is_active(h) != 0; },
      &active);
  return active;
}

TEST_F(GroupLocalTest, NothingStaysActiveOnceCallersAreAnswered) {
  // A deadline timer left armed would keep the application's loop running
  // for up to the whole wait_timeout after the answer.
  Group group(&loop_);
  int answered = 0;
  Call call = group.Do(
      "key", [](const ProducerContext&, Done done) { done("v"); },
      [&](const Result&) { ++answered; }, CallOptions{60000});
  ASSERT_TRUE(call.ok());
  while (answered == 0) uv_run(&loop_, UV_RUN_ONCE);
  EXPECT_EQ(ActiveHandles(&loop_), 0);
  group.Close();
}

#ifndef NDEBUG
TEST_F(GroupLocalTest, UseFromAnotherThreadAbortsInDebugBuilds) {
  Group group(&loop_);
  EXPECT_DEATH(
      {
        std::thread other([&] {
          (void)group.Do(
              "k", [](const ProducerContext&, Done) {}, [](const Result&) {});
        });
        other.join();
      },
      "not thread-safe");
  group.Close();
}
#endif

}  // namespace
}  // namespace singleflight
