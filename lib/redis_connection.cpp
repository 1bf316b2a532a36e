#include "redis_connection.h"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>

#include <algorithm>
#include <csignal>
#include <deque>
#include <memory>
#include <utility>

#include "command_queue.h"
#include "hiredis_reply.h"
#include "host_resolver.h"
#include "reconnect_backoff.h"
#include "redis_handshake.h"
#include "sentinel.h"
#include "socket_stream.h"
#include "tls_session.h"

namespace singleflight::internal {
namespace {

// libuv writes with write(), which raises SIGPIPE on a peer-closed socket.
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

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return uv_inet_pton(AF_INET, host.c_str(), buf) == 0 ||
         uv_inet_pton(AF_INET6, host.c_str(), buf) == 0;
}

Status Unavailable(std::string message) {
  return Status(Code::kUnavailable, std::move(message));
}

// The liveness bound in ms (0: never): RedisOptions::liveness_timeout_ms.
uint64_t LivenessMs(const RedisOptions& options) {
  if (options.liveness_timeout_ms > 0) return options.liveness_timeout_ms;
  return 3ull * options.command_timeout_ms;
}

class Connection final : public RedisConnection, private SocketStream::Owner {
 public:
  Connection(uv_loop_t* loop, Scheduler* scheduler, RedisOptions options, Mode mode,
             Handlers handlers, bool keep_loop_alive);
  ~Connection() override;

  void Start();
  bool connected() const override { return state_ == State::kReady; }
  void Command(std::vector<std::string> argv, CommandCallback callback) override;
  bool Subscribe(const std::vector<std::string>& channels) override;
  bool Unsubscribe(const std::vector<std::string>& channels) override;
  void Close(std::function<void()> done) override;

 private:
  enum class State {
    kBackoff,
    kDiscovering,
    kResolving,
    kConnecting,
    kTls,
    kHandshake,
    kReady,
    kClosed
  };

  // Connection attempts.
  void StartAttempt();
  void Discover();
  void OnMasterFound(const Status& status, const std::string& host, int port);
  void OnSwitch(const std::string& host, int port);
  void Resolve();
  void ConnectTo(const std::string& ip);
  void StartTls();
  void SendHandshake();
  void Ready();
  void Lost(const Status& why);
  void DropSocket();
  void CancelResolve();
  void CancelLookup();
  void OnAttemptTimer();
  std::string Address() const;

  // SocketStream::Owner.
  void OnSocketConnected(int status) override;
  void OnSocketData(const char* data, size_t size) override;
  void OnSocketEnded(int status) override;
  void OnSocketClosed() override;

  // Commands and replies.
  void ScheduleFlush();
  void Flush();
  void ReadReplies(const char* data, size_t size);
  bool Dispatch(const Reply& reply);
  void ArmCommandTimer();
  void OnCommandTimer();
  void Defer(CommandCallback callback, Status status);
  void RunDeferred();
  void MaybeFinishClose();
  void ChildGone();

  uv_loop_t* loop_;
  Scheduler* scheduler_;
  RedisOptions options_;
  bool keep_loop_alive_;  // Options::keep_loop_alive, for the socket
  Mode mode_;
  Handlers handlers_;
  State state_ = State::kBackoff;
  bool closing_ = false;
  std::function<void()> done_;

  // The current attempt. Each attempt has its own socket, TLS session and
  // reader; `attempt_` changes with each, so that work begun for an old one
  // (a reply loop interrupted by a callback that lost the connection) stops.
  SocketStream* socket_ = nullptr;  // null between attempts
  int open_sockets_ = 0;            // sockets whose close callback has yet to come
  std::unique_ptr<TlsSession> tls_;
  redisReader* reader_ = nullptr;
  uint64_t attempt_ = 0;
  bool heard_from_server_ = false;  // any byte this attempt
  HostResolver resolver_;
  // Where this attempt connects: the configured host, or the master the
  // sentinels named.
  std::string target_host_;
  int target_port_ = 0;
  // Sentinel only: this attempt's question to the sentinels, the failover
  // listener, and how many of the two have yet to report they are gone.
  std::shared_ptr<MasterLookup> lookup_;
  std::unique_ptr<SwitchWatcher> watcher_;
  int open_children_ = 0;
  std::deque<std::string> addresses_;  // resolved addresses this attempt has yet to try
  Status last_error_ = Unavailable("not connected yet");
  ReconnectBackoff backoff_;

  // Outlives attempts: a lost connection empties it (TakeAll).
  CommandQueue queue_;
  bool flush_scheduled_ = false;

