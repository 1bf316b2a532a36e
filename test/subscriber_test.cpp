// Subscriber against a real redis-server: fan-out to listeners, the one
// SUBSCRIBE / one UNSUBSCRIBE rule, re-subscription after a killed connection.
#include "subscriber.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "support/loop_helpers.h"
#include "support/redis_server.h"

namespace singleflight::internal {
namespace {

using test::Drain;
using test::RedisServer;
using test::RunUntil;

struct RecordingListener : Subscriber::Listener {
  int subscribed = 0;
  std::vector<std::string> messages;
  std::function<void()> on_message;  // optional extra behaviour

  void OnSubscribed(std::string_view) override { ++subscribed; }
  void OnMessage(std::string_view, std::string_view payload) override {
    messages.emplace_back(payload);
    if (on_message) on_message();
  }
};

// How many times the server ran a command, from INFO commandstats.
long long Calls(RedisServer& server, const std::string& command) {
  std::string stats = server.Command({"INFO", "commandstats"}).str;
  std::string key = "cmdstat_" + command + ":calls=";
  size_t at = stats.find(key);
  return at == std::string::npos ? 0 : std::atoll(stats.c_str() + at + key.size());
}

long long NumSub(RedisServer& server, const std::string& channel) {
  Reply reply = server.Command({"PUBSUB", "NUMSUB", channel});
  return reply.elements.size() == 2 ? reply.elements[1].integer : -1;
}

long long Publish(RedisServer& server, const std::string& channel, const std::string& payload) {
  return server.Command({"PUBLISH", channel, payload}).integer;
}

class SubscriberTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    scheduler_ = std::make_unique<test::LoopScheduler>(&loop_);
    SF_START_REDIS(server_);
    RedisOptions options;
    options.host = server_.host();
    options.port = server_.port();
    Subscriber::Handlers handlers;
    handlers.on_state = [this](bool up, const Status&) { up ? ++ups_ : ++downs_; };
    subscriber_ = std::make_unique<Subscriber>(&loop_, scheduler_->get(), options, handlers);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return ups_ == 1; }));
  }

  void TearDown() override {
    if (subscriber_) {
      bool done = false;
      subscriber_->Close([&] { done = true; });
      EXPECT_TRUE(RunUntil(&loop_, [&] { return done; }));
      subscriber_.reset();
    }
    scheduler_.reset();
    EXPECT_TRUE(Drain(&loop_));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // Waits until the server has processed everything sent so far: a probe
  // channel subscribed now is confirmed only after every earlier command.
  // Probes stay subscribed so that they add no UNSUBSCRIBE of their own.
  void Sync() {
    probes_.push_back(std::make_unique<RecordingListener>());
    RecordingListener& probe = *probes_.back();
    subscriber_->Add("probe:" + std::to_string(probes_.size()), &probe);
    ASSERT_TRUE(RunUntil(&loop_, [&] { return probe.subscribed > 0; }));
  }

  uv_loop_t loop_;
  std::unique_ptr<test::LoopScheduler> scheduler_;
  RedisServer server_;
  std::unique_ptr<Subscriber> subscriber_;
  int ups_ = 0;
  int downs_ = 0;
  std::vector<std::unique_ptr<RecordingListener>> probes_;
};

TEST_F(SubscriberTest, MessageReachesEveryListenerOfItsChannelOnly) {
  RecordingListener a1, a2, a3, b;
  subscriber_->Add("a", &a1);
  subscriber_->Add("a", &a2);
  subscriber_->Add("a", &a3);
  subscriber_->Add("b", &b);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a1.subscribed && a2.subscribed && a3.subscribed; }));
  EXPECT_EQ(Publish(server_, "a", "x"), 1);  // one connection, however many listeners
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return a1.messages.size() + a2.messages.size() + a3.messages.size() == 3; }));
  EXPECT_EQ(a1.messages, std::vector<std::string>{"x"});
  Sync();
  EXPECT_TRUE(b.messages.empty());
  EXPECT_EQ(Calls(server_, "subscribe"), 2);  // a and b (in one command), then the probe
  for (RecordingListener* l : {&a1, &a2, &a3}) subscriber_->Remove("a", l);
  subscriber_->Remove("b", &b);
}

