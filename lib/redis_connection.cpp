#include "redis_connection.h"

#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <utility>

#include "hiredis_reply.h"
#include "loop_ref.h"
#include "uv_hiredis_adapter.h"

namespace singleflight::internal {
namespace {

// Dead-peer detection on an idle TCP connection (the subscriber is idle most
// of the time and cannot PING): probes after 5 s of silence, every 2 s, 3
// times; TCP_USER_TIMEOUT bounds unacknowledged writes to the same ~11 s.
constexpr int kKeepAliveIdleS = 5;
constexpr int kKeepAliveIntervalS = 2;
constexpr int kKeepAliveCount = 3;
constexpr unsigned kUserTimeoutMs =
    1000u * (kKeepAliveIdleS + kKeepAliveIntervalS * kKeepAliveCount);

// hiredis writes with write(), which raises SIGPIPE on a peer-closed socket.
// A process that left SIGPIPE at its default would die, so the first
// connection ignores it; a handler the application installed is left alone.
void IgnoreDefaultSigpipe() {
  static const bool once = [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      std::signal(SIGPIPE, SIG_IGN);
    }
    return true;
  }();
  (void)once;
}

void TuneTcpSocket(int fd) {
  int on = 1;
  int idle = kKeepAliveIdleS;
  int interval = kKeepAliveIntervalS;
  int count = kKeepAliveCount;
  unsigned user_timeout = kUserTimeoutMs;
  // Best effort: a socket without these still works, it only detects a dead
  // peer later.
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return uv_inet_pton(AF_INET, host.c_str(), buf) == 0 ||
         uv_inet_pton(AF_INET6, host.c_str(), buf) == 0;
}

Status Unavailable(std::string message) {
  return Status(Code::kUnavailable, std::move(message));
}

// A command hiredis holds. hiredis owns the pointer until it calls OnReply
// (exactly once, with NULL if the context goes away), so it lives in pending_
// until then.
struct PendingCommand {
  RedisConnection::CommandCallback callback;
  uint64_t deadline_ms;  // in uv_now() time
  bool answered = false;
};

// Outlives its connection attempt: libuv calls back even after uv_cancel
// fails, so the request only points back at the connection while it matters.
struct ResolveRequest {
  uv_getaddrinfo_t req;
  class Connection* owner;
};

class Connection final : public RedisConnection {
 public:
  Connection(uv_loop_t* loop, RedisOptions options, Mode mode, Handlers handlers,
             bool keep_loop_alive);

  void Start();
  bool connected() const override { return state_ == State::kReady; }
  void Command(std::vector<std::string> argv, CommandCallback callback) override;
  bool Subscribe(const std::vector<std::string>& channels) override;
  bool Unsubscribe(const std::vector<std::string>& channels) override;
  void Close(std::function<void()> done) override;

  void OnResolved(int status, const struct addrinfo* result);

 private:
  enum class State { kBackoff, kResolving, kConnecting, kHandshake, kReady, kClosed };

  // Connection attempts.
  void StartAttempt();
  void Resolve();
  void ConnectTo(const std::string& ip);
  bool Adopt(redisAsyncContext* ac, bool tcp);
  void SendHandshake();
  void Ready();
  void Lost(const Status& why);
  void Abort(const Status& why);
  void ScheduleReconnect();
  void CancelResolve();
  std::string Address() const;

  // Commands.
  bool Send(const std::vector<std::string>& argv, CommandCallback& callback);
  bool SendPubSub(const char* verb, const std::vector<std::string>& channels);
  void Answer(PendingCommand* command, const redisAsyncContext* ac, redisReply* reply);
  void ArmCommandTimer();
  void Defer(CommandCallback callback, Status status);
  void RunDeferred();
  void FinishClose();
  void HandleGone();