  std::deque<std::pair<CommandCallback, Status>> deferred_;
  bool deferred_scheduled_ = false;

  // attempt_timer_: the backoff delay, then the attempt's connect deadline.
  Scheduler::TimerId attempt_timer_;
  Scheduler::TimerId command_timer_;
};

Connection::Connection(uv_loop_t* loop, Scheduler* scheduler, RedisOptions options, Mode mode,
                       Handlers handlers, bool keep_loop_alive)
    : loop_(loop),
      scheduler_(scheduler),
      options_(std::move(options)),
      keep_loop_alive_(keep_loop_alive),
      mode_(mode),
      handlers_(std::move(handlers)),
      backoff_(options_.reconnect_min_ms, options_.reconnect_max_ms),
      queue_(options_.command_timeout_ms, LivenessMs(options_)) {}

Connection::~Connection() {
  if (reader_ != nullptr) redisReaderFree(reader_);
}

// The first attempt starts from the loop, so that no handler runs before
// Create has returned.
void Connection::Start() {
  attempt_timer_ = scheduler_->After(0, [this] { OnAttemptTimer(); });
  if (options_.sentinel.enabled() && !options_.sentinel.sentinels.empty()) {
    ++open_children_;
    watcher_ = std::make_unique<SwitchWatcher>(
        loop_, scheduler_, options_, keep_loop_alive_,
        [this](const std::string& host, int port) { OnSwitch(host, port); });
  }
}

std::string Connection::Address() const {
  if (!options_.unix_socket.empty()) return options_.unix_socket;
  std::string address = target_host_ + ":" + std::to_string(target_port_);
  if (!options_.sentinel.enabled()) return address;
  return "master \"" + options_.sentinel.master_name + "\"" +
         (target_host_.empty() ? std::string() : " at " + address);
}

void Connection::StartAttempt() {
  ++attempt_;
  heard_from_server_ = false;
  addresses_.clear();
  if (reader_ != nullptr) redisReaderFree(reader_);
  reader_ = redisReaderCreate();
  if (options_.connect_timeout_ms > 0) {
    attempt_timer_ = scheduler_->After(options_.connect_timeout_ms, [this] { OnAttemptTimer(); });
  }
  target_host_ = options_.host;
  target_port_ = options_.port;
  if (options_.sentinel.enabled()) {
    Discover();
  } else if (!options_.unix_socket.empty()) {
    state_ = State::kConnecting;
    int error = 0;
    socket_ =
        SocketStream::ConnectUnix(loop_, options_.unix_socket, this, keep_loop_alive_, &error);
    ++open_sockets_;
  } else if (IsIpLiteral(target_host_)) {
    ConnectTo(target_host_);
  } else {
    Resolve();
  }
}

// Every attempt asks the sentinels afresh: after a failover the master is
// elsewhere, and the attempt is what follows it.
void Connection::Discover() {
  if (options_.sentinel.sentinels.empty()) {
    Lost(Unavailable("Sentinel for \"" + options_.sentinel.master_name +
                     "\" but no sentinels configured"));
    return;
  }
  state_ = State::kDiscovering;
  target_host_.clear();
  ++open_children_;
  lookup_ = MasterLookup::Start(
      loop_, scheduler_, options_, keep_loop_alive_,
      [this](const Status& status, const std::string& host, int port) {
        OnMasterFound(status, host, port);
      },
      [this] { ChildGone(); });
}

void Connection::OnMasterFound(const Status& status, const std::string& host, int port) {
  lookup_.reset();  // it reports itself gone when its connection has closed
  if (!status.ok()) {
    Lost(status);
    return;
  }
  target_host_ = host;
  target_port_ = port;
  if (IsIpLiteral(host)) {
    ConnectTo(host);
  } else {
    Resolve();
  }
}

// The sentinels promoted another server: drop this connection now rather
// than wait to notice the old master's death (or, worse, keep writing to it
// if it lives on, partitioned, as a master that will be demoted).
void Connection::OnSwitch(const std::string& host, int port) {
  if (state_ != State::kReady && state_ != State::kHandshake && state_ != State::kTls) return;
  if (host == target_host_ && port == target_port_) return;
  Lost(Unavailable("failover: the sentinels moved master \"" + options_.sentinel.master_name +
                   "\" to " + host + ":" + std::to_string(port)));
}

void Connection::ChildGone() {
  --open_children_;
  MaybeFinishClose();
}

void Connection::Resolve() {
  Status error;
  bool started = resolver_.Start(
      loop_, target_host_,
      [this](const Status& status, std::vector<std::string> ips) {
        if (!status.ok()) {
          Lost(status);
          return;
        }
        addresses_.assign(ips.begin() + 1, ips.end());
        ConnectTo(ips.front());
      },
      &error);
  if (!started) {
    Lost(error);
    return;
  }
  state_ = State::kResolving;
}

void Connection::CancelResolve() {
  resolver_.Cancel();
}

void Connection::CancelLookup() {
  if (lookup_ == nullptr) return;
  lookup_->Cancel();
  lookup_.reset();
}

void Connection::ConnectTo(const std::string& ip) {
  state_ = State::kConnecting;
  int error = 0;
  socket_ = SocketStream::ConnectTcp(loop_, ip, target_port_, this, keep_loop_alive_, &error);
  if (socket_ == nullptr) {
    Lost(Unavailable("connect to " + Address() + ": " + uv_strerror(error)));
    return;
  }
  ++open_sockets_;
}

void Connection::OnSocketConnected(int status) {
  if (status != 0) {
    DropSocket();
    if (!addresses_.empty()) {  // a fresh socket for the next address
      std::string next = std::move(addresses_.front());
      addresses_.pop_front();
      ConnectTo(next);
      return;
    }
    Lost(Unavailable("connect to " + Address() + ": " + uv_strerror(status)));
    return;
  }
  if (options_.tls.enabled) {
    StartTls();
  } else {
    SendHandshake();
  }
}

void Connection::StartTls() {
  state_ = State::kTls;
  Status error;
  tls_ = TlsSession::Create(options_.tls, options_.unix_socket.empty() ? target_host_ : "", &error);
  std::string wire;
  if (tls_ != nullptr) error = tls_->Start(&wire);
  if (tls_ == nullptr || !error.ok()) {
    Lost(error);
    return;
  }
  socket_->Write({std::move(wire)});
}

// The handshake's commands, pipelined (lib/redis_handshake.h).
void Connection::SendHandshake() {
  state_ = State::kHandshake;
  std::vector<std::vector<std::string>> steps = HandshakeCommands(options_);
  for (size_t i = 0; i < steps.size(); ++i) {
    bool last = i + 1 == steps.size();
    std::string verb = steps[i][0];
    uint64_t attempt = attempt_;
    CommandCallback on_reply = [this, attempt, last, verb](const Status& status,
                                                           const Reply& reply) {
      // A transport failure has already been handled by whoever tore down.
      if (!status.ok() || attempt != attempt_ || state_ != State::kHandshake) return;
      Status verdict = CheckHandshakeReply(verb, reply, Address());
      if (!verdict.ok()) {
        Lost(verdict);
      } else if (last) {
        Ready();
      }
    };
    queue_.Push(steps[i], on_reply, scheduler_->NowMs(), /*with_deadline=*/false);
  }
  Flush();
}

void Connection::Ready() {
  state_ = State::kReady;
  backoff_.Reset();
  scheduler_->Cancel(attempt_timer_);
  if (handlers_.on_state) handlers_.on_state(true, Status::Ok());
}

// The attempt or the connection failed: drop the socket, fail what it
// carried, plan the next attempt, then tell the owner — before the failed
// callbacks run, and last, since the owner may Close us.
void Connection::Lost(const Status& why) {
  if (closing_) return;
  DropSocket();
  CancelResolve();
  CancelLookup();
  scheduler_->Cancel(command_timer_);
  // Written: it may have run. Say so with kTimeout, so that a caller
  // holding a lock token keeps it.
  for (auto& [callback, status] : queue_.TakeAll(Status(Code::kTimeout, why.message()), why)) {
    Defer(std::move(callback), std::move(status));
  }
  last_error_ = why;
  state_ = State::kBackoff;
  attempt_timer_ = scheduler_->After(backoff_.Next(), [this] { OnAttemptTimer(); });
  if (handlers_.on_state) handlers_.on_state(false, why);
}

void Connection::DropSocket() {
  ++attempt_;
  tls_.reset();
  if (socket_ == nullptr) return;
  SocketStream* socket = socket_;
  socket_ = nullptr;
  socket->Close();
}

void Connection::OnAttemptTimer() {
  attempt_timer_ = {};
  if (state_ == State::kBackoff) {
    StartAttempt();
  } else if (state_ != State::kReady && state_ != State::kClosed) {
    Lost(Unavailable("connect to " + Address() + " timed out after " +
                     std::to_string(options_.connect_timeout_ms) + " ms" +
                     (state_ != State::kTls ? ""
                      : heard_from_server_
                          ? " in the TLS handshake"
                          : " in the TLS handshake, with no answer from the server (a plaintext "
                            "port? then use redis://)")));
  }
}

void Connection::OnSocketEnded(int status) {
  std::string error = status == UV_EOF ? "closed by the server" : uv_strerror(status);
  if (state_ == State::kTls && !heard_from_server_) {
    error += " during the TLS handshake (not a TLS port?)";
  } else if (state_ == State::kHandshake && !heard_from_server_ && !options_.tls.enabled) {
    // A TLS-only port resets a client that speaks plaintext.
    error += " before answering (a TLS port? then use rediss://)";
  } else if (state_ == State::kHandshake && options_.tls.enabled) {
    // TLS 1.3 lets the client finish its handshake before the server checks
    // the client's certificate; its refusal (an alert, then a close) often
    // arrives as a reset that hides the alert.
    error +=
        " right after the TLS handshake (did the server refuse this client? does it require "
        "a client certificate, tls_cert and tls_key, signed by a CA it trusts?)";
  }
  Lost(Unavailable("connection to " + Address() + " lost: " + error));
}

void Connection::OnSocketClosed() {
  --open_sockets_;
  MaybeFinishClose();
}

void Connection::OnSocketData(const char* data, size_t size) {
  heard_from_server_ = true;
  queue_.HeardFromServer(scheduler_->NowMs());
  if (tls_ == nullptr) {
    ReadReplies(data, size);
    return;
  }
  std::string plain;
  std::string wire;
  Status status = tls_->Receive(data, size, &plain, &wire);
  if (!wire.empty() && socket_ != nullptr) socket_->Write({std::move(wire)});
  if (!status.ok()) {
    Lost(status);
    return;
  }
  if (state_ == State::kTls && tls_->handshake_done()) {
    uint64_t attempt = attempt_;
    SendHandshake();
    if (attempt != attempt_) return;
  }
  if (!plain.empty()) ReadReplies(plain.data(), plain.size());
}

void Connection::ReadReplies(const char* data, size_t size) {
  uint64_t attempt = attempt_;
  if (redisReaderFeed(reader_, data, size) != REDIS_OK) {
    Lost(Unavailable("protocol error from " + Address() + ": " + reader_->errstr));
    return;
  }
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
      Lost(Unavailable("protocol error from " + Address() + ": " + reader_->errstr));
      return;
    }
    if (raw == nullptr) return;
    Reply reply = ToReply(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    if (!Dispatch(reply)) return;
    // A callback may have closed us or lost this connection: the reader then
    // belongs to an attempt that is over.
    if (closing_ || attempt != attempt_) return;
  }
}

