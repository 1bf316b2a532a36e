// The fetch_service example as real processes (a supervisor and 4 workers on
// one SO_REUSEPORT port) against a real redis-server, spoken to over HTTP.
#ifdef SF_EXAMPLE_fetch_service

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
#include <set>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/redis_server.h"

namespace singleflight {
namespace {

using test::ChildProcess;
using test::RedisServer;

struct HttpResponse {
  int status = 0;
  std::string body;
};

// A blocking HTTP/1.1 client, just enough for Content-Length responses; every
// read is bounded by a deadline.
class HttpClient {
 public:
  ~HttpClient() {
    if (fd_ >= 0) close(fd_);
  }
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
  bool Get(const std::string& target) {
    return Send("GET " + target + " HTTP/1.1\r\nHost: test\r\n\r\n");
  }
  // Status 0 on EOF, a malformed response or the deadline.
  HttpResponse Read(int timeout_ms = 15000) {
    HttpResponse r;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    size_t head_end;
    while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return r;
    }
    std::string head = buffer_.substr(0, head_end);
    size_t cl = head.find("Content-Length: ");
    if (head.rfind("HTTP/1.1 ", 0) != 0 || cl == std::string::npos) return r;
    size_t length = std::stoul(head.substr(cl + 16));
    while (buffer_.size() < head_end + 4 + length) {
      if (!Fill(deadline)) return r;
    }
    r.status = std::stoi(head.substr(9, 3));
    r.body = buffer_.substr(head_end + 4, length);
    buffer_.erase(0, head_end + 4 + length);
    return r;
  }

 private:
  bool Fill(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    char chunk[4096];
    ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

// The value of a JSON string field in our own flat bodies.
std::string Field(const std::string& body, const std::string& name) {
  std::string key = "\"" + name + "\":\"";
  size_t at = body.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  return body.substr(at, body.find('"', at) - at);
}

class FetchServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { SF_START_REDIS(redis_); }

  // Starts the service; returns its port, or 0.
  int Start(ChildProcess* service, int workers, int upstream_ms = 300) {
    std::string redis = redis_.host() + ":" + std::to_string(redis_.port());
    if (!service->Spawn(SF_EXAMPLE_fetch_service,
                        {"--listen", "127.0.0.1:0", "--redis", redis, "--workers",
                         std::to_string(workers), "--upstream-ms", std::to_string(upstream_ms)})) {
      return 0;
    }
    std::string line;
    if (!service->ReadLine(&line, 15000) || line.rfind("listening ", 0) != 0) return 0;
    size_t colon = line.rfind(':');
    return std::stoi(line.substr(colon + 1));
  }

  static void ExpectCleanExit(ChildProcess* service) {
    int status = service->Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  }

  long long UpstreamFetches(const std::string& url) {
    internal::Reply r = redis_.Command({"GET", "sf:fetch:upstream_fetches:" + url});
    return r.is_nil() ? 0 : std::stoll(r.str);
  }

  RedisServer redis_;
};

TEST_F(FetchServiceTest, ConcurrentRequestsOnFourWorkersFetchOnce) {
  ChildProcess service;
  int port = Start(&service, 4);
  ASSERT_GT(port, 0);
  // Many connections, so the kernel spreads them over the workers; every
  // request is sent before any answer can exist (the upstream takes 300 ms).
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < 40; ++i) {
    clients.push_back(std::make_unique<HttpClient>());
    ASSERT_TRUE(clients.back()->Connect(port));
  }
  for (auto& c : clients) ASSERT_TRUE(c->Get("/fetch?url=http%3A%2F%2Fexample.com%2Fone"));
  std::set<std::string> data, sources;
  for (auto& c : clients) {
    HttpResponse r = c->Read();
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Field(r.body, "url"), "http://example.com/one");
    data.insert(Field(r.body, "data"));
    sources.insert(Field(r.body, "source"));
  }
  EXPECT_EQ(data.size(), 1u) << "callers saw different upstream fetches";
  EXPECT_EQ(UpstreamFetches("http://example.com/one"), 1);
  EXPECT_EQ(sources.count("led"), 1u);
  service.Kill(SIGTERM);
  ExpectCleanExit(&service);
}

TEST_F(FetchServiceTest, MalformedRequestsGet400) {
  ChildProcess service;
  int port = Start(&service, 4);
  ASSERT_GT(port, 0);
  for (const std::string& bad :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET /fetch HTTP/1.1\r\nHost x\r\n\r\n"),
        std::string("GET /fetch?url=%zz HTTP/1.1\r\nHost: t\r\n\r\n"),
        std::string("GET /fetch?nourl=1 HTTP/1.1\r\nHost: t\r\n\r\n")}) {
    HttpClient client;
    ASSERT_TRUE(client.Connect(port));
    ASSERT_TRUE(client.Send(bad));
    EXPECT_EQ(client.Read().status, 400) << bad;
  }
  service.Kill(SIGTERM);
  ExpectCleanExit(&service);
}

TEST_F(FetchServiceTest, SigtermAnswersTheRequestInFlightThenExitsZero) {
  ChildProcess service;
  // One process, so /stats sees the flight; an upstream slow enough that the
  // probes below see it in flight even on a machine ten times slower.
  int port = Start(&service, 1, 5000);
  ASSERT_GT(port, 0);
  HttpClient waiting;
  ASSERT_TRUE(waiting.Connect(port));
  ASSERT_TRUE(waiting.Get("/fetch?url=slow"));
  // Wait (bounded) until the service really has the flight in progress.
  bool inflight = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!inflight && std::chrono::steady_clock::now() < deadline) {
    HttpClient probe;
    ASSERT_TRUE(probe.Connect(port));
    ASSERT_TRUE(probe.Get("/stats"));
    inflight = probe.Read().body.find("\"inflight\":1") != std::string::npos;
  }
  ASSERT_TRUE(inflight);
  service.Kill(SIGTERM);
  HttpResponse r = waiting.Read();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "url"), "slow");
  ExpectCleanExit(&service);
}

TEST_F(FetchServiceTest, StatsAndMetricsAnswer) {
  ChildProcess service;
  int port = Start(&service, 1);
  ASSERT_GT(port, 0);
  HttpClient client;
  ASSERT_TRUE(client.Connect(port));
  ASSERT_TRUE(client.Get("/fetch?url=a"));
  ASSERT_EQ(client.Read().status, 200);
  ASSERT_TRUE(client.Get("/stats"));  // same keep-alive connection
  HttpResponse stats = client.Read();
  EXPECT_EQ(stats.status, 200);
  EXPECT_NE(stats.body.find("\"leads\":1"), std::string::npos) << stats.body;
  ASSERT_TRUE(client.Get("/metrics"));
  HttpResponse metrics = client.Read();
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("# TYPE singleflight_leads_total counter"), std::string::npos);
  service.Kill(SIGTERM);
  ExpectCleanExit(&service);
}

}  // namespace
}  // namespace singleflight

#endif  // SF_EXAMPLE_fetch_service
