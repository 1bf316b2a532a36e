// The echo_server example, run as a real process against a real redis-server
// and spoken to over real sockets: line framing, bounds, and a clean exit.
#ifdef SF_EXAMPLE_echo_server

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include "support/child_process.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

using test::ChildProcess;
using test::RedisServer;

// A blocking TCP client whose reads are bounded by a deadline.
class LineClient {
 public:
  ~LineClient() { Close(); }
  bool Connect(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  bool Send(const std::string& data) {
    return send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // One reply line without its '\n', or "" on EOF/deadline.
  std::string ReadLine(int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

class EchoServerTest : public ::testing::Test {
 protected:
  void SetUp() override { SF_START_REDIS(redis_); }

  // Starts an instance on a free port; returns the port, or 0.
  int StartServer(ChildProcess* child, const std::string& max_line = "32") {
    std::string redis = redis_.host() + ":" + std::to_string(redis_.port());
    if (!child->Spawn(SF_EXAMPLE_echo_server, {"--listen", "127.0.0.1:0", "--redis", redis,
                                               "--delay-ms", "100", "--max-line", max_line})) {
      return 0;
    }
    std::string line;
    if (!child->ReadLine(&line, 10000) || line.rfind("listening ", 0) != 0) return 0;
    return std::stoi(line.substr(line.rfind(':') + 1));
  }

  // SIGTERM is the graceful stop: the server must exit 0 with its loop empty.
  static void ExpectCleanStop(ChildProcess* child) {
    child->Kill(SIGTERM);
    int status = child->Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  }

  RedisServer redis_;
};

// "<value> <source>": the value names the key, the source how it was served.
bool IsAnswer(const std::string& reply, const std::string& key) {
  return reply.rfind("echo:" + key + "@pid", 0) == 0 && reply.find(' ') != std::string::npos;
}

TEST_F(EchoServerTest, PartialLinesAreJoinedBeforeTheyAreAnswered) {
  ChildProcess server;
  int port = StartServer(&server);
  ASSERT_GT(port, 0);
  LineClient client;
  ASSERT_TRUE(client.Connect(port));
  ASSERT_TRUE(client.Send("par"));
  EXPECT_EQ(client.ReadLine(300), "") << "answered before the line was complete";
  ASSERT_TRUE(client.Send("tial\r\nsecond\nthi"));
  ASSERT_TRUE(client.Send("rd\n"));
  std::string first = client.ReadLine();
  EXPECT_TRUE(IsAnswer(first, "partial")) << first;
  EXPECT_TRUE(first.size() > 4 && first.substr(first.size() - 4) == " led") << first;
  EXPECT_TRUE(IsAnswer(client.ReadLine(), "second"));  // replies keep request order
  EXPECT_TRUE(IsAnswer(client.ReadLine(), "third"));
  ExpectCleanStop(&server);
}

TEST_F(EchoServerTest, OverLongLineGetsAnErrorAndTheConnectionGoesOn) {
  ChildProcess server;
  int port = StartServer(&server, "32");
  ASSERT_GT(port, 0);
  LineClient client;
  ASSERT_TRUE(client.Connect(port));
  // Sent in pieces so the server sees the bound crossed mid-line, far past it.
  ASSERT_TRUE(client.Send(std::string(20, 'x')));
  ASSERT_TRUE(client.Send(std::string(5000, 'y')));
  ASSERT_TRUE(client.Send("\nafter\n"));
  EXPECT_EQ(client.ReadLine(), "ERR invalid_argument: line longer than 32 bytes");
  EXPECT_TRUE(IsAnswer(client.ReadLine(), "after"));
  // Exactly at the bound is still a key.
  std::string longest(32, 'k');
  ASSERT_TRUE(client.Send(longest + "\n"));
  EXPECT_TRUE(IsAnswer(client.ReadLine(), longest));
  ExpectCleanStop(&server);
}

TEST_F(EchoServerTest, ClientGoneMidRequestLeavesTheOthersServed) {
  ChildProcess server;
  int port = StartServer(&server);
  ASSERT_GT(port, 0);
  {
    LineClient quitter;
    ASSERT_TRUE(quitter.Connect(port));
    ASSERT_TRUE(quitter.Send("k\n"));
  }  // closed while its request is in flight
  LineClient client;
  ASSERT_TRUE(client.Connect(port));
  ASSERT_TRUE(client.Send("k\n"));
  EXPECT_TRUE(IsAnswer(client.ReadLine(), "k"));
  ExpectCleanStop(&server);
}

TEST_F(EchoServerTest, TwoInstancesShareOneExecutionThroughRedis) {
  ChildProcess a, b;
  int port_a = StartServer(&a);
  int port_b = StartServer(&b);
  ASSERT_GT(port_a, 0);
  ASSERT_GT(port_b, 0);
  LineClient to_a, to_b;
  ASSERT_TRUE(to_a.Connect(port_a));
  ASSERT_TRUE(to_b.Connect(port_b));
  ASSERT_TRUE(to_a.Send("shared\n"));
  ASSERT_TRUE(to_b.Send("shared\n"));
  std::string reply_a = to_a.ReadLine();
  std::string reply_b = to_b.ReadLine();
  ASSERT_TRUE(IsAnswer(reply_a, "shared")) << reply_a;
  ASSERT_TRUE(IsAnswer(reply_b, "shared")) << reply_b;
  // One process produced the value (its pid is in it); both served it.
  EXPECT_EQ(reply_a.substr(0, reply_a.find(' ')), reply_b.substr(0, reply_b.find(' ')));
  ExpectCleanStop(&a);
  ExpectCleanStop(&b);
}

}  // namespace
}  // namespace singleflight

#endif  // SF_EXAMPLE_echo_server