  // Trampolines from hiredis and libuv.
  static void OnConnect(const redisAsyncContext* ac, int status) noexcept;
  static void OnDisconnect(const redisAsyncContext* ac, int status) noexcept;
  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
  static void OnPush(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
  static void OnAttemptTimer(uv_timer_t* timer) noexcept;
  static void OnCommandTimer(uv_timer_t* timer) noexcept;
  static void OnIdle(uv_idle_t* idle) noexcept;
  static void OnAdapterClosed(void* arg) noexcept;
  static void OnHandleClosed(uv_handle_t* handle) noexcept;

  uv_loop_t* loop_;
  RedisOptions options_;
  bool keep_loop_alive_;  // Options::keep_loop_alive, for every handle made here
  Mode mode_;
  Handlers handlers_;
  State state_ = State::kBackoff;
  bool closing_ = false;
  std::function<void()> done_;

  redisAsyncContext* ac_ = nullptr;    // the live context; null while none or being freed
  ResolveRequest* resolve_ = nullptr;  // the attempt's uv_getaddrinfo, if running
  // The status every command still inside hiredis gets when we free the
  // context ourselves (hiredis then reports NULL replies and a clean
  // disconnect). Unset when hiredis itself saw the error.
  std::optional<Status> abort_status_;
  std::deque<std::string> addresses_;  // resolved addresses this attempt has yet to try
  Status last_error_ = Unavailable("not connected yet");
  unsigned failed_attempts_ = 0;  // since the last ready connection; drives backoff
  std::minstd_rand random_;

  std::deque<std::unique_ptr<PendingCommand>> pending_;  // send order == reply order
  std::deque<std::pair<CommandCallback, Status>> deferred_;

  // attempt_timer_: the backoff delay, then the connect deadline of the attempt.
  uv_timer_t attempt_timer_;
  uv_timer_t command_timer_;
  uv_idle_t idle_;        // runs deferred callbacks, so none runs inside the call that caused it
  int open_handles_ = 0;  // our three handles plus a live adapter's poll handle
};

Connection::Connection(uv_loop_t* loop, RedisOptions options, Mode mode, Handlers handlers,
                       bool keep_loop_alive)
    : loop_(loop),
      options_(std::move(options)),
      keep_loop_alive_(keep_loop_alive),
      mode_(mode),
      handlers_(std::move(handlers)),
      random_(std::random_device{}()) {
  uv_timer_init(loop_, &attempt_timer_);
  uv_timer_init(loop_, &command_timer_);
  uv_idle_init(loop_, &idle_);
  KeepsLoopAlive(&attempt_timer_, keep_loop_alive_);
  KeepsLoopAlive(&command_timer_, keep_loop_alive_);
  KeepsLoopAlive(&idle_, keep_loop_alive_);
  attempt_timer_.data = command_timer_.data = idle_.data = this;
  open_handles_ = 3;
}

// The first attempt starts from the loop, so that no handler runs before
// Create has returned.
void Connection::Start() {
  uv_timer_start(&attempt_timer_, OnAttemptTimer, 0, 0);
}

std::string Connection::Address() const {
  if (!options_.unix_socket.empty()) return options_.unix_socket;
  return options_.host + ":" + std::to_string(options_.port);
}

void Connection::StartAttempt() {
  abort_status_.reset();
  addresses_.clear();
  if (options_.connect_timeout_ms > 0) {
    uv_timer_start(&attempt_timer_, OnAttemptTimer, options_.connect_timeout_ms, 0);
  }
  if (!options_.unix_socket.empty()) {
    state_ = State::kConnecting;
    if (!Adopt(redisAsyncConnectUnix(options_.unix_socket.c_str()), false)) return;
  } else if (IsIpLiteral(options_.host)) {
    ConnectTo(options_.host);
  } else {
    Resolve();
  }
}

void Connection::Resolve() {
  auto* request = new ResolveRequest{{}, this};
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop_, &request->req,
      [](uv_getaddrinfo_t* req, int status, struct addrinfo* result) noexcept {
        auto* request = reinterpret_cast<ResolveRequest*>(req);
        if (request->owner != nullptr) request->owner->OnResolved(status, result);
        uv_freeaddrinfo(result);
        delete request;
      },
      options_.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    delete request;
    Lost(Unavailable("resolve " + options_.host + ": " + uv_strerror(rc)));
    return;
  }
  state_ = State::kResolving;
  resolve_ = request;
}

void Connection::OnResolved(int status, const struct addrinfo* result) {
  resolve_->owner = nullptr;
  resolve_ = nullptr;
  if (status != 0 || result == nullptr) {
    Lost(Unavailable("resolve " + options_.host + ": " + uv_strerror(status)));
    return;
  }
  // Every address is tried in the resolver's order within this attempt: a
  // name like "localhost" often lists ::1 first while the server listens on
  // 127.0.0.1 only.
  addresses_.clear();
  for (const struct addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET6) {
      uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(ai->ai_addr), ip, sizeof(ip));
    } else if (ai->ai_family == AF_INET) {
      uv_ip4_name(reinterpret_cast<const sockaddr_in*>(ai->ai_addr), ip, sizeof(ip));
    } else {
      continue;
    }
    addresses_.emplace_back(ip);
  }
  if (addresses_.empty()) {
    Lost(Unavailable("resolve " + options_.host + ": no usable address"));
    return;
  }
  ConnectTo(addresses_.front());
  addresses_.pop_front();
}