// Returns false when the reply ended the connection.
bool Connection::Dispatch(const Reply& reply) {
  CommandCallback callback;
  if (queue_.PopReply(&callback)) {
    // A timed-out command's late reply is read and dropped: its caller has
    // already been told.
    if (callback) callback(Status::Ok(), reply);
    return true;
  }
  if (mode_ != Mode::kCommand && state_ == State::kReady) {
    if (handlers_.on_push) handlers_.on_push(reply);
    return true;
  }
  Lost(Unavailable("unexpected reply from " + Address() + " with no command waiting"));
  return false;
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
    Defer(std::move(callback), Unavailable("not connected: " + last_error_.message()));
  } else if (queue_.unwritten_bytes() + socket_->unwritten_bytes() > options_.max_unwritten_bytes) {
    Defer(std::move(callback),
          Unavailable("write buffer to " + Address() + " full (" +
                      std::to_string(options_.max_unwritten_bytes) + " bytes unwritten)"));
  } else if (!queue_.Push(argv, callback, scheduler_->NowMs())) {
    Defer(std::move(callback), Status(Code::kInvalidArgument, "command cannot be formatted"));
  } else {
    ScheduleFlush();
    ArmCommandTimer();
  }
}

void Connection::ScheduleFlush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  scheduler_->Defer([this] {
    flush_scheduled_ = false;
    if (closing_) {
      MaybeFinishClose();
      return;
    }
    Flush();
  });
}

