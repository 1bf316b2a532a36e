#include "subscriber.h"

#include <algorithm>
#include <utility>

#include "loop_ref.h"

namespace singleflight::internal {
namespace {

// Keeps one re-subscription command after a reconnect at a modest size.
constexpr size_t kMaxChannelsPerCommand = 1000;

bool IsText(const Reply& reply) {
  return reply.type == Reply::Type::kString || reply.type == Reply::Type::kStatus;
}

}  // namespace

Subscriber::Subscriber(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options,
                       Handlers handlers, bool keep_loop_alive, bool sharded)
    : Subscriber(
          loop,
          [loop, scheduler, &options, keep_loop_alive,
           sharded](RedisConnection::Handlers connection_handlers) {
            return RedisConnection::Create(loop, scheduler, options,
                                           sharded ? RedisConnection::Mode::kShardedSubscriber
                                                   : RedisConnection::Mode::kSubscriber,
                                           std::move(connection_handlers), keep_loop_alive);
          },
          std::move(handlers), keep_loop_alive, sharded) {}

Subscriber::Subscriber(uv_loop_t* loop, const ConnectionFactory& make_connection, Handlers handlers,
                       bool keep_loop_alive, bool sharded)
    : handlers_(std::move(handlers)), sharded_(sharded), idle_(new uv_idle_t) {
  uv_idle_init(loop, idle_);
  KeepsLoopAlive(idle_, keep_loop_alive);
  idle_->data = this;
  RedisConnection::Handlers connection_handlers;
  connection_handlers.on_state = [this](bool up, const Status& why) { OnState(up, why); };
  connection_handlers.on_push = [this](const Reply& push) { OnPush(push); };
  connection_ = make_connection(std::move(connection_handlers));
}

Subscriber::~Subscriber() {
  Close(nullptr);
}

bool Subscriber::connected() const {
  return !closed_ && connection_->connected();
}

void Subscriber::Add(const std::string& name, Listener* listener) {
  if (closed_) return;
  ChannelPtr& slot = channels_[name];
  if (!slot) {
    slot = std::make_shared<Channel>();
    slot->name = name;
  }
  ChannelPtr channel = slot;
  if (!channel->listeners.insert(listener).second) return;
  if (channel->confirmed) {
    to_notify_.emplace_back(channel, listener);
    Wake();
  } else if (!channel->subscribe_sent) {
    SubscribeSoon(channel);
  }
  // Otherwise its SUBSCRIBE is on the way and the confirmation tells everyone.
}

void Subscriber::Remove(const std::string& name, Listener* listener) {
  if (closed_) return;
  auto it = channels_.find(name);
  if (it == channels_.end()) return;
  ChannelPtr channel = it->second;
  if (channel->listeners.erase(listener) == 0 || !channel->listeners.empty()) return;
  if (channel->subscribe_sent) {
    channel->subscribe_sent = false;
    channel->confirmed = false;
    if (connection_->Unsubscribe({name})) {
      ++channel->in_flight;
      if (sharded_) unanswered_.push_back(channel);
    } else {
      // Only when the context is gone; the new one starts without it.
      channel->in_flight = 0;
    }
  }
  EraseIfIdle(channel);
}

// A channel without listeners stays in the table until every command sent
// for it is confirmed, so that each reply still finds its entry.
void Subscriber::EraseIfIdle(const ChannelPtr& channel) {
  if (!channel->listeners.empty() || channel->in_flight > 0 || channel->subscribe_sent) return;
  auto it = channels_.find(channel->name);
  if (it != channels_.end() && it->second == channel) channels_.erase(it);
}

void Subscriber::SubscribeSoon(const ChannelPtr& channel) {
  if (!connection_->connected()) return;  // the reconnect subscribes every channel
  to_subscribe_.push_back(channel);
  Wake();
}

void Subscriber::FlushSubscribes() {
  std::vector<ChannelPtr> batch;
  for (ChannelPtr& channel : to_subscribe_) {
    // Skip channels already sent in this batch, emptied, or erased meanwhile.
    if (channel->subscribe_sent || channel->listeners.empty()) continue;
    channel->subscribe_sent = true;
    batch.push_back(std::move(channel));
  }
  to_subscribe_.clear();
  SendSubscribe(batch);
}

void Subscriber::SendSubscribe(const std::vector<ChannelPtr>& channels) {
  const size_t per_command = sharded_ ? 1 : kMaxChannelsPerCommand;
  for (size_t begin = 0; begin < channels.size(); begin += per_command) {
    size_t end = std::min(channels.size(), begin + per_command);
    std::vector<std::string> names;
    names.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) names.push_back(channels[i]->name);
    bool sent = connection_->Subscribe(names);
    for (size_t i = begin; i < end; ++i) {
      Channel& channel = *channels[i];
      channel.subscribe_sent = sent;  // if not sent, the reconnect will
      channel.confirmed = false;
      if (sent) ++channel.in_flight;
      if (sent && sharded_) unanswered_.push_back(channels[i]);
    }
  }
}

void Subscriber::OnState(bool up, const Status& why) {
  if (closed_) return;
  // Either way the old context's subscriptions are gone with it.
  for (auto it = channels_.begin(); it != channels_.end();) {
    Channel& channel = *it->second;
    channel.in_flight = 0;
    channel.subscribe_sent = false;
    channel.confirmed = false;
    it = channel.listeners.empty() ? channels_.erase(it) : std::next(it);
  }
  to_subscribe_.clear();
  unanswered_.clear();
  if (up) {
    std::vector<ChannelPtr> all;
    all.reserve(channels_.size());
    for (auto& entry : channels_) all.push_back(entry.second);
    SendSubscribe(all);
  }
  if (handlers_.on_state) handlers_.on_state(up, why);
}

