#include "fetch_service/server.h"

#include <unistd.h>

#include <cstdio>
#include <deque>

#include "common/net.h"
#include "common/text.h"

namespace fetch {

using singleflight::Code;
using singleflight::Done;
using singleflight::ProducerContext;
using singleflight::Result;

namespace {

// Bounds on what one client can make us hold. http_parser itself bounds the
// header block (80 KiB) and fails the request with HPE_HEADER_OVERFLOW.
constexpr size_t kMaxUrlBytes = 8192;
constexpr size_t kMaxQueuedResponses = 64;
constexpr size_t kMaxUnsentBytes = 4 << 20;

const char* Reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 414: return "URI Too Long";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

// What a failed call means to an HTTP client.
int HttpCode(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return 400;
    case Code::kTimeout: return 504;
    case Code::kProducerError:
    case Code::kTooLarge: return 502;
    default: return 503;
  }
}

std::string ErrorJson(const std::string& message) {
  return "{\"error\":" + examples::JsonString(message) + "}\n";
}

}  // namespace

// One response slot per request, filled when its answer is known; slots are
// written strictly from the front, so pipelined requests keep their order.
struct Response {
  bool ready = false;
  std::string bytes;
  singleflight::Call call;
};

struct HttpConn {
  uv_tcp_t tcp;
  FetchServer* server = nullptr;
  uint64_t id = 0;
  http_parser parser;
  std::string url;
  bool url_too_long = false;
  bool reading = false;
  bool closing = false;
  bool last_request = false;  // no more requests: close after the last write
  int writes_in_flight = 0;
  std::deque<std::shared_ptr<Response>> queue;
  char chunk[16384];
};

struct WriteRequest {
  uv_write_t req;
  std::string bytes;
  HttpConn* conn;
};

FetchServer::FetchServer(uv_loop_t* loop, ServiceConfig config)
    : loop_(loop), config_(std::move(config)) {
  singleflight::Options options;
  options.key_prefix = config_.prefix;
  options.result_ttl_ms = config_.result_ttl_ms;
  options.lock_ttl_ms = config_.lock_ttl_ms;
  options.max_key_bytes = kMaxUrlBytes;
  if (config_.redis.enabled()) {
    options.redis = config_.redis.options;
    // Blocking, with a timeout: used once per upstream fetch (not per
    // request) to count fetches fleet-wide, see CountUpstreamFetch. Without
    // it fetches are not counted (the service still works).
    std::string error;
    counter_ = examples::SyncRedis::Connect(config_.redis, 1000, &error);
    if (!counter_) std::fprintf(stderr, "fetch_service: fetch counter off: %s\n", error.c_str());
  }
  group_ = std::make_unique<singleflight::Group>(loop, options);
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = OnMessageBegin;
  settings_.on_url = OnUrl;
  settings_.on_message_complete = OnMessageComplete;
  uv_timer_init(loop_, &drain_timer_);
  drain_timer_.data = this;
}

FetchServer::~FetchServer() = default;

bool FetchServer::Listen() {
  listener_.data = this;
  int rc = examples::ListenTcp(loop_, &listener_, config_.host, config_.port, config_.reuseport,
                               OnConnection);
  listening_ = true;  // the handle is initialized either way
  if (rc != 0) {
    std::fprintf(stderr, "fetch_service: listen on %s:%d: %s\n", config_.host.c_str(), config_.port,
                 uv_strerror(rc));
    return false;
  }
  std::printf("listening %s:%d\n", config_.host.c_str(), examples::BoundPort(&listener_));
  return true;
}

void FetchServer::Stop() {
  if (stopping_) return;
  stopping_ = true;
  if (listening_) uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  listening_ = false;
  // Idle connections go now; busy ones after their last response.
  std::vector<HttpConn*> open;
  for (auto& [id, c] : connections_) open.push_back(c);
  for (HttpConn* c : open) {
    c->last_request = true;
    StopReading(c);
    if (c->queue.empty() && c->writes_in_flight == 0) CloseConnection(c);
  }
  uv_timer_start(
      &drain_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<FetchServer*>(t->data);
        std::fprintf(stderr, "fetch_service: drain timeout, dropping busy connections\n");
        while (!self->connections_.empty()) {
          self->CloseConnection(self->connections_.begin()->second);
        }
      },
      config_.drain_timeout_ms, 0);
  MaybeFinishStop();
}