// One write for everything queued since the last one: commands issued in the
// same loop turn travel together.
void Connection::Flush() {
  if (socket_ == nullptr || queue_.unwritten_bytes() == 0) return;
  std::vector<std::string> buffers = queue_.TakeUnwritten();
  if (tls_ != nullptr) {
    std::string wire;
    for (const std::string& buffer : buffers) {
      Status status = tls_->Send(buffer, &wire);
      if (!status.ok()) {
        Lost(status);
        return;
      }
    }
    buffers.clear();
    buffers.push_back(std::move(wire));
  }
  socket_->Write(std::move(buffers));
}

// One timer for all commands, at the queue's next due time.
void Connection::ArmCommandTimer() {
  if (state_ != State::kReady) return;
  uint64_t due = queue_.NextDue();
  if (due == UINT64_MAX) return;
  if (command_timer_.valid() && command_timer_.due <= due) return;
  scheduler_->Cancel(command_timer_);
  uint64_t now = scheduler_->NowMs();
  command_timer_ = scheduler_->After(due > now ? due - now : 0, [this] { OnCommandTimer(); });
}

void Connection::OnCommandTimer() {
  command_timer_ = {};
  if (state_ != State::kReady) return;
  uint64_t now = scheduler_->NowMs();
  if (queue_.SilentTooLong(now)) {
    Lost(Unavailable("no reply from " + Address() + " for " + std::to_string(LivenessMs(options_)) +
                     " ms: connection torn down"));
    return;
  }
  std::vector<CommandCallback> expired = queue_.TakeExpired(now);
  ArmCommandTimer();
  Status timeout(Code::kTimeout, "command timed out after " +
                                     std::to_string(options_.command_timeout_ms) + " ms on " +
                                     Address());
  // Each is a caller's answer: they run even if one of them closes us.
  for (CommandCallback& callback : expired) callback(timeout, Reply{});
}

