// RedisConnection against a real redis-server: round trips, the faults it must
// survive (refused, killed, paused, wrong password) and Close in every state.
#include "redis_connection.h"

#include <gtest/gtest.h>
#include <netdb.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "support/loop_helpers.h"
#include "support/redis_server.h"
#include "support/test_certs.h"

namespace singleflight::internal {
namespace {

using test::Drain;
using test::RedisServer;
using test::RunUntil;

// What a connection reported through on_state and on_push. The counters live
// in a shared State the callbacks hold, so a callback that comes after the
// test body returned (a failed assertion, then TearDown's Close) writes to
// live memory, never to a destroyed local.
struct Events {
  struct State {
    int ups = 0;
    int downs = 0;
    Status last_down;
    std::vector<Reply> pushes;
  };
  std::shared_ptr<State> state = std::make_shared<State>();
  int& ups = state->ups;
  int& downs = state->downs;
  Status& last_down = state->last_down;
  std::vector<Reply>& pushes = state->pushes;

  Events() = default;
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;

  RedisConnection::Handlers Handlers() const {
    return {[state = state](bool up, const Status& why) {
              if (up) {
                ++state->ups;
              } else {
                ++state->downs;
                state->last_down = why;
              }
            },
            [state = state](const Reply& push) { state->pushes.push_back(push); }};
  }
};

// The outcome of one command; `calls` catches a second callback. Shared state
// for the same reason as Events'.
struct Outcome {
  struct State {
    int calls = 0;
    Status status;
    Reply reply;
  };
  std::shared_ptr<State> state = std::make_shared<State>();
  int& calls = state->calls;
  Status& status = state->status;
  Reply& reply = state->reply;

  Outcome() = default;
  Outcome(Outcome&& other) noexcept
      : state(other.state), calls(state->calls), status(state->status), reply(state->reply) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  Outcome& operator=(Outcome&&) = delete;

  RedisConnection::CommandCallback Callback() const {
    return [state = state](const Status& s, const Reply& r) {
      ++state->calls;
      state->status = s;
      state->reply = r;
    };
  }
};

// A minbase root may have no /etc/hosts: then no name resolves, and that is
// the machine's state, not the connection's bug.
bool ResolvesLocalhost() {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo("localhost", nullptr, &hints, &found) != 0) return false;
  freeaddrinfo(found);
  return true;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The fixture owns every connection it creates: one the test body did not
// close (a failed assertion returned early) is closed in TearDown and the loop
// run until its close callback, so nothing outlives the test. Callbacks that
// capture the test body's locals go through Live(), which turns them into
// no-ops once the body is over.
class RedisConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    scheduler_ = std::make_unique<test::LoopScheduler>(&loop_);
  }

