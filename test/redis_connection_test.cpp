// RedisConnection against a real redis-server: round trips, the faults it must
// survive (refused, killed, paused, wrong password) and Close in every state.
#include "redis_connection.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "support/loop_helpers.h"
#include "support/redis_server.h"

namespace singleflight::internal {
namespace {

using test::Drain;
using test::RedisServer;
using test::RunUntil;

// What a connection reported through on_state and on_push.
struct Events {
  int ups = 0;
  int downs = 0;
  Status last_down;
  std::vector<Reply> pushes;

  RedisConnection::Handlers Handlers() {
    return {[this](bool up, const Status& why) {
              if (up) {
                ++ups;
              } else {
                ++downs;
                last_down = why;
              }
            },
            [this](const Reply& push) { pushes.push_back(push); }};
  }
};

// The outcome of one command; `calls` catches a second callback.
struct Outcome {
  int calls = 0;
  Status status;
  Reply reply;

  RedisConnection::CommandCallback Callback() {
    return [this](const Status& s, const Reply& r) {
      ++calls;
      status = s;
      reply = r;
    };
  }
};

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class RedisConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }

  void TearDown() override {
    EXPECT_TRUE(Drain(&loop_));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  RedisOptions OptionsFor(const RedisServer& server) {
    RedisOptions options;
    options.host = server.host();
    options.port = server.port();
    return options;
  }

  RedisConnection* Connect(const RedisOptions& options, Events& events,
                           RedisConnection::Mode mode = RedisConnection::Mode::kCommand) {
    return RedisConnection::Create(&loop_, options, mode, events.Handlers());
  }

  // Sends one command and runs the loop until its callback ran.
  Outcome RoundTrip(RedisConnection* connection, std::vector<std::string> argv) {
    Outcome outcome;
    connection->Command(std::move(argv), outcome.Callback());
    EXPECT_TRUE(RunUntil(&loop_, [&] { return outcome.calls > 0; }));
    return outcome;
  }

  void CloseAndWait(RedisConnection* connection) {
    bool done = false;
    connection->Close([&] { done = true; });
    EXPECT_TRUE(RunUntil(&loop_, [&] { return done; }));
  }

  uv_loop_t loop_;
};

TEST_F(RedisConnectionTest, RefusedConnectReportsTheRefusal) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  server.Stop();  // nobody listens on its port now
  Events events;
  RedisOptions options = OptionsFor(server);
  options.connect_timeout_ms = 10000;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.downs > 0; }));
  EXPECT_EQ(events.last_down.code(), Code::kUnavailable);
  // The refusal itself, not the connect timeout, ended the attempt.
  EXPECT_TRUE(Contains(events.last_down.message(), "refused")) << events.last_down.ToString();
  EXPECT_EQ(events.ups, 0);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, CommandRoundTripIsBinarySafe) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  const std::string value("a\0b\xff\r\n", 6);
  Outcome set = RoundTrip(connection, {"SET", "k", value});
  ASSERT_TRUE(set.status.ok()) << set.status.ToString();
  EXPECT_EQ(set.reply.type, Reply::Type::kStatus);
  Outcome get = RoundTrip(connection, {"GET", "k"});
  ASSERT_TRUE(get.status.ok());
  EXPECT_EQ(get.reply.type, Reply::Type::kString);
  EXPECT_EQ(get.reply.str, value);
  EXPECT_EQ(get.calls, 1);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, ServerErrorIsAReplyNotAFailure) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome outcome = RoundTrip(connection, {"EVALSHA", std::string(40, 'a'), "0"});
  EXPECT_TRUE(outcome.status.ok());
  EXPECT_TRUE(outcome.reply.is_error());
  EXPECT_TRUE(Contains(outcome.reply.str, "NOSCRIPT")) << outcome.reply.str;
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, CommandBeforeConnectedFailsFastButNotSynchronously) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  Outcome outcome;
  connection->Command({"PING"}, outcome.Callback());
  EXPECT_EQ(outcome.calls, 0);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outcome.calls > 0; }));
  EXPECT_EQ(outcome.status.code(), Code::kUnavailable);
  EXPECT_EQ(outcome.calls, 1);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, ReplyCallbackIsNeverSynchronous) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome outcome;
  connection->Command({"PING"}, outcome.Callback());
  EXPECT_EQ(outcome.calls, 0);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outcome.calls > 0; }));
  EXPECT_EQ(outcome.reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, KilledServerFailsPendingCommandThenReconnects) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.command_timeout_ms = 60000;  // the kill, not the timeout, must end the command
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome blocked;
  connection->Command({"BLPOP", "never", "0"}, blocked.Callback());
  // The command is on the wire once the server counts a blocked client. There
  // is no event for that on our side, so probe the server between loop turns.
  bool blocked_seen = false;
  for (int i = 0; i < 10000 && !blocked_seen; ++i) {
    uv_run(&loop_, UV_RUN_NOWAIT);
    blocked_seen = Contains(server.Command({"INFO", "clients"}).str, "blocked_clients:1");
  }
  ASSERT_TRUE(blocked_seen);
  server.Kill();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return blocked.calls > 0; }));
  EXPECT_EQ(blocked.status.code(), Code::kTimeout);  // written: it may have run
  EXPECT_EQ(events.downs, 1);
  ASSERT_TRUE(server.Restart());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 2; }));
  Outcome ping = RoundTrip(connection, {"PING"});
  EXPECT_TRUE(ping.status.ok());
  EXPECT_EQ(ping.reply.str, "PONG");
  EXPECT_EQ(blocked.calls, 1);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, PausedServerTimesOutTheCommandAndReconnectsAfterResume) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.command_timeout_ms = 100;
  options.connect_timeout_ms = 100;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  server.Pause();
  Outcome outcome = RoundTrip(connection, {"PING"});
  EXPECT_EQ(outcome.status.code(), Code::kTimeout);  // written: it may have run
  EXPECT_TRUE(Contains(outcome.status.message(), "timed out")) << outcome.status.ToString();
  EXPECT_GE(events.downs, 1);
  server.Resume();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 2; }));
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, WrongPasswordReportsTheAuthError) {
  RedisServer server({"secret", {}});
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.password = "wrong";
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.downs > 0; }));
  EXPECT_EQ(events.last_down.code(), Code::kUnavailable);
  EXPECT_TRUE(Contains(events.last_down.message(), "AUTH failed")) << events.last_down.ToString();
  EXPECT_TRUE(Contains(events.last_down.message(), "WRONGPASS")) << events.last_down.ToString();
  // It keeps retrying with backoff, and keeps saying why.
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.downs > 1; }));
  EXPECT_TRUE(Contains(events.last_down.message(), "WRONGPASS"));
  EXPECT_EQ(events.ups, 0);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, RightPasswordConnects) {
  RedisServer server({"secret", {}});
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.password = "secret";
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, AclUserAndPasswordConnect) {
  RedisServer server({"", {"--user", "alice", "on", ">pw", "~*", "&*", "+@all"}});
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.username = "alice";
  options.password = "pw";
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome whoami = RoundTrip(connection, {"ACL", "WHOAMI"});
  EXPECT_EQ(whoami.reply.str, "alice");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, SelectsTheConfiguredDatabase) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.db = 3;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome info = RoundTrip(connection, {"CLIENT", "INFO"});
  EXPECT_TRUE(Contains(info.reply.str, " db=3 ")) << info.reply.str;
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, ResolvesHostNames) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.host = "localhost";  // may list ::1 first; the server listens on 127.0.0.1 only
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, ConnectsOverUnixSocket) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options;
  options.unix_socket = server.unix_socket();
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, CloseFailsEveryPendingCommandOnceWithClosedBeforeDone) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisOptions options = OptionsFor(server);
  options.command_timeout_ms = 60000;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  server.Pause();  // nothing gets answered
  std::vector<Outcome> outcomes(3);
  for (Outcome& outcome : outcomes) connection->Command({"PING"}, outcome.Callback());
  uv_run(&loop_, UV_RUN_NOWAIT);  // let them reach the socket
  int calls_before_done = -1;
  bool done = false;
  connection->Close([&] {
    done = true;
    calls_before_done = 0;
    for (const Outcome& outcome : outcomes) calls_before_done += outcome.calls;
  });
  for (const Outcome& outcome : outcomes) EXPECT_EQ(outcome.calls, 0);  // not inside Close
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_EQ(calls_before_done, 3);
  for (const Outcome& outcome : outcomes) {
    EXPECT_EQ(outcome.calls, 1);
    EXPECT_EQ(outcome.status.code(), Code::kClosed);
  }
  EXPECT_EQ(events.downs, 0);  // no handler after Close
  server.Resume();
}

