// Sentinel: asking the sentinels where the master is, and hearing when it
// moves. Both run on RedisConnections of their own to the sentinels, so they
// get the same timeouts, TLS and AUTH handling as the data connections.
//
// Used by RedisConnection (lib/redis_connection.cpp) when
// RedisOptions::sentinel is enabled: a MasterLookup per connection attempt,
// one SwitchWatcher per connection.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "redis_connection.h"
#include "scheduler.h"
#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

// One question to the sentinels, in order until one answers: where is the
// master of RedisOptions::sentinel.master_name?
//
// Lifetime: owned by the caller; the callbacks capture it, so it stays alive
// until `on_gone`, which runs once, from the loop, when none of its sentinel
// connections is left. `found` runs at most once, never after Cancel().
class MasterLookup : public std::enable_shared_from_this<MasterLookup> {
 public:
  using Found = std::function<void(const Status& status, const std::string& host, int port)>;

  static std::shared_ptr<MasterLookup> Start(uv_loop_t* loop, Scheduler* scheduler,
                                             const RedisOptions& options, bool keep_loop_alive,
                                             Found found, std::function<void()> on_gone);
  void Cancel();

 private:
  MasterLookup(uv_loop_t* loop, Scheduler* scheduler, RedisOptions options, bool keep_loop_alive,
               Found found, std::function<void()> on_gone);
  void TryNext();
  void OnState(RedisConnection* asked, bool up, const Status& why);
  void OnReply(const Status& status, const Reply& reply);
  void GiveUp(const std::string& why);
  void Finish(const Status& status, const std::string& host, int port);
  void CloseConnection();

  uv_loop_t* loop_;
  Scheduler* scheduler_;
  RedisOptions options_;
  bool keep_loop_alive_;
  Found found_;  // empty once called or cancelled
  std::function<void()> on_gone_;
  size_t next_ = 0;                        // the next sentinel to ask
  RedisConnection* connection_ = nullptr;  // to the sentinel being asked
  int closing_ = 0;                        // connections whose Close has not finished
  std::string errors_;                     // why each sentinel asked so far failed
  std::shared_ptr<MasterLookup> self_;     // held until on_gone
};

// Listens to +switch-master on the first sentinel and reports each failover
// of our master as its new address. It reconnects by itself (a sentinel that
// is down only delays the news: the data connection also notices the old
// master's death itself).
//
// Lifetime: Close(done); no callback after Close.
class SwitchWatcher {
 public:
  using OnSwitch = std::function<void(const std::string& host, int port)>;
  SwitchWatcher(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options,
                bool keep_loop_alive, OnSwitch on_switch);
  void Close(std::function<void()> done);

 private:
  void OnPush(const Reply& push);

  std::string master_name_;
  OnSwitch on_switch_;
  RedisConnection* connection_;
};

// The RedisOptions of a connection to one sentinel: its address, the
// sentinels' credentials, the same TLS and timeouts, no db.
RedisOptions SentinelConnectionOptions(const RedisOptions& options,
                                       const SentinelOptions::Address& sentinel);

}  // namespace singleflight::internal
