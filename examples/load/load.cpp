// load: a libuv HTTP load generator for fetch_service.
//
//   load --target HOST:PORT [--connections M=50] [--requests R=1000] [--urls K=5]
//        [--url-prefix http://upstream.example/item/] [--print-body 1]
//
// M keep-alive connections share R requests for GET /fetch?url=<prefix><i>,
// i cycling over K URLs, one request in flight per connection. Prints the
// status codes, how the answers were served (the "source" of each body),
// latency p50/p99/max and throughput; with --print-body 1, also each response
// body on a line "body <body>" (how scripts/demo.sh reads a cached value
// without curl). Exits 0 when every request got 200.
#include <http_parser.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/text.h"

namespace {

struct Config {
  std::string host = "127.0.0.1";
  int port = 8080;
  int connections = 50;
  int requests = 1000;
  int urls = 5;
  std::string url_prefix = "http://upstream.example/item/";
  bool print_body = false;
};

class Load;

struct Client {
  Load* load;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  http_parser parser;
  std::string request;
  std::string body;
  uint64_t sent_at = 0;
  char chunk[16384];
};

class Load {
 public:
  Load(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {
    http_parser_settings_init(&settings_);
    settings_.on_body = [](http_parser* p, const char* at, size_t n) {
      auto* c = static_cast<Client*>(p->data);
      if (c->body.size() < 65536) c->body.append(at, n);
      return 0;
    };
    settings_.on_message_complete = [](http_parser* p) {
      auto* c = static_cast<Client*>(p->data);
      c->load->OnResponse(c);
      return 0;
    };
  }

  bool Start() {
    sockaddr_in addr;
    if (uv_ip4_addr(config_.host.c_str(), config_.port, &addr) != 0) return false;
    started_ = uv_hrtime();
    for (int i = 0; i < config_.connections && next_ < config_.requests; ++i) {
      auto* c = new Client;
      c->load = this;
      uv_tcp_init(loop_, &c->tcp);
      c->tcp.data = c->connect.data = c->write.data = c;
      http_parser_init(&c->parser, HTTP_RESPONSE);
      c->parser.data = c;
      ++open_;
      uv_tcp_connect(&c->connect, &c->tcp, reinterpret_cast<sockaddr*>(&addr),
                     [](uv_connect_t* req, int status) {
                       auto* client = static_cast<Client*>(req->data);
                       if (status != 0) {
                         client->load->Error(client, uv_strerror(status));
                         return;
                       }
                       client->load->Read(client);
                       client->load->SendNext(client);
                     });
    }
    return true;
  }

  int Report() const;

 private:
  void Read(Client* c) {
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* client = static_cast<Client*>(h->data);
          *buf = uv_buf_init(client->chunk, sizeof client->chunk);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* client = static_cast<Client*>(s->data);
          Load* self = client->load;
          if (n < 0) {
            self->Error(client, n == UV_EOF ? "server closed the connection" : uv_strerror(n));
            return;
          }
          size_t size = static_cast<size_t>(n);
          if (http_parser_execute(&client->parser, &self->settings_, client->chunk, size) != size) {
            self->Error(client, http_errno_description(HTTP_PARSER_ERRNO(&client->parser)));
          }
        });
  }

  void SendNext(Client* c) {
    if (next_ >= config_.requests) {
      Close(c);
      return;
    }
    int index = next_++ % config_.urls;
    std::string url = config_.url_prefix + std::to_string(index);
    c->request = "GET /fetch?url=" + examples::UrlEncode(url) +
                 " HTTP/1.1\r\nHost: " + config_.host + "\r\n\r\n";
    c->body.clear();
    c->sent_at = uv_hrtime();
    uv_buf_t buf = uv_buf_init(c->request.data(), static_cast<unsigned>(c->request.size()));
    uv_write(&c->write, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1, [](uv_write_t*, int) {});
  }