  void TearDown() override {
    body_over_ = true;
    int open = static_cast<int>(open_.size());
    auto closed = std::make_shared<int>(0);
    for (RedisConnection* connection : open_) connection->Close([closed] { ++*closed; });
    open_.clear();
    EXPECT_TRUE(RunUntil(&loop_, [&] { return *closed == open; }));
    scheduler_.reset();
    EXPECT_TRUE(Drain(&loop_));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  template <typename F>
  auto Live(F f) {
    return [this, f](auto&&... args) {
      if (!body_over_) f(std::forward<decltype(args)>(args)...);
    };
  }

  RedisOptions OptionsFor(const RedisServer& server) {
    RedisOptions options;
    options.host = server.host();
    options.port = server.port();
    return options;
  }

  RedisConnection* Connect(const RedisOptions& options, const Events& events,
                           RedisConnection::Mode mode = RedisConnection::Mode::kCommand) {
    RedisConnection* connection =
        RedisConnection::Create(&loop_, scheduler_->get(), options, mode, events.Handlers());
    open_.insert(connection);
    return connection;
  }

  // Sends one command and runs the loop until its callback ran.
  Outcome RoundTrip(RedisConnection* connection, std::vector<std::string> argv) {
    Outcome outcome;
    connection->Command(std::move(argv), outcome.Callback());
    EXPECT_TRUE(RunUntil(&loop_, [&] { return outcome.calls > 0; }));
    return outcome;
  }

  // Closes a connection of this fixture; `done` runs from its close callback
  // unless the test body is already over.
  void Close(RedisConnection* connection, std::function<void()> done) {
    open_.erase(connection);
    connection->Close(Live(std::move(done)));
  }

  void CloseAndWait(RedisConnection* connection) {
    auto done = std::make_shared<bool>(false);
    Close(connection, [done] { *done = true; });
    EXPECT_TRUE(RunUntil(&loop_, [&] { return *done; }));
  }

  uv_loop_t loop_;
  std::unique_ptr<test::LoopScheduler> scheduler_;

 private:
  std::set<RedisConnection*> open_;  // created here, not yet closed
  bool body_over_ = false;           // set first thing in TearDown
};

TEST_F(RedisConnectionTest, RefusedConnectReportsTheRefusal) {
  RedisServer server;
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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

// A slow server is not a dead one: the command that missed its deadline is
// answered kTimeout at once, the connection stays, and the late reply is
// discarded so that the next command still gets its own.
TEST_F(RedisConnectionTest, TimedOutCommandKeepsTheConnectionAndItsLateReplyIsDropped) {
  RedisServer server;
  SF_START_REDIS(server);
  Events events;
  RedisOptions options = OptionsFor(server);
  options.command_timeout_ms = 100;
  options.liveness_timeout_ms = 3600000;  // the pause must not reach it
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  server.Pause();
  Outcome late = RoundTrip(connection, {"ECHO", "late"});
  EXPECT_EQ(late.status.code(), Code::kTimeout);  // written: it may have run
  EXPECT_TRUE(Contains(late.status.message(), "timed out")) << late.status.ToString();
  server.Resume();
  Outcome next = RoundTrip(connection, {"ECHO", "next"});
  ASSERT_TRUE(next.status.ok()) << next.status.ToString();
  EXPECT_EQ(next.reply.str, "next");
  EXPECT_EQ(late.calls, 1);
  EXPECT_EQ(events.downs, 0);
  EXPECT_EQ(events.ups, 1);
  CloseAndWait(connection);
}

// A server silent past the liveness bound while a command waits is taken for
// dead: the connection is rebuilt, and works again once the server does.
TEST_F(RedisConnectionTest, ServerSilentPastTheLivenessBoundIsReconnected) {
  RedisServer server;
  SF_START_REDIS(server);
  Events events;
  RedisOptions options = OptionsFor(server);
  options.command_timeout_ms = 100;  // liveness: the default 3 x 100 ms
  options.connect_timeout_ms = 100;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  server.Pause();
  Outcome outcome = RoundTrip(connection, {"PING"});
  EXPECT_EQ(outcome.status.code(), Code::kTimeout);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.downs >= 1; }));
  EXPECT_TRUE(Contains(events.last_down.message(), "no reply")) << events.last_down.ToString();
  server.Resume();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 2; }));
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  EXPECT_EQ(outcome.calls, 1);
  CloseAndWait(connection);
}

TEST_F(RedisConnectionTest, WrongPasswordReportsTheAuthError) {
  RedisServer server({"secret", {}});
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  if (!ResolvesLocalhost()) {
    GTEST_SKIP() << "this machine does not resolve \"localhost\" (no /etc/hosts entry?)";
  }
  RedisServer server;
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  Close(connection, [&] {
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
  SF_START_REDIS(server);
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome outcome;
  bool done = false;
  Close(connection, [&] { done = true; });
  connection->Command({"PING"}, outcome.Callback());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_EQ(outcome.calls, 1);
  EXPECT_EQ(outcome.status.code(), Code::kClosed);
}

TEST_F(RedisConnectionTest, CloseWhileBackingOff) {
  RedisServer server;
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
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
  SF_START_REDIS(server);
  Events events;
  RedisConnection* connection = Connect(OptionsFor(server), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; }));
  Outcome second;
  bool done = false;
  connection->Command({"PING"}, Live([&](const Status&, const Reply&) {
                        Close(connection, [&] { done = true; });
                      }));
  connection->Command({"BLPOP", "never", "0"}, second.Callback());
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(second.status.code(), Code::kClosed);
}