TEST_F(RedisConnectionTest, CommandAfterCloseGetsClosed) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome outcome;
  bool done = false;
  connection->Close([&] { done = true; });
  connection->Command({"PING"}, outcome.Callback());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_EQ(outcome.calls, 1);
  EXPECT_EQ(outcome.status.code(), Code::kClosed);
}

TEST_F(RedisConnectionTest, CloseWhileBackingOff) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  server.Stop();
  Events events;
  RedisOptions options = OptionsFor(server);
  options.reconnect_min_ms = 60000;  // the retry would only come long after the test
  options.reconnect_max_ms = 60000;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.downs == 1; }));
  CloseAndWait(connection);
  EXPECT_EQ(events.downs, 1);
}

TEST_F(RedisConnectionTest, CloseWhileConnecting) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  CloseAndWait(connection);
  EXPECT_EQ(events.ups + events.downs, 0);
}

TEST_F(RedisConnectionTest, CloseWhileResolving) {
  Events events;
  RedisOptions options;
  options.host = "localhost";
  options.port = 1;
  RedisConnection* connection = Connect(options, events);
  uv_run(&loop_, UV_RUN_NOWAIT);  // the first attempt starts resolving
  CloseAndWait(connection);
  EXPECT_EQ(events.ups, 0);
}

