// Subscriber: the process's pub/sub, multiplexed over one subscriber
// RedisConnection and shared by every listener of every channel.
//
// A channel is subscribed while it has at least one listener: the first Add
// sends SUBSCRIBE, the last Remove sends UNSUBSCRIBE, and there is exactly one
// UNSUBSCRIBE per SUBSCRIBE (hiredis 0.14 misroutes, or aborts on, anything
// else). Subscriptions started in the same loop tick go out as one command.
// After a reconnect every live channel is subscribed again and its listeners
// get OnSubscribed again: pub/sub is at-most-once, so a listener must re-check
// whatever it waits for whenever OnSubscribed runs.
//
// Sharded (Redis Cluster, one Subscriber per node): SSUBSCRIBE/SUNSUBSCRIBE,
// one channel per command (a command's channels must share a slot). The
// server may end a subscription itself (its slot moved: an unasked
// sunsubscribe) or refuse it (MOVED: this node does not own the slot); either
// way the channel is left with its listeners but unsubscribed, and
// on_dropped tells the owner, which moves the listeners to the slot's new
// owner (Remove here, Add there).
//
// Threading and lifetime: everything happens on the loop's thread. Close(done)
// stops every listener call at once and calls done from the loop once the
// connection is closed; the owner may then destroy the Subscriber. Destroying
// it without Close closes it without a callback. Close may be called from
// inside a listener call; destroying the Subscriber there may not.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "redis_connection.h"
#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

class Subscriber {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // The channel's subscription is confirmed; also called again after every
    // reconnect's re-subscription (the listener must then re-check state,
    // because messages during the outage are lost). Never inside Add.
    virtual void OnSubscribed(std::string_view channel) = 0;
    // A message on the channel. Both views are valid during the call only.
    virtual void OnMessage(std::string_view channel, std::string_view payload) = 0;
  };

  struct Handlers {
    // The subscriber connection went up or down (see RedisConnection).
    std::function<void(bool up, const Status& why)> on_state;
    // Sharded only: the server ended or refused the channel's subscription
    // (see above). Its listeners stay until the owner removes them.
    std::function<void(const std::string& channel)> on_dropped;
  };

  // Makes the subscriber's connection, given the handlers it must call.
  using ConnectionFactory = std::function<RedisConnection*(RedisConnection::Handlers)>;

  // Creates the subscriber connection, which starts connecting at once.
  // keep_loop_alive: Options::keep_loop_alive (lib/loop_ref.h).
  Subscriber(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options, Handlers handlers,
             bool keep_loop_alive = true, bool sharded = false);
  // The same over a connection of the caller's making: the seam through which
  // tests and fuzzers play the server (confirmations, messages, garbage).
  Subscriber(uv_loop_t* loop, const ConnectionFactory& make_connection, Handlers handlers,
             bool keep_loop_alive = true, bool sharded = false);
  ~Subscriber();
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // Adds a listener (a listener is added at most once per channel). The
  // first listener of a channel sends SUBSCRIBE; a listener added to an
  // already-confirmed channel gets OnSubscribed from the loop, later.
  void Add(const std::string& name, Listener* listener);
  // Removes it; when the last listener leaves, sends exactly one UNSUBSCRIBE.
  // After Remove returns, that listener is never called again for the
  // channel. Removing a listener that is not there does nothing.
  void Remove(const std::string& name, Listener* listener);

  bool connected() const;

  // After done (and already from the moment Close returns) no listener and no
  // handler is called. Call it once.
  void Close(std::function<void()> done);

 private:
  struct Channel {
    std::string name;
    std::unordered_set<Listener*> listeners;
    // (UN)SUBSCRIBEs sent on this connection and not yet confirmed. Redis
    // confirms them in order, so the channel's subscription is settled only
    // when this is back to zero.
    int in_flight = 0;
    bool subscribe_sent = false;  // the last command sent for it was SUBSCRIBE
    bool confirmed = false;       // subscribed and confirmed on this connection
  };
  using ChannelPtr = std::shared_ptr<Channel>;  // shared so dispatch survives erase

  void OnState(bool up, const Status& why);
  void OnPush(const Reply& push);
  void OnConfirmed(const ChannelPtr& channel, bool subscribed);
  void NotifySubscribed(const ChannelPtr& channel);
  void Deliver(const ChannelPtr& channel, std::string_view payload);
  void SubscribeSoon(const ChannelPtr& channel);
  void FlushSubscribes();
  void SendSubscribe(const std::vector<ChannelPtr>& channels);
  void EraseIfIdle(const ChannelPtr& channel);
  void Drop(const ChannelPtr& channel);
  void OnErrorPush(const Reply& push);
  void Wake();
  static void OnIdle(uv_idle_t* idle) noexcept;

  Handlers handlers_;
  bool sharded_;  // SSUBSCRIBE, one channel per command
  // Sharded only: every (S)SUB/UNSUBSCRIBE sent and not yet answered, oldest
  // first, so that an error reply (which names no channel) finds its channel.
  std::deque<ChannelPtr> unanswered_;
  RedisConnection* connection_;  // null once closed (it frees itself)
  bool closed_ = false;
  std::unordered_map<std::string, ChannelPtr> channels_;
  std::vector<ChannelPtr> to_subscribe_;                     // batched until the next loop turn
  std::vector<std::pair<ChannelPtr, Listener*>> to_notify_;  // deferred OnSubscribed
  uv_idle_t* idle_;  // heap-allocated: it may outlive this object until closed
};

}  // namespace singleflight::internal
