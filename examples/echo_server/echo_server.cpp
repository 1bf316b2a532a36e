// echo_server: a line protocol over TCP in front of a deliberately slow
// backend, with singleflight::Group between them.
//
//   echo_server [--listen HOST:PORT=127.0.0.1:7000] [--redis HOST:PORT | --redis-url URL]
//               [--delay-ms 200] [--max-line 1024] [--prefix sf:echo:] [--reuseport]
//
// Each request line is a key. The reply line is "<value> <source>", where
// source says how the value was served: led, joined, pubsub, redis, l1
// or fallback (singleflight::SourceName). Errors reply "ERR <code>: <message>". Replies
// come back in request order, also when requests are pipelined.
//
// Several instances sharing one Redis (and one --prefix) run the backend once
// per key between them. With --reuseport they can also share one port.
//
// On start it prints "listening HOST:PORT" (useful with port 0); SIGINT or
// SIGTERM stops it gracefully and it exits 0.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/net.h"
#include "common/redis_target.h"
#include "singleflight/group.h"

namespace {

using singleflight::Done;
using singleflight::Group;
using singleflight::ProducerContext;
using singleflight::Result;

struct Config {
  std::string host = "127.0.0.1";
  int port = 7000;
  examples::RedisTarget redis;  // none: local-only
  uint32_t delay_ms = 200;
  size_t max_line = 1024;
  std::string prefix = "sf:echo:";
  bool reuseport = false;
};

// Past these a connection stops reading (pipelining) or is dropped (a client
// that never reads its replies), so one client cannot take all the memory.
constexpr size_t kMaxPendingReplies = 128;
constexpr size_t kMaxUnsentBytes = 1 << 20;

class Server;

// One reply slot per request, filled when its callback runs; slots are sent
// strictly from the front so replies keep the order of the requests.
struct Slot {
  bool ready = false;
  std::string line;
  singleflight::Call call;
};

struct Connection {
  uv_tcp_t tcp;
  Server* server = nullptr;
  uint64_t id = 0;
  std::string partial;      // bytes of a line whose '\n' has not arrived yet
  bool discarding = false;  // inside an over-long line: drop bytes until '\n'
  bool reading = false;
  bool closing = false;
  std::deque<std::shared_ptr<Slot>> slots;
  char chunk[16384];
};

struct WriteRequest {
  uv_write_t req;
  std::string data;
};

class Server {
 public:
  Server(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {
    singleflight::Options options;
    options.key_prefix = config_.prefix;
    options.max_key_bytes = config_.max_line;
    if (config_.redis.enabled()) options.redis = config_.redis.options;
    group_ = std::make_unique<Group>(loop, options);
  }

  bool Listen() {
    listener_.data = this;
    int rc = examples::ListenTcp(loop_, &listener_, config_.host, config_.port, config_.reuseport,
                                 OnConnection);
    if (rc != 0) {
      std::fprintf(stderr, "echo_server: listen on %s:%d: %s\n", config_.host.c_str(), config_.port,
                   uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
      listening_ = false;
      return false;
    }
    listening_ = true;
    std::printf("listening %s:%d\n", config_.host.c_str(), examples::BoundPort(&listener_));
    return true;
  }

  // Stop accepting, drop every connection (their pending calls are
  // cancelled), then close the group: the loop then runs out of handles.
  void Stop() {
    if (stopping_) return;
    stopping_ = true;
    if (listening_) uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
    while (!connections_.empty()) CloseConnection(connections_.begin()->second);
    group_->Close();
  }

 private:
  static void OnConnection(uv_stream_t* listener, int status) {
    auto* self = static_cast<Server*>(listener->data);
    if (status < 0 || self->stopping_) return;
    auto* c = new Connection;
    c->server = self;
    c->id = ++self->next_id_;
    uv_tcp_init(self->loop_, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
               [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
      return;
    }
    self->connections_[c->id] = c;
    self->StartReading(c);
  }

  void StartReading(Connection* c) {
    if (c->reading || c->closing) return;
    c->reading = true;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* conn = static_cast<Connection*>(h->data);
          *buf = uv_buf_init(conn->chunk, sizeof conn->chunk);
        },
        OnRead);
  }

  void StopReading(Connection* c) {
    if (!c->reading) return;
    c->reading = false;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
  }

  static void OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
    auto* c = static_cast<Connection*>(stream->data);
    Server* self = c->server;
    if (n < 0) {  // EOF or error: the client is gone, mid-request or not
      self->CloseConnection(c);
      return;
    }
    self->Consume(c, std::string_view(c->chunk, static_cast<size_t>(n)));
  }

  // Splits the bytes into lines, remembering a partial line for the next
  // read. A line longer than max_line gets an error reply; the rest of it is
  // skipped without being stored, and the connection goes on.
  void Consume(Connection* c, std::string_view data) {
    while (!data.empty() && !c->closing) {
      size_t newline = data.find('\n');
      std::string_view piece = data.substr(0, newline);
      if (c->discarding) {
        // Nothing to keep: just look for the end of the long line.
      } else if (c->partial.size() + piece.size() > config_.max_line + 1) {
        // +1 tolerates the '\r' of a "\r\n" line ending.
        c->partial.clear();
        c->discarding = true;
        Reply(c, "ERR invalid_argument: line longer than " + std::to_string(config_.max_line) +
                     " bytes");
      } else {
        c->partial.append(piece);
      }
      if (newline == std::string_view::npos) return;
      data.remove_prefix(newline + 1);
      if (c->discarding) {
        c->discarding = false;
        continue;
      }
      std::string line = std::move(c->partial);
      c->partial.clear();
      if (!line.empty() && line.back() == '\r') line.pop_back();
      Request(c, line);
    }
  }

