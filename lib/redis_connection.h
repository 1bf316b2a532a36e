// RedisConnection: one hiredis async connection on a libuv loop, with the
// timeouts, reconnects and error reporting that hiredis 0.14 lacks.
//
// Contract:
// - Every Command callback runs exactly once: with the reply, or with a non-ok
//   Status. Never synchronously inside Command(). Never after Close's `done`.
//   The code says whether the command may have run (lib/redis_errors.h):
//   kUnavailable — never written (not connected): it did not run;
//   kTimeout — written, but the answer was lost (command timeout, dropped
//   connection): it may have run, now or later;
//   kClosed — Close() ended it, written or not.
// - The connection (re)connects by itself, forever, with exponential backoff
//   and full jitter, until Close. Host names are resolved with uv_getaddrinfo.
// - AUTH and SELECT from RedisOptions run before the connection counts as up;
//   a failure there (e.g. WRONGPASS) is reported through on_state with its
//   message and retried with backoff.
// - A command that misses command_timeout_ms fails, and the connection is torn
//   down and rebuilt (hiredis cannot cancel one command).
// - In subscriber mode, every pub/sub reply (subscribe/unsubscribe
//   confirmations and messages) goes to on_push; callers of Subscribe()/
//   Unsubscribe() get no per-command callback (that is hiredis's RESP2 model).
//
// - Command() while the connection is not ready (connecting, backing off,
//   mid-handshake) fails fast with kUnavailable, deferred to the loop, rather
//   than queueing: callers have their own deadlines and fallbacks, and a queue
//   would only hold work hostage to an outage. The message carries the last
//   connection error.
// - on_state(true) comes once per established connection; on_state(false)
//   after a lost connection and after every failed attempt, so it repeats
//   while Redis stays down. No handler runs after Close().
// - A connect or command timeout of 0 disables that timeout.
// - Dead peers: TCP keepalive (5 s idle, 3 probes 2 s apart) and
//   TCP_USER_TIMEOUT (11 s) on every TCP socket; sockets are close-on-exec.
//   A paused-but-alive server is caught only by command timeouts.
//
// SIGPIPE: hiredis writes with write(), and a write to a peer-closed socket
// raises SIGPIPE, which kills a process by default. The first Create() sets
// SIGPIPE to SIG_IGN if (and only if) it is still SIG_DFL; a handler or an
// ignore the application installed is left alone. Per-socket suppression
// (MSG_NOSIGNAL) is impossible with hiredis's plain write().
//
// Lifetime: created with new, freed by itself after Close(done) completes
// (done runs from the loop, after every pending callback). Not thread-safe:
// use from the loop's thread. Handlers and callbacks must not throw.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "redis_reply.h"
#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

class RedisConnection {
 public:
  enum class Mode { kCommand, kSubscriber };

  struct Handlers {
    // Called when the connection becomes ready (after AUTH/SELECT) — also
    // after every reconnect — and when it goes down (status says why).
    std::function<void(bool up, const Status& why)> on_state;
    // Subscriber mode only: every pub/sub reply, in arrival order.
    std::function<void(const Reply& push)> on_push;
  };
  using CommandCallback = std::function<void(const Status& status, const Reply& reply)>;

  // Starts connecting at once. keep_loop_alive: Options::keep_loop_alive
  // (lib/loop_ref.h).
  static RedisConnection* Create(uv_loop_t* loop, const RedisOptions& options, Mode mode,
                                 Handlers handlers, bool keep_loop_alive = true);

  virtual ~RedisConnection() = default;

  virtual bool connected() const = 0;

  // Command mode: sends argv (binary-safe). The callback contract is above.
  // A Redis error reply (e.g. NOSCRIPT) is a reply with Type::kError and an ok
  // status: it is the server's answer, not a transport failure.
  virtual void Command(std::vector<std::string> argv, CommandCallback callback) = 0;

  // Subscriber mode: sends SUBSCRIBE/UNSUBSCRIBE for the channels. Returns
  // false when not connected (nothing was sent).
  virtual bool Subscribe(const std::vector<std::string>& channels) = 0;
  virtual bool Unsubscribe(const std::vector<std::string>& channels) = 0;

  // Fails pending commands with kClosed, closes the socket and every handle,
  // then calls done (which may be empty) and frees this object. Works in any
  // state (resolving, connecting, backing off, ready). Call it once; it may be
  // called from inside any handler or callback of this connection.
  virtual void Close(std::function<void()> done) = 0;
};

}  // namespace singleflight::internal
