// RedisConnection: the library's own Redis connection on a libuv loop — TCP,
// unix socket or TLS — with the timeouts, reconnects and error reporting
// that hiredis 0.14's async layer lacks. hiredis is used only for what it
// does well: formatting commands and parsing replies.
//
// Contract:
// - Every Command callback runs exactly once: with the reply, or with a non-ok
//   Status. Never synchronously inside Command(). Never after Close's `done`.
//   The code says whether the command may have run (lib/redis_errors.h):
//   kUnavailable — never written (not connected, write buffer full, or lost
//   with the connection before it was written): it did not run;
//   kTimeout — written, but no answer (command timeout, dropped connection):
//   it may have run, now or later;
//   kClosed — Close() ended it, written or not.
// - A command past command_timeout_ms gets kTimeout at once; its reply, if it
//   comes, is read and discarded, so the next reply still finds its command.
//   The connection is torn down only when the server has sent nothing for
//   the liveness bound (RedisOptions::liveness_timeout_ms) while a command
//   waits: a slow server is not a dead one, and rebuilding the connection on
//   every slow reply would multiply load exactly when the server is busiest.
// - Commands issued in one loop turn go out in one write (pipelining). The
//   bytes not yet taken by the kernel are bounded by max_unwritten_bytes;
//   past it a command fails with kUnavailable.
// - The connection (re)connects by itself, forever, with ReconnectBackoff,
//   until Close. Host names are resolved with uv_getaddrinfo; every address
//   is tried in the resolver's order.
// - TLS (RedisOptions::tls) handshakes before anything else; a TLS failure
//   is an attempt failure whose message names its cause (lib/tls_session.h).
// - AUTH and SELECT from RedisOptions, then a PING, run before the connection
//   counts as up; a failure there (e.g. WRONGPASS) is reported through
//   on_state with its message and retried with backoff.
// - In subscriber mode, every reply after the handshake (subscribe and
//   unsubscribe confirmations, messages) goes to on_push in arrival order;
//   Subscribe()/Unsubscribe() have no per-command callback (RESP2's model).
//   The sharded subscriber mode is the same with SSUBSCRIBE/SUNSUBSCRIBE
//   (Redis Cluster's sharded pub/sub; its pushes are ssubscribe, smessage,
//   sunsubscribe, and error replies such as MOVED also go to on_push).
// - Command() while the connection is not ready (connecting, backing off,
//   mid-handshake) fails fast with kUnavailable, deferred to the loop, rather
//   than queueing: callers have their own deadlines and fallbacks, and a queue
//   would only hold work hostage to an outage. The message carries the last
//   connection error.
// - on_state(true) comes once per established connection; on_state(false)
//   after a lost connection and after every failed attempt, so it repeats
//   while Redis stays down. A lost connection reports its down before the
//   callbacks of the commands it carried run. No handler runs after Close().
// - A connect, command or liveness timeout of 0 disables it.
// - Dead peers: TCP keepalive (5 s idle, 3 probes 2 s apart) and
//   TCP_USER_TIMEOUT (11 s) on every TCP socket (lib/socket_stream.cpp).
//
// Deferred callbacks and every timer go through the group's Scheduler; the
// only libuv handle of a connection is its socket.
//
// SIGPIPE: libuv writes with write(), and a write to a peer-closed socket
// raises SIGPIPE, which kills a process by default. The first Create() sets
// SIGPIPE to SIG_IGN if (and only if) it is still SIG_DFL; a handler or an
// ignore the application installed is left alone.
//
// Lifetime: created with new, freed by itself after Close(done) completes
// (done runs from the loop, after every pending callback and after the socket's
// close callback). The Scheduler must outlive it. Not thread-safe: use from
// the loop's thread. Handlers and callbacks must not throw.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "redis_reply.h"
#include "scheduler.h"
#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

class RedisConnection {
 public:
  enum class Mode { kCommand, kSubscriber, kShardedSubscriber };

  struct Handlers {
    // Called when the connection becomes ready (after AUTH/SELECT) — also
    // after every reconnect — and when it goes down (status says why).
    std::function<void(bool up, const Status& why)> on_state;
    // Subscriber mode only: every pub/sub reply, in arrival order.
    std::function<void(const Reply& push)> on_push;
  };
  using CommandCallback = std::function<void(const Status& status, const Reply& reply)>;

  // Starts connecting from the loop. keep_loop_alive: Options::keep_loop_alive
  // (lib/loop_ref.h), for the socket.
  static RedisConnection* Create(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options,
                                 Mode mode, Handlers handlers, bool keep_loop_alive = true);

  virtual ~RedisConnection() = default;

  virtual bool connected() const = 0;

  // Command mode: sends argv (binary-safe). The callback contract is above.
  // A Redis error reply (e.g. NOSCRIPT) is a reply with Type::kError and an ok
  // status: it is the server's answer, not a transport failure.
  virtual void Command(std::vector<std::string> argv, CommandCallback callback) = 0;

  // Subscriber modes: sends SUBSCRIBE/UNSUBSCRIBE (SSUBSCRIBE/SUNSUBSCRIBE
  // when sharded) for the channels. Returns false when not connected
  // (nothing was sent).
  virtual bool Subscribe(const std::vector<std::string>& channels) = 0;
  virtual bool Unsubscribe(const std::vector<std::string>& channels) = 0;

  // Fails pending commands with kClosed, closes the socket,
  // then calls done (which may be empty) and frees this object. Works in any
  // state (resolving, connecting, backing off, ready). Call it once; it may be
  // called from inside any handler or callback of this connection.
  virtual void Close(std::function<void()> done) = 0;
};

}  // namespace singleflight::internal
