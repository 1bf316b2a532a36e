// FleetTest: a real redis-server and one loop shared by several Groups, each
// with its own connections as separate processes would have. TearDown closes
// every group and checks that the loop then closes cleanly (a free leak check
// of every uv handle the library opened).
//
// Work: producers for such tests — one finishing on a uv timer, one parked
// until the test calls its Done.
//
// Real processes: SpawnWorker/RunWorkers start test/helpers/sf_worker against
// this test's server (the worker's path is a compile definition from
// sf_test_programs, test/CMakeLists.txt).
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "key_naming.h"
#include "singleflight/group.h"
#include "support/child_process.h"
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

// What one sf_worker printed, and how it ended.
struct WorkerOutput {
  std::vector<std::vector<std::string>> results;  // result i key code source text
  std::string stats;                              // the "stats k=v ..." line
  std::map<std::string, int> codes;               // --duration-ms: calls per code
  int exit_status = -1;

  // A field of the stats line ("leads", "leases_lost", ...); -1 if absent.
  long long Stat(const std::string& name) const {
    size_t at = stats.find(" " + name + "=");
    return at == std::string::npos ? -1 : std::atoll(stats.c_str() + at + name.size() + 2);
  }
};

class FleetTest : public ::testing::Test {
 protected:
  explicit FleetTest(RedisServer::Config config = {}) : redis_(std::move(config)) {}

  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);  // first: TearDown closes it even after a skip
    SF_START_REDIS(redis_);
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

#ifdef SF_HELPER_sf_worker
  // Starts one sf_worker on this test's server and waits for its "ready".
  std::unique_ptr<ChildProcess> SpawnWorker(std::vector<std::string> args) {
    args.insert(args.begin(), {"--redis", redis_.host() + ":" + std::to_string(redis_.port())});
    auto child = std::make_unique<ChildProcess>();
    EXPECT_TRUE(child->Spawn(SF_HELPER_sf_worker, args));
    std::string line;
    EXPECT_TRUE(child->ReadLine(&line, 10000) && line == "ready") << line;
    return child;
  }

  // Reads a worker's output until it exits.
  static WorkerOutput Collect(ChildProcess& child) {
    WorkerOutput out;
    std::vector<std::string> lines;
    EXPECT_TRUE(child.ReadAll(&lines, 60000)) << "a worker hung";
    for (auto& l : lines) {
      if (l.rfind("result ", 0) == 0) out.results.push_back(SplitWords(l));
      if (l.rfind("stats ", 0) == 0) out.stats = l;
      if (l.rfind("codes", 0) == 0) {
        std::vector<std::string> words = SplitWords(l);
        for (size_t i = 1; i < words.size(); ++i) {
          size_t eq = words[i].find('=');
          if (eq == std::string::npos) continue;
          out.codes[words[i].substr(0, eq)] += std::atoi(words[i].c_str() + eq + 1);
        }
      }
    }
    out.exit_status = child.Wait();
    return out;
  }

  // Starts `procs` workers with the same arguments, lets them all go at
  // once, and collects what each printed.
  std::vector<WorkerOutput> RunWorkers(int procs, const std::vector<std::string>& args) {
    std::vector<std::unique_ptr<ChildProcess>> children;
    for (int i = 0; i < procs; ++i) children.push_back(SpawnWorker(args));
    for (auto& child : children) child->WriteLine("go");
    std::vector<WorkerOutput> outputs;
    for (auto& child : children) outputs.push_back(Collect(*child));
    return outputs;
  }
#endif

  RedisServer redis_;
  uv_loop_t loop_;
  std::deque<std::vector<Result>> result_lists_;
  std::deque<Work> works_;
  std::vector<std::unique_ptr<Group>> groups_;
};

}  // namespace singleflight::test
