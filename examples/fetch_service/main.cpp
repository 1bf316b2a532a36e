// fetch_service: a small HTTP/1.1 service whose upstream fetches go through
// singleflight::Group, so concurrent requests for one URL, on any worker of
// any instance sharing the Redis server, cause one upstream fetch.
//
//   fetch_service [--listen HOST:PORT=127.0.0.1:8080] [--redis HOST:PORT | --redis-url URL]
//                 [--workers N=1] [--upstream-ms 200] [--result-ttl-ms 10000]
//                 [--lock-ttl-ms 10000] [--prefix sf:fetch:] [--keep-going]
//
// With --workers N > 1 this process is a supervisor: it spawns N copies of
// itself that listen on one port with SO_REUSEPORT (the kernel spreads
// connections between them), prints "listening HOST:PORT" once all of them
// do, forwards SIGINT/SIGTERM to them, and exits 0 when all exited 0.
// A worker that dies on its own stops the whole service, unless --keep-going:
// then the others keep serving (nothing is respawned) and a worker's death
// before the stop is logged, not counted as a failure.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/spawn.h"
#include "fetch_service/server.h"

namespace {

struct Flags {
  fetch::ServiceConfig service;
  int workers = 1;
  bool is_worker = false;   // spawned by a supervisor
  bool keep_going = false;  // the supervisor tolerates a worker dying
};

bool Parse(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--worker") {
      f->is_worker = true;
      f->service.reuseport = true;
      continue;
    }
    if (flag == "--keep-going") {
      f->keep_going = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    std::string value = argv[++i];
    long n = 0;
    fetch::ServiceConfig& s = f->service;
    if (flag == "--listen") {
      if (!examples::ParseHostPort(value, &s.host, &s.port, true)) return false;
    } else if (flag == "--redis" || flag == "--redis-url") {
      std::string error;
      if (!examples::ParseRedisTarget(value, &s.redis, &error)) {
        std::fprintf(stderr, "fetch_service: %s\n", error.c_str());
        return false;
      }
    } else if (flag == "--workers" && examples::ParseInt(value, 1, 64, &n)) {
      f->workers = static_cast<int>(n);
    } else if (flag == "--upstream-ms" && examples::ParseInt(value, 0, 600000, &n)) {
      s.upstream_ms = static_cast<uint32_t>(n);
    } else if (flag == "--result-ttl-ms" && examples::ParseInt(value, 1, 86400000, &n)) {
      s.result_ttl_ms = static_cast<uint32_t>(n);
    } else if (flag == "--lock-ttl-ms" && examples::ParseInt(value, 100, 86400000, &n)) {
      s.lock_ttl_ms = static_cast<uint32_t>(n);
    } else if (flag == "--prefix") {
      s.prefix = value;
    } else {
      return false;
    }
  }
  return true;
}

// Runs the loop until nothing is left on it; 3 if a handle was leaked.
int Finish(uv_loop_t* loop, int exit_code) {
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) {
    std::fprintf(stderr, "fetch_service: handles left open on the loop\n");
    return 3;
  }
  return exit_code;
}

int RunServer(const fetch::ServiceConfig& config) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = 0;
  {
    fetch::FetchServer server(&loop, config);
    examples::StopSignals signals(&loop, [&server](int) { server.Stop(); });
    if (!server.Listen()) {
      exit_code = 1;
      signals.Close();
      server.Stop();
    }
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  return Finish(&loop, exit_code);
}

// The supervisor of --workers N: one child process per worker.
class Supervisor {
 public:
  Supervisor(uv_loop_t* loop, const Flags& flags, std::string exe)
      : loop_(loop), flags_(flags), exe_(std::move(exe)) {}

  // Holds the port for the workers: bound with SO_REUSEPORT but never
  // listening, so it takes no connections, yet port 0 becomes a real port
  // that every worker can then bind too.
  bool ReservePort() {
    int rc = examples::BindTcp(loop_, &reserve_, flags_.service.host, flags_.service.port, true);
    port_ = rc == 0 ? examples::BoundPort(&reserve_) : -1;
    if (port_ <= 0) {
      std::fprintf(stderr, "fetch_service: cannot bind %s:%d: %s\n", flags_.service.host.c_str(),
                   flags_.service.port, uv_strerror(rc));
      return false;
    }
    return true;
  }

  void Start() {
    for (int i = 0; i < flags_.workers; ++i) Spawn();
  }

  void Stop(int signum) {
    stopping_ = true;
    for (auto& w : workers_) {
      if (!w->exited) uv_process_kill(&w->process, signum);
    }
  }

  // Nothing more to watch: close what the supervisor itself holds.
  void Close() { uv_close(reinterpret_cast<uv_handle_t*>(&reserve_), nullptr); }

  int exit_code() const { return failed_ ? 1 : 0; }

 private:
  struct Worker {
    Supervisor* owner;
    uv_process_t process;
    uv_pipe_t out;
    std::string buffer;
    char chunk[1024];
    bool ready = false;
    bool exited = false;
  };