TEST_F(RedisConnectionTest, CloseFromInsideACommandCallback) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome second;
  bool done = false;
  connection->Command(
      {"PING"}, [&](const Status&, const Reply&) { connection->Close([&] { done = true; }); });
  connection->Command({"BLPOP", "never", "0"}, second.Callback());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(second.status.code(), Code::kClosed);
}

TEST_F(RedisConnectionTest, SubscriberModeDeliversPubSubReplies) {
  RedisServer server;
  ASSERT_TRUE(server.Start());
  Events events;
  RedisConnection* connection =
      Connect(OptionsFor(server), events, RedisConnection::Mode::kSubscriber);
  EXPECT_FALSE(connection->Subscribe({"ch"}));  // not connected yet
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  ASSERT_TRUE(connection->Subscribe({"ch"}));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.pushes.size() == 1; }));
  EXPECT_EQ(events.pushes[0].elements.at(0).str, "subscribe");
  EXPECT_EQ(events.pushes[0].elements.at(1).str, "ch");
  server.Command({"PUBLISH", "ch", "hello"});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.pushes.size() == 2; }));
  EXPECT_EQ(events.pushes[1].elements.at(0).str, "message");
  EXPECT_EQ(events.pushes[1].elements.at(2).str, "hello");
  ASSERT_TRUE(connection->Unsubscribe({"ch"}));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.pushes.size() == 3; }));
  EXPECT_EQ(events.pushes[2].elements.at(0).str, "unsubscribe");
  CloseAndWait(connection);
}

}  // namespace
}  // namespace singleflight::internal
