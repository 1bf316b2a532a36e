// RedisLink: everything a flight needs from Redis, as one narrow seam.
//
// The real link (redis_link.cpp) runs the Lua scripts on the command
// connection and multiplexes channels on the subscriber connection; unit
// tests substitute a fake so the flight state machine can be driven without a
// server. A group in local-only mode has no link at all.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lua_scripts.h"
#include "redis_reply.h"
#include "scheduler.h"
#include "singleflight/options.h"
#include "singleflight/status.h"
#include "subscriber.h"

namespace singleflight::internal {

// A listener of one channel. It is the subscriber's own listener type, so the
// real link hands it to the Subscriber as is (no adapter, no allocation per
// follower); the channel name is dropped because it listens to one channel.
class ChannelListener : public Subscriber::Listener {
 public:
  // The subscription is live (also after each re-subscription on reconnect:
  // messages sent during an outage are lost, so the listener re-checks).
  virtual void OnSubscribed() = 0;
  virtual void OnMessage(std::string_view payload) = 0;

  void OnSubscribed(std::string_view) final { OnSubscribed(); }
  void OnMessage(std::string_view, std::string_view payload) final { OnMessage(payload); }
};

class RedisLink {
 public:
  using ReplyCallback = std::function<void(const Status& status, const Reply& reply)>;
  // up: the command connection is ready. Reported on every change, and
  // again (down) after every failed reconnect attempt. When a connection is
  // lost, its down is reported before the callbacks of the commands it was
  // carrying run: a flight that sees a down after such a callback knows a
  // reconnect attempt has failed since.
  using StateCallback = std::function<void(bool up, const Status& why)>;

  virtual ~RedisLink() = default;

  // Whether the command connection has been up at least once or has failed at
  // least once: before that, callers wait instead of degrading.
  virtual bool settled() const = 0;
  virtual bool up() const = 0;
  // Why the command connection is down (e.g. the server's WRONGPASS), so a
  // caller failed for it is told the real reason.
  virtual Status last_error() const = 0;
  // Runs a script; the callback runs exactly once, never inside RunScript.
  // Its status says whether the script may have run (lib/redis_errors.h):
  // ok (with the reply, maybe an error reply), kUnavailable (never sent),
  // kTimeout (sent, answer lost: it may have run), kClosed (after Close).
  virtual void RunScript(ScriptId script, std::vector<std::string> keys,
                         std::vector<std::string> args, ReplyCallback callback) = 0;
  // Adds/removes a listener of a channel. After Unlisten returns, the
  // listener is never called again.
  virtual void Listen(const std::string& channel, ChannelListener* listener) = 0;
  virtual void Unlisten(const std::string& channel, ChannelListener* listener) = 0;
  // Closes both connections; pending script callbacks get kClosed; then done.
  virtual void Close(std::function<void()> done) = 0;
};

// The real link over two RedisConnections (standalone, Sentinel), or, with
// RedisOptions::cluster, the cluster link (lib/cluster_link.h). `on_command_state` and
// `on_subscriber_state` report each connection's ups and downs.
// keep_loop_alive: Options::keep_loop_alive (lib/loop_ref.h).
std::unique_ptr<RedisLink> MakeRedisLink(uv_loop_t* loop, Scheduler* scheduler,
                                         const RedisOptions& options, bool keep_loop_alive,
                                         RedisLink::StateCallback on_command_state,
                                         RedisLink::StateCallback on_subscriber_state);

}  // namespace singleflight::internal