  void Spawn() {
    auto w = std::make_unique<Worker>();
    w->owner = this;
    uv_pipe_init(loop_, &w->out, 0);
    w->out.data = w->process.data = w.get();
    std::vector<std::string> args = {exe_,
                                     "--worker",
                                     "--listen",
                                     flags_.service.host + ":" + std::to_string(port_),
                                     "--upstream-ms",
                                     std::to_string(flags_.service.upstream_ms),
                                     "--result-ttl-ms",
                                     std::to_string(flags_.service.result_ttl_ms),
                                     "--lock-ttl-ms",
                                     std::to_string(flags_.service.lock_ttl_ms),
                                     "--prefix",
                                     flags_.service.prefix};
    if (flags_.service.redis.enabled()) {
      args.push_back("--redis-url");
      args.push_back(flags_.service.redis.url);
    }
    int rc =
        examples::SpawnPiped(loop_, &w->process, exe_, std::move(args), nullptr, &w->out, OnExit);
    if (rc != 0) {
      std::fprintf(stderr, "fetch_service: cannot start a worker: %s\n", uv_strerror(rc));
      failed_ = true;
      w->exited = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&w->process), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&w->out), nullptr);
      workers_.push_back(std::move(w));
      Stop(SIGTERM);
      return;
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&w->out),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* worker = static_cast<Worker*>(h->data);
          *buf = uv_buf_init(worker->chunk, sizeof worker->chunk);
        },
        OnRead);
    workers_.push_back(std::move(w));
  }

  static void OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
    auto* w = static_cast<Worker*>(stream->data);
    if (n < 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(stream), nullptr);
      return;
    }
    w->buffer.append(w->chunk, static_cast<size_t>(n));
    if (!w->ready && w->buffer.find("listening ") != std::string::npos) {
      w->ready = true;
      w->owner->MaybeAnnounce();
    }
  }

  void MaybeAnnounce() {
    for (auto& w : workers_) {
      if (!w->ready) return;
    }
    std::printf("listening %s:%d workers %d\n", flags_.service.host.c_str(), port_, flags_.workers);
  }

  static void OnExit(uv_process_t* process, int64_t exit_status, int term_signal) {
    auto* w = static_cast<Worker*>(process->data);
    Supervisor* self = w->owner;
    w->exited = true;
    uv_close(reinterpret_cast<uv_handle_t*>(process), nullptr);
    bool alive = false;
    for (auto& other : self->workers_) alive = alive || !other->exited;
    if (exit_status != 0 || term_signal != 0) {
      std::fprintf(stderr, "fetch_service: worker %d exited with status %lld signal %d\n",
                   process->pid, static_cast<long long>(exit_status), term_signal);
      // With --keep-going a worker dying before the stop is not a failure as
      // long as another one is still serving; the exit status then reflects
      // how the remaining workers shut down.
      if (self->stopping_ || !self->flags_.keep_going || !alive) self->failed_ = true;
    }
    // A worker that dies on its own takes the service down with it unless
    // --keep-going: the supervisor does not restart workers (a real one would).
    if (!self->stopping_ && !(self->flags_.keep_going && alive)) self->Stop(SIGTERM);
    if (alive) return;
    if (self->on_all_exited) self->on_all_exited();
  }

 public:
  std::function<void()> on_all_exited;

 private:
  uv_loop_t* loop_;
  const Flags& flags_;
  std::string exe_;
  uv_tcp_t reserve_;
  int port_ = 0;
  bool stopping_ = false;
  bool failed_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
};

int RunSupervisor(const Flags& flags) {
  char path[4096];
  size_t size = sizeof path;
  if (uv_exepath(path, &size) != 0) return 1;
  uv_loop_t loop;
  uv_loop_init(&loop);
  Supervisor supervisor(&loop, flags, std::string(path, size));
  if (!supervisor.ReservePort()) {
    supervisor.Close();
    return Finish(&loop, 1);
  }
  examples::StopSignals signals(&loop, [&supervisor](int signum) { supervisor.Stop(signum); });
  supervisor.on_all_exited = [&] {
    signals.Close();
    supervisor.Close();
  };
  supervisor.Start();
  uv_run(&loop, UV_RUN_DEFAULT);
  return Finish(&loop, supervisor.exit_code());
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!Parse(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: fetch_service [--listen HOST:PORT=127.0.0.1:8080]\n"
                 "                     [--redis HOST:PORT | --redis-url URL]\n"
                 "                     [--workers N=1] [--upstream-ms 200]\n"
                 "                     [--result-ttl-ms 10000] [--lock-ttl-ms 10000]\n"
                 "                     [--prefix sf:fetch:] [--keep-going]\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // A client that hangs up must not kill the service through SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  if (flags.is_worker) {
    // A worker never outlives its supervisor; SIGTERM makes it drain first.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;
  }
  if (flags.workers > 1 && !flags.is_worker) return RunSupervisor(flags);
  return RunServer(flags.service);
}