bool Connection::Subscribe(const std::vector<std::string>& channels) {
  if (state_ != State::kReady || mode_ == Mode::kCommand || channels.empty()) return false;
  std::vector<std::string> argv{mode_ == Mode::kShardedSubscriber ? "SSUBSCRIBE" : "SUBSCRIBE"};
  argv.insert(argv.end(), channels.begin(), channels.end());
  CommandCallback none;
  queue_.Push(argv, none, scheduler_->NowMs(), /*with_deadline=*/false);
  ScheduleFlush();
  return true;
}

bool Connection::Unsubscribe(const std::vector<std::string>& channels) {
  if (state_ != State::kReady || mode_ == Mode::kCommand || channels.empty()) return false;
  std::vector<std::string> argv{mode_ == Mode::kShardedSubscriber ? "SUNSUBSCRIBE" : "UNSUBSCRIBE"};
  argv.insert(argv.end(), channels.begin(), channels.end());
  CommandCallback none;
  queue_.Push(argv, none, scheduler_->NowMs(), /*with_deadline=*/false);
  ScheduleFlush();
  return true;
}

void Connection::Defer(CommandCallback callback, Status status) {
  deferred_.emplace_back(std::move(callback), std::move(status));
  if (deferred_scheduled_) return;
  deferred_scheduled_ = true;
  scheduler_->Defer([this] { RunDeferred(); });
}

void Connection::RunDeferred() {
  deferred_scheduled_ = false;
  std::deque<std::pair<CommandCallback, Status>> batch;
  batch.swap(deferred_);  // callbacks may defer more; those run next turn
  for (auto& [callback, status] : batch) {
    if (callback) callback(status, Reply{});
  }
  MaybeFinishClose();
}

void Connection::Close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  done_ = std::move(done);
  Status closed(Code::kClosed, "connection closed");
  DropSocket();
  CancelResolve();
  CancelLookup();
  if (watcher_ != nullptr) watcher_->Close([this] { ChildGone(); });
  state_ = State::kClosed;
  scheduler_->Cancel(attempt_timer_);
  scheduler_->Cancel(command_timer_);
  for (auto& entry : deferred_) entry.second = closed;
  for (auto& [callback, status] : queue_.TakeAll(closed, closed)) {
    Defer(std::move(callback), std::move(status));
  }
  if (!deferred_scheduled_) {  // done comes from the loop, never from inside Close
    deferred_scheduled_ = true;
    scheduler_->Defer([this] { RunDeferred(); });
  }
}

// The object's life ends when nothing of it is left on the loop: no deferred
// callback, no scheduled flush, no socket waiting for its close callback.
void Connection::MaybeFinishClose() {
  if (!closing_ || deferred_scheduled_ || flush_scheduled_ || open_sockets_ > 0 ||
      open_children_ > 0) {
    return;
  }
  std::function<void()> done = std::move(done_);
  delete this;
  if (done) done();
}

}  // namespace

RedisConnection* RedisConnection::Create(uv_loop_t* loop, Scheduler* scheduler,
                                         const RedisOptions& options, Mode mode, Handlers handlers,
                                         bool keep_loop_alive) {
  IgnoreDefaultSigpipe();
  auto* connection =
      new Connection(loop, scheduler, options, mode, std::move(handlers), keep_loop_alive);
  connection->Start();
  return connection;
}

}  // namespace singleflight::internal