void Connection::CancelResolve() {
  if (resolve_ == nullptr) return;
  uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  resolve_->owner = nullptr;
  resolve_ = nullptr;
}

void Connection::ConnectTo(const std::string& ip) {
  state_ = State::kConnecting;
  Adopt(redisAsyncConnect(ip.c_str(), options_.port), true);
}

// Takes a fresh context from redisAsyncConnect*: attaches it to the loop and
// waits for the connect callback. On failure the attempt is lost.
bool Connection::Adopt(redisAsyncContext* ac, bool tcp) {
  if (ac == nullptr) {
    Lost(Unavailable("connect to " + Address() + ": out of memory"));
    return false;
  }
  if (ac->err != 0) {
    std::string error = ac->errstr;
    redisAsyncFree(ac);  // no adapter and no callbacks yet: frees at once
    Lost(Unavailable("connect to " + Address() + ": " + error));
    return false;
  }
  if (AttachUvAdapter(loop_, ac, OnAdapterClosed, this, keep_loop_alive_) != REDIS_OK) {
    redisAsyncFree(ac);
    Lost(Unavailable("connect to " + Address() + ": cannot poll the socket"));
    return false;
  }
  ++open_handles_;
  int flags = fcntl(ac->c.fd, F_GETFD);
  if (flags >= 0) fcntl(ac->c.fd, F_SETFD, flags | FD_CLOEXEC);  // children must not inherit it
  if (tcp) TuneTcpSocket(ac->c.fd);
  ac->data = this;
  ac_ = ac;
  redisAsyncSetDisconnectCallback(ac, OnDisconnect);
  redisAsyncSetConnectCallback(ac, OnConnect);  // also asks for the first write event
  return true;
}

void Connection::OnConnect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<Connection*>(ac->data);
  if (ac != self->ac_) return;
  if (status != REDIS_OK) {
    // hiredis frees this context itself once we return.
    self->ac_ = nullptr;
    if (!self->addresses_.empty()) {  // a fresh context for the next address
      std::string next = std::move(self->addresses_.front());
      self->addresses_.pop_front();
      self->ConnectTo(next);
      return;
    }
    self->Lost(Unavailable("connect to " + self->Address() + ": " + ac->c.errstr));
    return;
  }
  self->state_ = State::kHandshake;
  // No handler may run in here: freeing the context inside the connect
  // callback is a use-after-free in hiredis. The handshake always ends with a
  // reply, and handlers run from that reply's callback.
  self->SendHandshake();
}

