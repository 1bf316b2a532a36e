// FleetTest: a real redis-server and one loop shared by several Groups, each
// with its own connections as separate processes would have. TearDown closes
// every group and checks that the loop then closes cleanly (a free leak check
// of every uv handle the library opened).
//
// Work: producers for such tests — one finishing on a uv timer, one parked
// until the test calls its Done.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "key_naming.h"
#include "singleflight/group.h"
#include "support/loop_helpers.h"
#include "support/redis_server.h"

namespace singleflight::test {

class Work {
 public:
  explicit Work(uv_loop_t* loop) : loop_(loop) {}

  Producer After(uint64_t ms, std::string value) {
    return [this, ms, value](const ProducerContext&, Done done) {
      ++runs;
      auto* timer = new Timer{{}, std::move(done), value};
      uv_timer_init(loop_, &timer->handle);
      timer->handle.data = timer;
      uv_timer_start(&timer->handle, OnTimer, ms, 0);
    };
  }
  Producer Parked() {
    return [this](const ProducerContext&, Done done) {
      ++runs;
      parked.push_back(std::move(done));
    };
  }
  Producer Now(std::string value) {
    return [this, value](const ProducerContext&, Done done) {
      ++runs;
      done(value);
    };
  }

  int runs = 0;
  std::vector<Done> parked;

 private:
  struct Timer {
    uv_timer_t handle;
    Done done;
    std::string value;
  };
  static void OnTimer(uv_timer_t* handle) {
    auto* timer = static_cast<Timer*>(handle->data);
    timer->done(timer->value);
    uv_close(reinterpret_cast<uv_handle_t*>(handle),
             [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
  }
  uv_loop_t* loop_;
};

class FleetTest : public ::testing::Test {
 protected:
  explicit FleetTest(RedisServer::Config config = {}) : redis_(std::move(config)) {}

  void SetUp() override {
    ASSERT_TRUE(redis_.Start());
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }
  void TearDown() override {
    for (auto& group : groups_) group->Close();
    EXPECT_TRUE(Drain(&loop_));
    groups_.clear();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // Options pointing at this test's server, with timings short enough for
  // tests (a 3 s lease, a 200 ms fallback).
  Options BaseOptions() {
    Options options;
    options.redis.host = redis_.host();
    options.redis.port = redis_.port();
    options.lock_ttl_ms = 3000;
    options.fallback_interval_ms = 0;  // v2: no polling, as shipped
    return options;
  }
  Group& NewGroup(Options options) {
    groups_.push_back(std::make_unique<Group>(&loop_, std::move(options)));
    return *groups_.back();
  }
  Group& NewGroup() { return NewGroup(BaseOptions()); }

  // Callbacks and producers may still run in TearDown (a failed assertion
  // returns early, then Close answers kClosed), so what they write to lives
  // in the fixture, not on the test body's stack.
  std::vector<Result>& NewResults() { return result_lists_.emplace_back(); }
  Work& NewWork() { return works_.emplace_back(&loop_); }

  // Calls Do and records the result into `out`.
  void Call(Group& group, const std::string& key, Producer producer, std::vector<Result>* out,
            uint32_t timeout_ms = 20000) {
    auto call = group.Do(
        key, std::move(producer), [out](const Result& r) { out->push_back(r); },
        CallOptions{timeout_ms});
    ASSERT_TRUE(call.ok()) << call.status().ToString();
  }

  // A leader answers its own callers before its completion is written, so a
  // test that wants the next process to find the result in Redis waits for
  // the store first (running the loop, which writes it).
  bool WaitStored(const std::string& key, const std::string& prefix = "sf:") {
    std::string result = internal::NameFlight(prefix, key).result;
    return RunUntil(&loop_, [&] { return redis_.Command({"EXISTS", result}).integer == 1; });
  }

  RedisServer redis_;
  uv_loop_t loop_;
  std::deque<std::vector<Result>> result_lists_;
  std::deque<Work> works_;
  std::vector<std::unique_ptr<Group>> groups_;
};

}  // namespace singleflight::test