// Every reply is checked against the table by its channel name (element 1):
// hiredis may hand a reply to the wrong callback, and a stale confirmation
// must not touch a newer entry's state.
void Subscriber::OnPush(const Reply& push) {
  if (closed_) return;
  if (push.is_error()) return OnErrorPush(push);
  if (push.type != Reply::Type::kArray || push.elements.size() < 3) return;
  const Reply& kind = push.elements[0];
  const Reply& name = push.elements[1];
  if (!IsText(kind) || !IsText(name)) return;
  auto it = channels_.find(name.str);
  if (it == channels_.end()) return;
  ChannelPtr channel = it->second;  // keeps it alive while listeners run
  // A plain connection never gets the sharded kinds, and vice versa.
  const bool message = kind.str == (sharded_ ? "smessage" : "message");
  const bool subscribe = kind.str == (sharded_ ? "ssubscribe" : "subscribe");
  const bool unsubscribe = kind.str == (sharded_ ? "sunsubscribe" : "unsubscribe");
  if (message && push.elements[2].type == Reply::Type::kString) {
    Deliver(channel, push.elements[2].str);
  } else if (subscribe || unsubscribe) {
    if (sharded_ && unsubscribe && channel->in_flight == 0) {
      // Nothing of ours was on the way: the server ended it (a slot move).
      if (channel->subscribe_sent) Drop(channel);
      return;
    }
    if (sharded_) {
      auto mine = std::find(unanswered_.begin(), unanswered_.end(), channel);
      if (mine != unanswered_.end()) unanswered_.erase(mine);
    }
    OnConfirmed(channel, subscribe);
  }
}

// Sharded only: an error answers the oldest unanswered command, e.g. MOVED
// for an SSUBSCRIBE sent to a node that no longer owns the slot.
void Subscriber::OnErrorPush(const Reply& push) {
  (void)push;
  if (!sharded_ || unanswered_.empty()) return;
  ChannelPtr channel = std::move(unanswered_.front());
  unanswered_.pop_front();
  if (channel->in_flight > 0) --channel->in_flight;
  if (channel->in_flight == 0 && channel->subscribe_sent) {
    Drop(channel);
  } else {
    EraseIfIdle(channel);
  }
}

void Subscriber::Drop(const ChannelPtr& channel) {
  channel->subscribe_sent = false;
  channel->confirmed = false;
  if (handlers_.on_dropped) handlers_.on_dropped(channel->name);
  if (!closed_) EraseIfIdle(channel);
}

void Subscriber::OnConfirmed(const ChannelPtr& channel, bool subscribed) {
  if (channel->in_flight > 0) --channel->in_flight;
  if (channel->in_flight > 0) return;  // a later command for it is still on the way
  if (subscribed && channel->subscribe_sent) {
    channel->confirmed = true;
    NotifySubscribed(channel);
  } else {
    EraseIfIdle(channel);
  }
}

// Listeners may add or remove listeners (themselves included) while we call
// them: iterate a snapshot and skip whoever left meanwhile.
// Not const: listeners re-enter and change the table.
void Subscriber::NotifySubscribed(  // NOLINT(readability-make-member-function-const)
    const ChannelPtr& channel) {
  std::vector<Listener*> snapshot(channel->listeners.begin(), channel->listeners.end());
  for (Listener* listener : snapshot) {
    if (closed_ || !channel->confirmed) return;
    if (channel->listeners.count(listener) != 0) listener->OnSubscribed(channel->name);
  }
}

void Subscriber::Deliver(  // NOLINT(readability-make-member-function-const)
    const ChannelPtr& channel, std::string_view payload) {
  std::vector<Listener*> snapshot(channel->listeners.begin(), channel->listeners.end());
  for (Listener* listener : snapshot) {
    if (closed_) return;
    if (channel->listeners.count(listener) != 0) listener->OnMessage(channel->name, payload);
  }
}

void Subscriber::Wake() {
  if (!closed_) uv_idle_start(idle_, OnIdle);
}

void Subscriber::OnIdle(uv_idle_t* idle) noexcept {
  auto* self = static_cast<Subscriber*>(idle->data);
  self->FlushSubscribes();
  std::vector<std::pair<ChannelPtr, Listener*>> batch;
  batch.swap(self->to_notify_);
  for (auto& [channel, listener] : batch) {
    if (self->closed_) return;
    if (channel->confirmed && channel->listeners.count(listener) != 0) {
      listener->OnSubscribed(channel->name);
    }
  }
  if (self->to_subscribe_.empty() && self->to_notify_.empty()) uv_idle_stop(idle);
}

void Subscriber::Close(std::function<void()> done) {
  if (closed_) return;
  closed_ = true;
  channels_.clear();
  to_subscribe_.clear();
  to_notify_.clear();
  unanswered_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(idle_),
           [](uv_handle_t* handle) noexcept { delete reinterpret_cast<uv_idle_t*>(handle); });
  // The connection outlives us if need be; done must not touch this object.
  connection_->Close(std::move(done));
}

}  // namespace singleflight::internal