// Once no connection is left, close the group and our last handle.
void FetchServer::MaybeFinishStop() {
  if (!stopping_ || stopped_ || !connections_.empty()) return;
  stopped_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  group_->Close();
}

void FetchServer::OnConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<FetchServer*>(listener->data);
  if (status < 0 || self->stopping_) return;
  auto* c = new HttpConn;
  c->server = self;
  c->id = ++self->next_id_;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { delete static_cast<HttpConn*>(h->data); });
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  self->connections_[c->id] = c;
  c->reading = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* conn = static_cast<HttpConn*>(h->data);
        *buf = uv_buf_init(conn->chunk, sizeof conn->chunk);
      },
      OnRead);
}

void FetchServer::OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
  auto* c = static_cast<HttpConn*>(stream->data);
  FetchServer* self = c->server;
  if (n < 0) {
    // The client is gone (or half-closed): nobody will read the answers.
    self->CloseConnection(c);
    return;
  }
  self->Consume(c, c->chunk, static_cast<size_t>(n));
}

void FetchServer::Consume(HttpConn* c, const char* data, size_t size) {
  size_t parsed = http_parser_execute(&c->parser, &settings_, data, size);
  if (c->closing) return;
  http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (err != HPE_OK || parsed != size || c->parser.upgrade) {
    ++bad_requests_;
    std::string why = err != HPE_OK ? http_errno_description(err) : "unsupported upgrade";
    c->last_request = true;
    StopReading(c);
    Answer(c, 400, "application/json", ErrorJson("malformed request: " + why));
    return;
  }
  if (c->queue.size() >= kMaxQueuedResponses) StopReading(c);
}

int FetchServer::OnMessageBegin(http_parser* parser) {
  auto* c = static_cast<HttpConn*>(parser->data);
  c->url.clear();
  c->url_too_long = false;
  return 0;
}

int FetchServer::OnUrl(http_parser* parser, const char* at, size_t length) {
  auto* c = static_cast<HttpConn*>(parser->data);
  if (c->url.size() + length > kMaxUrlBytes) {
    c->url_too_long = true;  // answered with 414 once the request is complete
  } else {
    c->url.append(at, length);
  }
  return 0;
}

int FetchServer::OnMessageComplete(http_parser* parser) {
  auto* c = static_cast<HttpConn*>(parser->data);
  if (c->last_request) return 0;  // e.g. pipelined after "Connection: close"
  if (!http_should_keep_alive(parser)) c->last_request = true;
  c->server->Route(c);
  return 0;
}

void FetchServer::Route(HttpConn* c) {
  ++http_requests_;
  if (c->url_too_long) {
    Answer(c, 414, "application/json", ErrorJson("request target too long"));
    return;
  }
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(c->url.data(), c->url.size(), 0, &u) != 0 ||
      !(u.field_set & (1 << UF_PATH))) {
    ++bad_requests_;
    Answer(c, 400, "application/json", ErrorJson("malformed request target"));
    return;
  }
  std::string_view target(c->url);
  std::string_view path = target.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  std::string_view query;
  if (u.field_set & (1 << UF_QUERY)) {
    query = target.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  }
  if (c->parser.method != HTTP_GET) {
    Answer(c, 405, "application/json", ErrorJson("only GET is supported"));
  } else if (path == "/fetch") {
    std::string url;
    if (!examples::QueryParam(query, "url", &url) || url.empty()) {
      ++bad_requests_;
      Answer(c, 400, "application/json", ErrorJson("missing or malformed url parameter"));
    } else {
      HandleFetch(c, url);
    }
  } else if (path == "/stats") {
    Answer(c, 200, "application/json", StatsJson());
  } else if (path == "/metrics") {
    Answer(c, 200, "text/plain; version=0.0.4", Metrics());
  } else {
    Answer(c, 404, "application/json", ErrorJson("no such path; try /fetch?url=..."));
  }
}