  void Request(Connection* c, const std::string& key) {
    if (key.size() > config_.max_line) {
      Reply(c, "ERR invalid_argument: line longer than " + std::to_string(config_.max_line) +
                   " bytes");
      return;
    }
    auto slot = std::make_shared<Slot>();
    c->slots.push_back(slot);
    if (c->slots.size() >= kMaxPendingReplies) StopReading(c);
    uint64_t id = c->id;
    std::weak_ptr<Slot> weak = slot;
    slot->call = group_->Do(
        key, [this](const ProducerContext& ctx, Done done) { Backend(ctx.key, std::move(done)); },
        [this, id, weak](const Result& r) { OnResult(id, weak, r); });
    if (!slot->call.ok()) Fill(c, slot, "ERR " + slot->call.status().ToString());
  }

  // The slow backend: the value is ready after delay_ms.
  void Backend(std::string_view key, Done done) {
    struct Work {
      uv_timer_t timer;
      Done done;
      std::string value;
    };
    auto* w = new Work{
        {}, std::move(done), "echo:" + std::string(key) + "@pid" + std::to_string(getpid())};
    uv_timer_init(loop_, &w->timer);
    w->timer.data = w;
    uv_timer_start(
        &w->timer,
        [](uv_timer_t* t) {
          auto* work = static_cast<Work*>(t->data);
          work->done(std::move(work->value));
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete static_cast<Work*>(h->data); });
        },
        config_.delay_ms, 0);
  }

  // The connection may be gone by now (the client hung up mid-request):
  // then the answer is simply dropped.
  void OnResult(uint64_t id, const std::weak_ptr<Slot>& weak, const Result& r) {
    auto found = connections_.find(id);
    auto slot = weak.lock();
    if (found == connections_.end() || !slot) return;
    std::string line =
        r.ok() ? std::string(r.value()) + " " + std::string(singleflight::SourceName(r.source))
               : "ERR " + r.status.ToString();
    Fill(found->second, slot, std::move(line));
  }

  void Fill(Connection* c, const std::shared_ptr<Slot>& slot, std::string line) {
    slot->ready = true;
    slot->line = std::move(line);
    Flush(c);
  }

  // An error reply for a request that never reached the group.
  void Reply(Connection* c, std::string line) {
    auto slot = std::make_shared<Slot>();
    c->slots.push_back(slot);
    Fill(c, slot, std::move(line));
  }

  void Flush(Connection* c) {
    std::string out;
    while (!c->slots.empty() && c->slots.front()->ready) {
      out += c->slots.front()->line;
      out += '\n';
      c->slots.pop_front();
    }
    if (out.empty() || c->closing) return;
    if (c->tcp.write_queue_size > kMaxUnsentBytes) {  // it does not read its replies
      CloseConnection(c);
      return;
    }
    auto* w = new WriteRequest{{}, std::move(out)};
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
                      [](uv_write_t* req, int) { delete reinterpret_cast<WriteRequest*>(req); });
    if (rc != 0) {
      delete w;  // the callback will not run
      CloseConnection(c);
      return;
    }
    if (c->slots.size() < kMaxPendingReplies / 2) StartReading(c);
  }

  // Cancels the connection's waits (the flights go on for other callers),
  // forgets it, and frees it from the close callback. Pending writes are
  // cancelled by uv_close; their callbacks still run and free themselves.
  void CloseConnection(Connection* c) {
    if (c->closing) return;
    c->closing = true;
    connections_.erase(c->id);
    for (auto& slot : c->slots) slot->call.Cancel();
    c->slots.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
  }

  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<Group> group_;
  uv_tcp_t listener_;
  bool listening_ = false;
  bool stopping_ = false;
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, Connection*> connections_;  // open, not yet closing
};

bool Parse(int argc, char** argv, Config* c, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--reuseport") {
      c->reuseport = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    std::string value = argv[++i];
    long n = 0;
    if (flag == "--listen") {
      if (!examples::ParseHostPort(value, &c->host, &c->port, true)) return false;
    } else if (flag == "--redis" || flag == "--redis-url") {
      if (!examples::ParseRedisTarget(value, &c->redis, error)) return false;
    } else if (flag == "--delay-ms" && examples::ParseInt(value, 0, 600000, &n)) {
      c->delay_ms = static_cast<uint32_t>(n);
    } else if (flag == "--max-line" && examples::ParseInt(value, 1, 1 << 20, &n)) {
      c->max_line = static_cast<size_t>(n);
    } else if (flag == "--prefix") {
      c->prefix = value;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  std::string error;
  if (!Parse(argc, argv, &config, &error)) {
    if (!error.empty()) std::fprintf(stderr, "echo_server: %s\n", error.c_str());
    std::fprintf(stderr,
                 "usage: echo_server [--listen HOST:PORT=127.0.0.1:7000]\n"
                 "                   [--redis HOST:PORT | --redis-url URL]\n"
                 "                   [--delay-ms 200] [--max-line 1024] [--prefix sf:echo:]\n"
                 "                   [--reuseport]\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // libuv writes to sockets with write(): a client that hung up must not be
  // able to kill the server with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = 0;
  {
    Server server(&loop, config);
    examples::StopSignals signals(&loop, [&server](int) { server.Stop(); });
    if (!server.Listen()) {
      exit_code = 1;
      signals.Close();
      server.Stop();
    }
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // close callbacks queued by destructors
  if (uv_loop_close(&loop) != 0) {
    std::fprintf(stderr, "echo_server: handles left open on the loop\n");
    return 3;
  }
  return exit_code;
}