// AUTH and SELECT as configured, then PING, pipelined. The PING also proves
// the server answers (not LOADING, not paused) before we call it ready.
void Connection::SendHandshake() {
  std::vector<std::vector<std::string>> steps;
  if (!options_.password.empty()) {
    if (options_.username.empty()) {
      steps.push_back({"AUTH", options_.password});
    } else {
      steps.push_back({"AUTH", options_.username, options_.password});
    }
  }
  if (options_.db != 0) steps.push_back({"SELECT", std::to_string(options_.db)});
  steps.push_back({"PING"});
  for (size_t i = 0; i < steps.size(); ++i) {
    bool last = i + 1 == steps.size();
    std::string verb = steps[i][0];
    redisAsyncContext* ac = ac_;
    CommandCallback on_reply = [this, ac, last, verb](const Status& status, const Reply& reply) {
      // A transport failure has already been handled by whoever tore down.
      if (!status.ok() || ac_ != ac || state_ != State::kHandshake) return;
      if (reply.is_error()) {
        Lost(Unavailable(verb + " failed: " + reply.str));
      } else if (last) {
        Ready();
      }
    };
    bool sent = Send(steps[i], on_reply);
    if (!sent) {
      Lost(Unavailable("cannot send " + verb + " to " + Address()));
      return;
    }
  }
}

void Connection::Ready() {
  state_ = State::kReady;
  failed_attempts_ = 0;
  uv_timer_stop(&attempt_timer_);
  if (handlers_.on_state) handlers_.on_state(true, Status::Ok());
}

// The attempt or the connection failed: drop the context, plan the next
// attempt, then tell the owner (last, since the owner may Close us).
void Connection::Lost(const Status& why) {
  if (closing_) return;
  Abort(why);
  CancelResolve();
  uv_timer_stop(&command_timer_);
  last_error_ = why;
  ScheduleReconnect();
  if (handlers_.on_state) handlers_.on_state(false, why);
}

// Frees the live context. hiredis then answers every command it holds with
// NULL, which Answer turns into `why`. Inside a hiredis callback the free is
// deferred by hiredis until that callback returns.
void Connection::Abort(const Status& why) {
  abort_status_ = why;
  redisAsyncContext* ac = ac_;
  if (ac == nullptr) return;
  ac_ = nullptr;
  redisAsyncFree(ac);
}

// Full jitter: uniform in [min, cap], where cap doubles per failed attempt up
// to the maximum, so that a fleet does not reconnect in lockstep.
void Connection::ScheduleReconnect() {
  state_ = State::kBackoff;
  uint64_t low = options_.reconnect_min_ms;
  uint64_t cap = std::max<uint64_t>(low, options_.reconnect_max_ms);
  uint64_t ceiling = low << std::min(failed_attempts_, 20u);
  ceiling = std::clamp<uint64_t>(ceiling, low, cap);
  ++failed_attempts_;
  std::uniform_int_distribution<uint64_t> pick(low, ceiling);
  uv_timer_start(&attempt_timer_, OnAttemptTimer, pick(random_), 0);
}

void Connection::OnAttemptTimer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<Connection*>(timer->data);
  if (self->state_ == State::kBackoff) {
    self->StartAttempt();
  } else if (self->state_ != State::kReady && self->state_ != State::kClosed) {
    self->Lost(Unavailable("connect to " + self->Address() + " timed out after " +
                           std::to_string(self->options_.connect_timeout_ms) + " ms"));
  }
}

void Connection::OnDisconnect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<Connection*>(ac->data);
  if (ac != self->ac_) return;  // we freed it ourselves and already know why
  self->ac_ = nullptr;          // hiredis frees it after we return
  std::string error = status == REDIS_OK ? "closed" : ac->c.errstr;
  self->Lost(Unavailable("connection to " + self->Address() + " lost: " + error));
}