void FetchServer::HandleFetch(HttpConn* c, const std::string& url) {
  auto slot = Enqueue(c);
  uint64_t id = c->id;
  std::weak_ptr<Response> weak = slot;
  slot->call = group_->Do(
      url, [this](const ProducerContext& ctx, Done done) { Upstream(ctx.key, std::move(done)); },
      [this, id, weak, url](const Result& r) {
        auto found = connections_.find(id);
        auto response = weak.lock();
        if (found == connections_.end() || !response) return;  // the client left
        if (!r.ok()) {
          Fill(found->second, response, HttpCode(r.status.code()), "application/json",
               ErrorJson(r.status.ToString()));
          return;
        }
        Fill(found->second, response, 200, "application/json",
             "{\"url\":" + examples::JsonString(url) +
                 ",\"data\":" + examples::JsonString(r.value()) +
                 ",\"source\":" + examples::JsonString(singleflight::SourceName(r.source)) + "}\n");
      });
  if (!slot->call.ok()) {
    Fill(c, slot, HttpCode(slot->call.status().code()), "application/json",
         ErrorJson(slot->call.status().ToString()));
  }
}

// The simulated upstream: slow, and it says who fetched it and when, so
// identical bodies prove that callers shared one fetch.
void FetchServer::Upstream(std::string_view url_view, Done done) {
  std::string url(url_view);
  ++upstream_fetches_;
  CountUpstreamFetch(url);
  struct Work {
    uv_timer_t timer;
    Done done;
    std::string data;
  };
  auto* w = new Work{{},
                     std::move(done),
                     "content of " + url + " (fetched by pid " + std::to_string(getpid()) +
                         ", fetch #" + std::to_string(upstream_fetches_) + ")"};
  uv_timer_init(loop_, &w->timer);
  w->timer.data = w;
  uv_timer_start(
      &w->timer,
      [](uv_timer_t* t) {
        auto* work = static_cast<Work*>(t->data);
        work->done(std::move(work->data));
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
      },
      config_.upstream_ms, 0);
}

// "<prefix>upstream_fetches:<url>" in Redis counts fetches across every
// worker and instance, so a user (or test) can check the fleet fetched a URL
// once: `redis-cli GET 'sf:fetch:upstream_fetches:<url>'`, and
// "<prefix>upstream_leader:<url>" holds the pid of the process that started
// the latest fetch (the demo kills that worker to show a takeover). Two
// blocking round trips per fetch are the price of a simple example; a
// production service would use its metrics pipeline instead.
void FetchServer::CountUpstreamFetch(const std::string& url) {
  // Once broken, the connection answers at once with its error: no I/O.
  if (!counter_) return;
  counter_->Command({"INCR", config_.prefix + "upstream_fetches:" + url});
  counter_->Command({"SET", config_.prefix + "upstream_leader:" + url, std::to_string(getpid())});
}

namespace {

struct Counter {
  const char* name;
  const char* help;
  uint64_t value;
  bool gauge;
};

std::vector<Counter> Counters(const singleflight::Stats& s, uint64_t upstream, uint64_t requests,
                              uint64_t bad) {
  return {
      {"http_requests", "HTTP requests answered or in progress", requests, false},
      {"http_bad_requests", "requests answered 400", bad, false},
      {"upstream_fetches", "simulated upstream fetches run by this process", upstream, false},
      {"calls", "Do calls accepted", s.calls, false},
      {"rejected", "Do calls refused synchronously", s.rejected, false},
      {"l1_hits", "answered from the in-process cache", s.l1_hits, false},
      {"joins", "joined a flight already running in this process", s.joins, false},
      {"redis_hits", "flights answered by a cached Redis result", s.redis_hits, false},
      {"leads", "flights where this process ran the producer", s.leads, false},
      {"pubsub_wakes", "flights finished by a pub/sub message", s.pubsub_wakes, false},
      {"fallback_checks", "re-checks by a follower's fallback timer", s.fallback_checks, false},
      {"fallback_hits", "re-checks that found the result", s.fallback_hits, false},
      {"takeovers", "followers that became leader after the lock lapsed", s.takeovers, false},
      {"timeouts", "callers whose deadline passed", s.timeouts, false},
      {"cancels", "callers that cancelled", s.cancels, false},
      {"producer_errors", "flights that ended with a producer error", s.producer_errors, false},
      {"producer_timeouts", "producers that never called done in time", s.producer_timeouts, false},
      {"too_large", "values refused for size", s.too_large, false},
      {"malformed_dropped", "wire messages dropped as malformed", s.malformed_dropped, false},
      {"reconnects", "Redis reconnects after the first connect", s.reconnects, false},
      {"degraded_calls", "flights run local-only because Redis was down", s.degraded_calls, false},
      {"redis_errors", "Redis commands that failed", s.redis_errors, false},
      {"invalidations", "L1 invalidations received from other processes", s.invalidations, false},
      {"inflight", "flights currently running in this process", s.inflight, true},
  };
}

}  // namespace