TEST_F(SubscriberTest, OnSubscribedFollowsConfirmationAndIsNeverInsideAdd) {
  RecordingListener first, second;
  subscriber_->Add("ch", &first);
  EXPECT_EQ(first.subscribed, 0);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return first.subscribed == 1; }));
  EXPECT_EQ(NumSub(server_, "ch"), 1);  // confirmed means the server has it
  subscriber_->Add("ch", &second);
  EXPECT_EQ(second.subscribed, 0);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return second.subscribed == 1; }));
  EXPECT_EQ(first.subscribed, 1);
  EXPECT_EQ(Calls(server_, "subscribe"), 1);
  subscriber_->Remove("ch", &first);
  subscriber_->Remove("ch", &second);
}

TEST_F(SubscriberTest, LastRemoveSendsOneUnsubscribe) {
  RecordingListener first, second;
  subscriber_->Add("ch", &first);
  subscriber_->Add("ch", &second);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return first.subscribed && second.subscribed; }));
  subscriber_->Remove("ch", &first);
  Sync();
  EXPECT_EQ(NumSub(server_, "ch"), 1);
  subscriber_->Remove("ch", &second);
  Sync();
  EXPECT_EQ(NumSub(server_, "ch"), 0);
  EXPECT_EQ(Publish(server_, "ch", "late"), 0);
  EXPECT_EQ(Calls(server_, "unsubscribe"), 1);
  EXPECT_TRUE(first.messages.empty());
  EXPECT_TRUE(second.messages.empty());
}

TEST_F(SubscriberTest, RemoveAndReAddWhileUnsubscribeIsInFlight) {
  RecordingListener old_listener, new_listener;
  subscriber_->Add("ch", &old_listener);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return old_listener.subscribed == 1; }));
  subscriber_->Remove("ch", &old_listener);  // UNSUBSCRIBE goes out now
  subscriber_->Add("ch", &new_listener);     // SUBSCRIBE follows, before its confirmation
  ASSERT_TRUE(RunUntil(&loop_, [&] { return new_listener.subscribed == 1; }));
  EXPECT_EQ(NumSub(server_, "ch"), 1);
  EXPECT_EQ(Publish(server_, "ch", "m"), 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return new_listener.messages.size() == 1; }));
  EXPECT_TRUE(old_listener.messages.empty());
  EXPECT_EQ(old_listener.subscribed, 1);
  subscriber_->Remove("ch", &new_listener);
  Sync();
  EXPECT_EQ(NumSub(server_, "ch"), 0);
}

TEST_F(SubscriberTest, AddRemoveAddBeforeTheFirstConfirmation) {
  RecordingListener first, second;
  subscriber_->Add("ch", &first);
  subscriber_->Remove("ch", &first);  // nothing was sent yet: nothing to undo
  subscriber_->Add("ch", &second);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return second.subscribed == 1; }));
  EXPECT_EQ(first.subscribed, 0);
  EXPECT_EQ(Calls(server_, "subscribe"), 1);
  EXPECT_EQ(Calls(server_, "unsubscribe"), 0);
  subscriber_->Remove("ch", &second);
}

TEST_F(SubscriberTest, KilledConnectionResubscribesAndNotifiesAgain) {
  RecordingListener a, b;
  subscriber_->Add("a", &a);
  subscriber_->Add("b", &b);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.subscribed == 1 && b.subscribed == 1; }));
  EXPECT_EQ(server_.Command({"CLIENT", "KILL", "TYPE", "pubsub"}).integer, 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.subscribed == 2 && b.subscribed == 2; }));
  EXPECT_EQ(downs_, 1);
  EXPECT_EQ(ups_, 2);
  EXPECT_EQ(Publish(server_, "a", "after"), 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.messages.size() == 1; }));
  EXPECT_EQ(a.messages[0], "after");
  subscriber_->Remove("a", &a);
  subscriber_->Remove("b", &b);
}