TEST_F(RedisConnectionTest, SubscriberModeDeliversPubSubReplies) {
  RedisServer server;
  SF_START_REDIS(server);
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

// TLS, against a redis-server whose TCP port speaks only TLS (the fixture's
// own commands use its plaintext unix socket). Every failure must be an
// attempt failure whose message names the cause, never a hang.
class TlsConnectionTest : public RedisConnectionTest {
 protected:
  // A TLS server with the fixture's certificates; the caller starts it.
  static RedisServer::Config TlsServer(const test::TestCertificates& certs,
                                       bool auth_clients = false, bool wrong_name = false) {
    RedisServer::Config config;
    config.tls = {wrong_name ? certs.wrong_name_cert() : certs.server_cert(),
                  wrong_name ? certs.wrong_name_key() : certs.server_key(), certs.ca_cert(),
                  auth_clients};
    return config;
  }
  RedisOptions TlsOptionsFor(const RedisServer& server, const test::TestCertificates& certs) {
    RedisOptions options = OptionsFor(server);
    options.tls.enabled = true;
    options.tls.ca_file = certs.ca_cert();
    options.connect_timeout_ms = 10000;  // the failure itself, not a timeout, must end it
    return options;
  }
  // The first down's message, once it came.
  std::string FirstFailure(const RedisOptions& options) {
    Events events;
    Connect(options, events);
    EXPECT_TRUE(RunUntil(&loop_, [&] { return events.downs >= 1; }));
    EXPECT_EQ(events.ups, 0);
    return events.last_down.message();
  }
};

TEST_F(TlsConnectionTest, CommandsAndPubSubOverTls) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs));
  SF_START_REDIS(server);
  Events events;
  RedisConnection* connection = Connect(TlsOptionsFor(server, *certs), events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; })) << events.last_down.ToString();
  std::string binary("a\0b\r\n", 5);
  std::string large(200000, 'x');  // many TLS records each way
  Outcome set = RoundTrip(connection, {"SET", "k", large});
  EXPECT_TRUE(set.status.ok()) << set.status.ToString();
  EXPECT_EQ(RoundTrip(connection, {"GET", "k"}).reply.str, large);
  EXPECT_EQ(RoundTrip(connection, {"ECHO", binary}).reply.str, binary);
  Events sub_events;
  RedisConnection* subscriber =
      Connect(TlsOptionsFor(server, *certs), sub_events, RedisConnection::Mode::kSubscriber);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return sub_events.ups == 1; }));
  ASSERT_TRUE(subscriber->Subscribe({"ch"}));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return sub_events.pushes.size() == 1; }));
  server.Command({"PUBLISH", "ch", "over tls"});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return sub_events.pushes.size() == 2; }));
  EXPECT_EQ(sub_events.pushes[1].elements.at(2).str, "over tls");
  CloseAndWait(subscriber);
  CloseAndWait(connection);
}

TEST_F(TlsConnectionTest, MutualTlsWithAndWithoutAClientCertificate) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs, /*auth_clients=*/true));
  SF_START_REDIS(server);
  RedisOptions options = TlsOptionsFor(server, *certs);
  std::string refused = FirstFailure(options);
  EXPECT_TRUE(Contains(refused, "TLS")) << refused;
  EXPECT_TRUE(Contains(refused, "client certificate")) << refused;

  options.tls.cert_file = certs->other_client_cert();  // signed by a CA the server does not trust
  options.tls.key_file = certs->other_client_key();
  std::string untrusted = FirstFailure(options);
  EXPECT_TRUE(Contains(untrusted, "TLS")) << untrusted;

  options.tls.cert_file = certs->client_cert();
  options.tls.key_file = certs->client_key();
  Events events;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; })) << events.last_down.ToString();
  EXPECT_EQ(RoundTrip(connection, {"PING"}).reply.str, "PONG");
  CloseAndWait(connection);
}

TEST_F(TlsConnectionTest, UntrustedServerCertificateIsRefusedByName) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs));
  SF_START_REDIS(server);
  RedisOptions options = TlsOptionsFor(server, *certs);
  options.tls.ca_file = certs->other_ca_cert();
  std::string message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "not signed by a trusted CA")) << message;
}

TEST_F(TlsConnectionTest, NameMismatchIsRefusedUnlessTheServerNameIsGiven) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs, false, /*wrong_name=*/true));
  SF_START_REDIS(server);
  RedisOptions options = TlsOptionsFor(server, *certs);
  std::string message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "does not match \"127.0.0.1\"")) << message;

  options.tls.server_name = "wrong.example";  // the name the certificate holds
  Events events;
  RedisConnection* connection = Connect(options, events);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return events.ups == 1; })) << events.last_down.ToString();
  CloseAndWait(connection);
}

TEST_F(TlsConnectionTest, PlaintextToATlsPortSaysSo) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs));
  SF_START_REDIS(server);
  RedisOptions options = OptionsFor(server);
  options.connect_timeout_ms = 10000;
  std::string message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "a TLS port? then use rediss://")) << message;
}

TEST_F(TlsConnectionTest, TlsToAPlaintextPortSaysSo) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server;
  SF_START_REDIS(server);
  // Redis waits for the end of a line that a ClientHello never sends, so
  // only the connect deadline ends the attempt — with a message that says why.
  RedisOptions options = TlsOptionsFor(server, *certs);
  options.connect_timeout_ms = 200;
  std::string message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "a plaintext port? then use redis://")) << message;
}

TEST_F(TlsConnectionTest, UnreadableFilesAreNamed) {
  const test::TestCertificates* certs = nullptr;
  SF_TEST_CERTIFICATES(certs);
  RedisServer server(TlsServer(*certs));
  SF_START_REDIS(server);
  RedisOptions options = TlsOptionsFor(server, *certs);
  options.tls.ca_file = certs->dir() + "/missing-ca.pem";
  std::string message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "cannot load the CA file")) << message;
  options = TlsOptionsFor(server, *certs);
  options.tls.cert_file = certs->client_cert();
  options.tls.key_file = certs->server_key();  // not the certificate's key
  message = FirstFailure(options);
  EXPECT_TRUE(Contains(message, "does not match the certificate")) << message;
}

}  // namespace
}  // namespace singleflight::internal