  void OnResponse(Client* c) {
    latencies_us_.push_back((uv_hrtime() - c->sent_at) / 1000);
    ++statuses_[c->parser.status_code];
    ++sources_[SourceOf(c->body)];
    if (config_.print_body) std::printf("body %s\n", c->body.c_str());
    SendNext(c);
  }

  // The "source" field of a fetch_service body; a tiny search is enough here.
  static std::string SourceOf(const std::string& body) {
    const std::string field = "\"source\":\"";
    size_t at = body.find(field);
    if (at == std::string::npos) return "none";
    at += field.size();
    return body.substr(at, body.find('"', at) - at);
  }

  void Error(Client* c, const std::string& why) {
    ++errors_[why];
    Close(c);
  }

  void Close(Client* c) {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) {
      auto* client = static_cast<Client*>(h->data);
      Load* self = client->load;
      delete client;
      if (--self->open_ == 0) self->finished_ = uv_hrtime();
    });
  }

  uv_loop_t* loop_;
  Config config_;
  http_parser_settings settings_;
  int next_ = 0;  // the next request to send
  int open_ = 0;
  uint64_t started_ = 0, finished_ = 0;
  std::vector<uint64_t> latencies_us_;
  std::map<unsigned, int> statuses_;
  std::map<std::string, int> sources_;
  std::map<std::string, int> errors_;
};

double Percentile(const std::vector<uint64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[rank]) / 1000.0;
}

int Load::Report() const {
  std::vector<uint64_t> sorted = latencies_us_;
  std::sort(sorted.begin(), sorted.end());
  double seconds = static_cast<double>(finished_ - started_) / 1e9;
  int ok = statuses_.count(200) ? statuses_.at(200) : 0;
  std::printf("requests    %d sent, %zu answered, %d ok, in %.3f s (%.0f req/s)\n", next_,
              sorted.size(), ok, seconds, seconds > 0 ? sorted.size() / seconds : 0.0);
  std::printf("latency     p50 %.1f ms  p99 %.1f ms  max %.1f ms\n", Percentile(sorted, 0.5),
              Percentile(sorted, 0.99), Percentile(sorted, 1.0));
  std::printf("status     ");
  for (auto& [code, n] : statuses_) std::printf(" %u=%d", code, n);
  std::printf("\nserved     ");
  for (auto& [source, n] : sources_) std::printf(" %s=%d", source.c_str(), n);
  std::printf("\n");
  for (auto& [why, n] : errors_) std::printf("error       %s (%d connections)\n", why.c_str(), n);
  bool all_ok = ok == config_.requests && errors_.empty();
  return all_ok ? 0 : 1;
}

bool Parse(int argc, char** argv, Config* c) {
  bool have_target = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    long n = 0;
    if (flag == "--target") {
      have_target = examples::ParseHostPort(value, &c->host, &c->port);
      if (!have_target) return false;
    } else if (flag == "--connections" && examples::ParseInt(value, 1, 100000, &n)) {
      c->connections = static_cast<int>(n);
    } else if (flag == "--requests" && examples::ParseInt(value, 1, 100000000, &n)) {
      c->requests = static_cast<int>(n);
    } else if (flag == "--urls" && examples::ParseInt(value, 1, 1000000, &n)) {
      c->urls = static_cast<int>(n);
    } else if (flag == "--url-prefix") {
      c->url_prefix = value;
    } else if (flag == "--print-body" && examples::ParseInt(value, 0, 1, &n)) {
      c->print_body = n == 1;
    } else {
      return false;
    }
  }
  return have_target && argc % 2 == 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  if (!Parse(argc, argv, &config)) {
    std::fprintf(stderr,
                 "usage: load --target HOST:PORT [--connections 50] [--requests 1000] [--urls 5]\n"
                 "            [--url-prefix http://upstream.example/item/] [--print-body 1]\n");
    return 2;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  Load load(&loop, config);
  if (!load.Start()) {
    std::fprintf(stderr, "load: bad target address %s\n", config.host.c_str());
    return 2;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  int exit_code = load.Report();
  return uv_loop_close(&loop) == 0 ? exit_code : 3;
}