TEST_F(SubscriberTest, RestartedServerGetsEveryChannelAgain) {
  RecordingListener a;
  subscriber_->Add("a", &a);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.subscribed == 1; }));
  server_.Kill();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return downs_ >= 1; }));
  ASSERT_TRUE(server_.Restart());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.subscribed == 2; }));
  EXPECT_EQ(Publish(server_, "a", "back"), 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return a.messages.size() == 1; }));
  subscriber_->Remove("a", &a);
}

TEST_F(SubscriberTest, BinaryChannelAndPayloadArriveIntact) {
  const std::string channel("c\0h\xff", 4);
  const std::string payload("\0\xff\r\nx\0", 6);
  RecordingListener listener;
  subscriber_->Add(channel, &listener);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return listener.subscribed == 1; }));
  EXPECT_EQ(Publish(server_, channel, payload), 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return listener.messages.size() == 1; }));
  EXPECT_EQ(listener.messages[0], payload);
  subscriber_->Remove(channel, &listener);
}

TEST_F(SubscriberTest, ListenerRemovedDuringDeliveryIsNotCalled) {
  RecordingListener first, second;
  // Whichever runs first removes the other: exactly one sees the message.
  first.on_message = [&] { subscriber_->Remove("ch", &second); };
  second.on_message = [&] { subscriber_->Remove("ch", &first); };
  subscriber_->Add("ch", &first);
  subscriber_->Add("ch", &second);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return first.subscribed && second.subscribed; }));
  Publish(server_, "ch", "m");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return first.messages.size() + second.messages.size() > 0; }));
  Sync();
  EXPECT_EQ(first.messages.size() + second.messages.size(), 1u);
  subscriber_->Remove("ch", &first);
  subscriber_->Remove("ch", &second);
}

TEST_F(SubscriberTest, ThousandsOfListenersShareOneSubscription) {
  std::vector<RecordingListener> listeners(5000);
  for (RecordingListener& listener : listeners) subscriber_->Add("hot", &listener);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return listeners.back().subscribed == 1; }));
  EXPECT_EQ(Publish(server_, "hot", "v"), 1);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return listeners.back().messages.size() == 1; }));
  for (const RecordingListener& listener : listeners) {
    ASSERT_EQ(listener.subscribed, 1);
    ASSERT_EQ(listener.messages.size(), 1u);
  }
  EXPECT_EQ(Calls(server_, "subscribe"), 1);
  for (RecordingListener& listener : listeners) subscriber_->Remove("hot", &listener);
  Sync();
  EXPECT_EQ(NumSub(server_, "hot"), 0);
  EXPECT_EQ(Calls(server_, "unsubscribe"), 1);
}

TEST_F(SubscriberTest, ChannelsAddedInOneTickShareOneSubscribe) {
  std::vector<RecordingListener> listeners(100);
  for (size_t i = 0; i < listeners.size(); ++i) {
    subscriber_->Add("ch:" + std::to_string(i), &listeners[i]);
  }
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    for (const RecordingListener& l : listeners) {
      if (l.subscribed == 0) return false;
    }
    return true;
  }));
  EXPECT_EQ(Calls(server_, "subscribe"), 1);
  for (size_t i = 0; i < listeners.size(); ++i) {
    subscriber_->Remove("ch:" + std::to_string(i), &listeners[i]);
  }
}

TEST_F(SubscriberTest, NoListenerCallAfterClose) {
  RecordingListener listener;
  subscriber_->Add("ch", &listener);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return listener.subscribed == 1; }));
  bool done = false;
  subscriber_->Close([&] { done = true; });
  EXPECT_FALSE(subscriber_->connected());
  Publish(server_, "ch", "m");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_TRUE(listener.messages.empty());
  subscriber_.reset();
}

}  // namespace
}  // namespace singleflight::internal