std::string FetchServer::StatsJson() const {
  std::string out = "{\"pid\":" + std::to_string(getpid());
  for (auto& c : Counters(group_->stats(), upstream_fetches_, http_requests_, bad_requests_)) {
    out += ",\"" + std::string(c.name) + "\":" + std::to_string(c.value);
  }
  return out + "}\n";
}

std::string FetchServer::Metrics() const {
  std::string out;
  std::string labels = "{pid=\"" + std::to_string(getpid()) + "\"}";
  for (auto& c : Counters(group_->stats(), upstream_fetches_, http_requests_, bad_requests_)) {
    std::string name = std::string("singleflight_") + c.name + (c.gauge ? "" : "_total");
    out += "# HELP " + name + " " + c.help + ".\n";
    out += "# TYPE " + name + (c.gauge ? " gauge\n" : " counter\n");
    out += name + labels + " " + std::to_string(c.value) + "\n";
  }
  return out;
}

std::shared_ptr<Response> FetchServer::Enqueue(HttpConn* c) {
  auto r = std::make_shared<Response>();
  c->queue.push_back(r);
  return r;
}

void FetchServer::Fill(HttpConn* c, const std::shared_ptr<Response>& r, int code,
                       const std::string& content_type, const std::string& body) {
  // Close after this one if it is the last the client asked for, or we stop.
  bool close_after = c->last_request && c->queue.back() == r;
  r->bytes = "HTTP/1.1 " + std::to_string(code) + " " + Reason(code) +
             "\r\nContent-Type: " + content_type +
             "\r\nContent-Length: " + std::to_string(body.size()) +
             (close_after || stopping_ ? "\r\nConnection: close" : "") + "\r\n\r\n" + body;
  r->ready = true;
  Flush(c);
}

void FetchServer::Answer(HttpConn* c, int code, const std::string& content_type,
                         const std::string& body) {
  Fill(c, Enqueue(c), code, content_type, body);
}

void FetchServer::Flush(HttpConn* c) {
  std::string out;
  while (!c->queue.empty() && c->queue.front()->ready) {
    out += c->queue.front()->bytes;
    c->queue.pop_front();
  }
  if (c->closing || out.empty()) return;
  if (c->tcp.write_queue_size > kMaxUnsentBytes) {  // the client does not read
    CloseConnection(c);
    return;
  }
  auto* w = new WriteRequest{{}, std::move(out), c};
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
                    [](uv_write_t* req, int status) {
                      auto* write = reinterpret_cast<WriteRequest*>(req);
                      HttpConn* conn = write->conn;
                      delete write;
                      --conn->writes_in_flight;
                      if (status == 0) conn->server->OnWritten(conn);
                    });
  if (rc != 0) {
    delete w;  // its callback will not run
    CloseConnection(c);
    return;
  }
  ++c->writes_in_flight;
  if (!c->last_request && !c->reading && c->queue.size() < kMaxQueuedResponses / 2) {
    c->reading = true;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* conn = static_cast<HttpConn*>(h->data);
          *buf = uv_buf_init(conn->chunk, sizeof conn->chunk);
        },
        OnRead);
  }
}

// Everything queued is on the wire: a connection with no more requests to
// answer is closed now (its response said "Connection: close").
void FetchServer::OnWritten(HttpConn* c) {
  if (c->closing || !c->last_request) return;
  if (c->queue.empty() && c->writes_in_flight == 0) CloseConnection(c);
}

void FetchServer::StopReading(HttpConn* c) {
  if (!c->reading) return;
  c->reading = false;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
}

// Cancels the connection's waits (the flights go on for other callers) and
// frees it from the close callback; writes still pending are cancelled by
// uv_close and their callbacks run before it.
void FetchServer::CloseConnection(HttpConn* c) {
  if (c->closing) return;
  c->closing = true;
  connections_.erase(c->id);
  for (auto& r : c->queue) r->call.Cancel();
  c->queue.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
           [](uv_handle_t* h) { delete static_cast<HttpConn*>(h->data); });
  MaybeFinishStop();
}

}  // namespace fetch