void Connection::Command(std::vector<std::string> argv, CommandCallback callback) {
  if (closing_) {
    Defer(std::move(callback), Status(Code::kClosed, "connection closed"));
  } else if (mode_ != Mode::kCommand) {
    Defer(std::move(callback),
          Status(Code::kInvalidArgument, "Command on a subscriber connection"));
  } else if (argv.empty()) {
    Defer(std::move(callback), Status(Code::kInvalidArgument, "empty command"));
  } else if (state_ != State::kReady) {
    // Fail fast rather than queue: the caller has its own deadline and
    // fallback, and a queue would only hold work hostage to an outage.
    Defer(std::move(callback), Unavailable("not connected: " + last_error_.message()));
  } else if (!Send(argv, callback)) {
    Defer(std::move(callback), Unavailable("cannot send to " + Address()));
  }
}

// Takes the callback only when the command was sent; on failure the caller
// still owns it (to fail it). Moving instead of copying matters: a script's
// callback carries its arguments for the NOSCRIPT retry.
bool Connection::Send(const std::vector<std::string>& argv, CommandCallback& callback) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  uint64_t deadline = uv_now(loop_) + options_.command_timeout_ms;
  auto command = std::make_unique<PendingCommand>(PendingCommand{std::move(callback), deadline});
  // REDIS_ERR means hiredis will never call back, so it keeps no pointer.
  if (redisAsyncCommandArgv(ac_, OnReply, command.get(), static_cast<int>(args.size()), args.data(),
                            lengths.data()) != REDIS_OK) {
    callback = std::move(command->callback);
    return false;
  }
  pending_.push_back(std::move(command));
  ArmCommandTimer();
  return true;
}

void Connection::OnReply(redisAsyncContext* ac, void* reply, void* privdata) noexcept {
  auto* self = static_cast<Connection*>(ac->data);
  self->Answer(static_cast<PendingCommand*>(privdata), ac, static_cast<redisReply*>(reply));
}

void Connection::Answer(PendingCommand* command, const redisAsyncContext* ac, redisReply* reply) {
  command->answered = true;
  if (reply == nullptr) {
    // The context is going away; handlers run later from the loop, never
    // while hiredis is freeing it.
    Status why = abort_status_
                     ? *abort_status_
                     : Unavailable("connection to " + Address() +
                                   " lost: " + (ac->c.err != 0 ? ac->c.errstr : "closed"));
    // The command was written (or queued in hiredis): it may have run. Say
    // so with kTimeout, so that a caller holding a lock token keeps it.
    if (why.code() != Code::kClosed) why = Status(Code::kTimeout, why.message());
    Defer(std::move(command->callback), std::move(why));
  } else {
    command->callback(Status::Ok(), ToReply(reply));
  }
  while (!pending_.empty() && pending_.front()->answered) pending_.pop_front();
}

// One timer for all commands: replies come in send order, so only the oldest
// unanswered command can be the first to miss its deadline. The timer is
// re-armed lazily when it fires, not on every reply.
void Connection::ArmCommandTimer() {
  if (options_.command_timeout_ms == 0 || pending_.empty()) return;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&command_timer_))) return;
  uint64_t now = uv_now(loop_);
  uint64_t deadline = pending_.front()->deadline_ms;
  uv_timer_start(&command_timer_, OnCommandTimer, deadline > now ? deadline - now : 0, 0);
}

void Connection::OnCommandTimer(uv_timer_t* timer) noexcept {
  auto* self = static_cast<Connection*>(timer->data);
  auto& pending = self->pending_;
  while (!pending.empty() && pending.front()->answered) pending.pop_front();
  if (pending.empty() || self->ac_ == nullptr) return;
  if (pending.front()->deadline_ms <= uv_now(self->loop_)) {
    // hiredis cannot drop one command; the whole connection goes.
    self->Lost(Unavailable("command timed out after " +
                           std::to_string(self->options_.command_timeout_ms) + " ms on " +
                           self->Address()));
    return;
  }
  self->ArmCommandTimer();
}

