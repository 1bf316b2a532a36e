// FetchServer: one worker of fetch_service. HTTP/1.1 on a libuv TCP listener
// (parsed by the http_parser library), answering
//
//   GET /fetch?url=U   {"url":U,"data":...,"source":...} via singleflight::Group
//   GET /stats         the group's counters as JSON
//   GET /metrics       the same counters in Prometheus text format
//
// Malformed requests get 400; keep-alive and pipelining are supported and
// responses keep request order. Stop() is graceful: no new connections,
// in-flight requests are answered, then the group is closed.
#pragma once

#include <http_parser.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/redis_target.h"
#include "common/sync_redis.h"
#include "singleflight/group.h"

namespace fetch {

struct ServiceConfig {
  std::string host = "127.0.0.1";
  int port = 8080;
  bool reuseport = false;
  examples::RedisTarget redis;  // none: local-only
  std::string prefix = "sf:fetch:";
  uint32_t upstream_ms = 200;  // how long the simulated upstream takes
  uint32_t result_ttl_ms = 10000;
  // The leader's lease on a URL (Options::lock_ttl_ms): how soon after a
  // leader dies another process takes its flight over.
  uint32_t lock_ttl_ms = 10000;
  // After Stop(), connections still busy past this are dropped.
  uint32_t drain_timeout_ms = 10000;
};

struct HttpConn;
struct Response;

class FetchServer {
 public:
  FetchServer(uv_loop_t* loop, ServiceConfig config);
  ~FetchServer();
  FetchServer(const FetchServer&) = delete;
  FetchServer& operator=(const FetchServer&) = delete;

  // Binds and listens; prints "listening HOST:PORT" on success.
  bool Listen();
  // Graceful stop. Safe to call twice. The loop runs out of handles once
  // every in-flight request is answered (or drain_timeout_ms passed).
  void Stop();

 private:
  static void OnConnection(uv_stream_t* listener, int status);
  static void OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf);
  static int OnMessageBegin(http_parser* parser);
  static int OnUrl(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);

  void Consume(HttpConn* c, const char* data, size_t size);
  void Route(HttpConn* c);
  void HandleFetch(HttpConn* c, const std::string& url);
  void Upstream(std::string_view url, singleflight::Done done);
  void CountUpstreamFetch(const std::string& url);
  std::string StatsJson() const;
  std::string Metrics() const;
  // Queues a response slot; Fill() completes it; Flush() writes ready ones.
  std::shared_ptr<Response> Enqueue(HttpConn* c);
  void Fill(HttpConn* c, const std::shared_ptr<Response>& r, int code,
            const std::string& content_type, const std::string& body);
  void Answer(HttpConn* c, int code, const std::string& content_type, const std::string& body);
  void Flush(HttpConn* c);
  void OnWritten(HttpConn* c);
  void StopReading(HttpConn* c);
  void CloseConnection(HttpConn* c);
  void MaybeFinishStop();

  uv_loop_t* loop_;
  ServiceConfig config_;
  std::unique_ptr<singleflight::Group> group_;
  std::unique_ptr<examples::SyncRedis> counter_;  // blocking, for the upstream fetch counter
  http_parser_settings settings_;
  uv_tcp_t listener_;
  uv_timer_t drain_timer_;
  bool listening_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  uint64_t next_id_ = 0;
  uint64_t upstream_fetches_ = 0;  // in this process
  uint64_t http_requests_ = 0;
  uint64_t bad_requests_ = 0;
  std::unordered_map<uint64_t, HttpConn*> connections_;  // open, not yet closing
};

}  // namespace fetch