bool Connection::Subscribe(const std::vector<std::string>& channels) {
  return SendPubSub("SUBSCRIBE", channels);
}

bool Connection::Unsubscribe(const std::vector<std::string>& channels) {
  return SendPubSub("UNSUBSCRIBE", channels);
}

// Every channel shares one callback and one privdata (this connection):
// hiredis keeps one callback per channel and replaces it on a re-SUBSCRIBE,
// so only a single stable dispatcher is safe. Its return value says whether
// hiredis took the command (it refuses UNSUBSCRIBE on an unsubscribed context).
bool Connection::SendPubSub(const char* verb, const std::vector<std::string>& channels) {
  if (state_ != State::kReady || mode_ != Mode::kSubscriber || channels.empty()) return false;
  std::vector<const char*> args{verb};
  std::vector<size_t> lengths{std::char_traits<char>::length(verb)};
  for (const std::string& channel : channels) {
    args.push_back(channel.data());
    lengths.push_back(channel.size());
  }
  return redisAsyncCommandArgv(ac_, OnPush, this, static_cast<int>(args.size()), args.data(),
                               lengths.data()) == REDIS_OK;
}

void Connection::OnPush(redisAsyncContext*, void* reply, void* privdata) noexcept {
  auto* self = static_cast<Connection*>(privdata);
  // NULL: hiredis is dropping its channel table on disconnect; on_state says so.
  if (reply == nullptr || self->closing_ || !self->handlers_.on_push) return;
  self->handlers_.on_push(ToReply(static_cast<redisReply*>(reply)));
}

void Connection::Defer(CommandCallback callback, Status status) {
  deferred_.emplace_back(std::move(callback), std::move(status));
  uv_idle_start(&idle_, OnIdle);
}

void Connection::OnIdle(uv_idle_t* idle) noexcept {
  auto* self = static_cast<Connection*>(idle->data);
  self->RunDeferred();
  if (self->deferred_.empty()) {
    uv_idle_stop(idle);
    if (self->closing_) self->FinishClose();
  }
}

void Connection::RunDeferred() {
  std::deque<std::pair<CommandCallback, Status>> batch;
  batch.swap(deferred_);  // callbacks may defer more; those run next tick
  for (auto& [callback, status] : batch) {
    if (callback) callback(status, Reply{});
  }
}

void Connection::Close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  done_ = std::move(done);
  Status closed(Code::kClosed, "connection closed");
  Abort(closed);
  CancelResolve();
  state_ = State::kClosed;
  uv_timer_stop(&attempt_timer_);
  uv_timer_stop(&command_timer_);
  for (auto& entry : deferred_) entry.second = closed;
  uv_idle_start(&idle_, OnIdle);  // finishes the close from the loop
}

void Connection::FinishClose() {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&idle_))) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&attempt_timer_), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&command_timer_), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), OnHandleClosed);
}

void Connection::OnAdapterClosed(void* arg) noexcept {
  static_cast<Connection*>(arg)->HandleGone();
}

void Connection::OnHandleClosed(uv_handle_t* handle) noexcept {
  static_cast<Connection*>(handle->data)->HandleGone();
}

// The last handle's close callback ends the object's life.
void Connection::HandleGone() {
  if (--open_handles_ > 0) return;
  std::function<void()> done = std::move(done_);
  delete this;
  if (done) done();
}

}  // namespace

RedisConnection* RedisConnection::Create(uv_loop_t* loop, const RedisOptions& options, Mode mode,
                                         Handlers handlers, bool keep_loop_alive) {
  IgnoreDefaultSigpipe();
  auto* connection = new Connection(loop, options, mode, std::move(handlers), keep_loop_alive);
  connection->Start();
  return connection;
}

}  // namespace singleflight::internal
