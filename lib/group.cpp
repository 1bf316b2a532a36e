#include <cstdio>
#include <cstdlib>

#include "group_impl.h"
#include "key_naming.h"
#include "uv_scheduler.h"

namespace singleflight {
namespace internal {

GroupImpl::GroupImpl(Options options, Scheduler* scheduler, std::unique_ptr<RedisLink> link)
    : options_(std::move(options)),
      scheduler_(scheduler),
      link_(std::move(link)),
      l1_(options_.l1_max_entries, options_.l1_max_bytes) {
  options_status_ = ValidateOptions();
  leases_.set_link(link_.get());
  ListenForInvalidations();
}

void GroupImpl::ListenForInvalidations() {
  if (!link_ || !options_status_.ok()) return;
  invalidation_channel_ = InvalidationChannel(options_.key_prefix);
  link_->Listen(invalidation_channel_, &invalidations_);
}

void GroupImpl::InvalidationListener::OnSubscribed() {
  if (subscribed_once_) group_.l1_.Clear();
  subscribed_once_ = true;
}

void GroupImpl::InvalidationListener::OnMessage(std::string_view key) {
  ++group_.stats_.invalidations;
  group_.l1_.Erase(key);
}

GroupImpl::~GroupImpl() = default;

GroupImpl* GroupImpl::Create(uv_loop_t* loop, Options options) {
  bool use_redis = options.redis.enabled();
  bool keep_loop_alive = options.keep_loop_alive;
  auto* impl = new GroupImpl(std::move(options), new UvScheduler(loop, keep_loop_alive), nullptr);
  if (use_redis && impl->options_status_.ok()) {
    impl->link_ = MakeRedisLink(
        loop, impl->scheduler_, impl->options_.redis, keep_loop_alive,
        [impl](bool up, const Status&) { impl->OnLinkState(up); },
        [impl](bool up, const Status&) { impl->OnSubscriberState(up); });
    impl->leases_.set_link(impl->link_.get());
    impl->ListenForInvalidations();
  }
  return impl;
}

void GroupImpl::CheckThread() const {
#ifndef NDEBUG
  if (std::this_thread::get_id() != thread_) {
    std::fprintf(stderr,
                 "singleflight: a Group was used from a thread other than its loop's; "
                 "it is not thread-safe (see group.h)\n");
    std::abort();
  }
#endif
}

Status GroupImpl::ValidateOptions() const {
  Status prefix = ValidatePrefix(options_.key_prefix);
  if (!prefix.ok()) return prefix;
  auto bad = [](const char* what) {
    return Status(Code::kInvalidArgument, std::string("invalid option: ") + what);
  };
  if (options_.max_key_bytes == 0) return bad("max_key_bytes must be > 0");
  if (options_.lock_ttl_ms < 3) return bad("lock_ttl_ms must be >= 3");
  if (options_.producer_timeout_ms == 0) return bad("producer_timeout_ms must be > 0");
  if (options_.default_wait_timeout_ms == 0) return bad("default_wait_timeout_ms must be > 0");
  return Status::Ok();
}

Call GroupImpl::Reject(Status status) {
  ++stats_.rejected;
  Call call;
  call.status_ = std::move(status);
  return call;
}

Call GroupImpl::Do(std::string_view key, Producer producer, Callback callback,
                   CallOptions call_options) {
  CheckThread();
  if (closing_) return Reject(Status(Code::kClosed, "the group is closed"));
  if (!options_status_.ok()) return Reject(options_status_);
  Status key_status = ValidateKey(key, options_.max_key_bytes);
  if (!key_status.ok()) return Reject(key_status);
  if (!producer || !callback) {
    return Reject(Status(Code::kInvalidArgument, "producer and callback must be set"));
  }
  auto waiter = std::make_shared<Waiter>();
  waiter->callback = std::move(callback);
  Call call;
  call.waiter_ = waiter;

  if (auto value = l1_.Get(key, scheduler_->NowMs())) {
    ++stats_.calls;
    ++stats_.l1_hits;
    Resolve({waiter}, Status::Ok(), std::move(value), Source::kLocalCache);
    return call;
  }
  auto found = flights_.find(key);
  if (found != flights_.end()) {
    if (found->second->waiter_count() >= options_.max_waiters_per_flight) {
      return Reject(Status(Code::kUnavailable, "max_waiters_per_flight reached"));
    }
    ++stats_.calls;
    ++stats_.joins;
    waiter->joined = true;
    ArmDeadline(waiter, call_options.wait_timeout_ms);
    found->second->AddWaiter(std::move(waiter));
    return call;
  }
  // Flights detached by Forget still run their producers, so they take a
  // slot too: otherwise Do + Forget in a loop would have no bound.
  if (flights_.size() + detached_.size() >= options_.max_inflight_keys) {
    return Reject(Status(Code::kUnavailable, "max_inflight_keys reached"));
  }
  ++stats_.calls;
  auto flight = std::make_shared<Flight>(*this, std::string(key), std::move(producer));
  flights_.emplace(flight->key(), flight);
  ArmDeadline(waiter, call_options.wait_timeout_ms);
  flight->AddWaiter(std::move(waiter));
  flight->Start();
  return call;
}

void GroupImpl::ArmDeadline(const std::shared_ptr<Waiter>& waiter, uint32_t timeout_ms) {
  if (timeout_ms == 0) timeout_ms = options_.default_wait_timeout_ms;
  std::weak_ptr<Waiter> weak = waiter;
  waiter->deadline = scheduler_->After(timeout_ms, [this, weak] {
    auto waiter = weak.lock();
    if (!waiter || waiter->resolved) return;
    waiter->deadline = {};
    ++stats_.timeouts;
    ResolveOne(waiter, Status(Code::kTimeout, "wait_timeout passed before a result arrived"));
  });
}

void GroupImpl::ResolveOne(const std::shared_ptr<Waiter>& waiter, const Status& status) {
  auto flight = waiter->flight.lock();
  Resolve({waiter}, status, nullptr, Source::kNone);
  if (flight) flight->WaiterLeft();
}

void GroupImpl::Resolve(std::vector<std::shared_ptr<Waiter>> waiters, const Status& status,
                        std::shared_ptr<const std::string> value, Source source, bool degraded) {
  // Callers that already left (timeout, cancel) have their own delivery.
  EraseResolved(waiters);
  if (waiters.empty()) return;
  for (auto& waiter : waiters) {
    waiter->resolved = true;
    scheduler_->Cancel(waiter->deadline);
  }
  size_t live = waiters.size();
  Result result;
  result.status = status;
  result.value_ptr = status.ok() ? std::move(value) : nullptr;
  result.source = source;
  result.degraded = degraded;
  result.shared = live > 1 || (source != Source::kLed && result.value_ptr != nullptr);
  scheduler_->Defer([waiters = std::move(waiters), result = std::move(result)]() mutable {
    for (auto& waiter : waiters) {
      Callback callback = std::move(waiter->callback);
      waiter->callback = nullptr;
      Source own = result.source;
      if (waiter->joined && own != Source::kNone) result.source = Source::kJoined;
      try {
        callback(result);
      } catch (...) {
        // A callback must not throw (group.h); dropping the exception keeps
        // the other waiters and the loop alive.
      }
      result.source = own;
    }
  });
}

void GroupImpl::OnFlightFinished(Flight* flight) {
  auto found = flights_.find(flight->key());
  if (found != flights_.end() && found->second.get() == flight) flights_.erase(found);
  detached_.erase(flight);
}

void GroupImpl::Forget(std::string_view key) {
  CheckThread();
  if (closing_ || !ValidateKey(key, options_.max_key_bytes).ok()) return;
  l1_.Erase(key);
  auto found = flights_.find(key);
  if (found != flights_.end()) {
    found->second->Detach();
    // Keep the flight alive for its callers; later calls start a new one.
    auto flight = found->second;
    flights_.erase(found);
    detached_.emplace(flight.get(), flight);
  }
  if (link_) ForgetInRedis(std::string(key));
}

// A Forget must not vanish because Redis is not reachable right now: before
// the first connect, or after a dropped connection, it waits for the link
// (bounded, so an outage cannot grow it without limit).
void GroupImpl::ForgetInRedis(std::string key) {
  if (!link_->settled()) return QueueForget(std::move(key));
  FlightKeys names = NameFlight(options_.key_prefix, key);
  link_->RunScript(
      ScriptId::kForget, {names.result}, {InvalidationChannel(options_.key_prefix), key},
      [this, key](const Status& status, const Reply&) {
        // Forget is idempotent: resend whether or not it ran.
        bool lost = status.code() == Code::kUnavailable || status.code() == Code::kTimeout;
        if (lost && !closing_) QueueForget(key);
      });
}

void GroupImpl::QueueForget(std::string key) {
  if (forgets_to_retry_.size() < kMaxQueuedForgets) forgets_to_retry_.push_back(std::move(key));
}

Stats GroupImpl::stats() const {
  Stats copy = stats_;
  copy.inflight = flights_.size();
  return copy;
}

void GroupImpl::OnLinkState(bool up) {
  downs_since_up_ = up ? 0 : downs_since_up_ + 1;
  if (up) {
    if (ever_up_) ++stats_.reconnects;
    ever_up_ = true;
    leases_.OnLinkUp();
    auto forgets = std::move(forgets_to_retry_);
    forgets_to_retry_.clear();
    for (auto& key : forgets) ForgetInRedis(std::move(key));
  }
  auto waiting = std::move(waiting_for_link_);
  waiting_for_link_.clear();
  for (auto& flight : waiting) flight->OnLinkState(up);
}

void GroupImpl::OnSubscriberState(bool up) {
  if (!up) {
    ++stats_.subscriber_errors;
    return;
  }
  if (subscriber_ever_up_) ++stats_.subscriber_reconnects;
  subscriber_ever_up_ = true;
}

void GroupImpl::Close(std::function<void()> done) {
  CheckThread();
  if (done) close_done_.push_back(std::move(done));
  if (closing_) return;
  closing_ = true;
  Status closed(Code::kClosed, "the group was closed");
  std::vector<std::shared_ptr<Flight>> flights;
  for (auto& entry : flights_) flights.push_back(entry.second);
  for (auto& entry : detached_) flights.push_back(entry.second);
  // Flights waiting for the link are in one of the two tables already.
  for (auto& flight : flights) flight->Abort(closed);
  flights_.clear();
  detached_.clear();
  waiting_for_link_.clear();
  // Deferred tasks run in order: this one runs after every callback above.
  // The leases drain before any connection closes: completions written and
  // answered, locks released (docs/protocol.md, "Close").
  scheduler_->Defer([this] { leases_.Drain([this] { CloseLink(); }); });
}

void GroupImpl::CloseLink() {
  if (close_started_) return;
  close_started_ = true;
  auto shutdown_scheduler = [this] { scheduler_->Shutdown([this] { FinishClose(); }); };
  if (link_) {
    if (!invalidation_channel_.empty()) link_->Unlisten(invalidation_channel_, &invalidations_);
    link_->Close(shutdown_scheduler);
  } else {
    shutdown_scheduler();
  }
}

void GroupImpl::FinishClose() {
  auto dones = std::move(close_done_);
  if (on_free_) on_free_(stats());
  delete this;
  for (auto& done : dones) done();
}

}  // namespace internal

// --- the public facade ----------------------------------------------------------

bool Done::operator()(std::string value) const {
  if (!slot_ || slot_->used) return false;
  auto flight = slot_->flight.lock();
  return flight && flight->OnProduced(true, std::move(value));
}

bool Done::Fail(std::string message) const {
  if (!slot_ || slot_->used) return false;
  auto flight = slot_->flight.lock();
  return flight && flight->OnProduced(false, std::move(message));
}

void Done::OnAbandon(std::function<void()> on_abandon) const {
  if (!slot_ || !on_abandon) return;
  if (slot_->abandoned) return on_abandon();
  if (!slot_->used) slot_->on_abandon = std::move(on_abandon);
}

bool Call::Cancel() {
  auto waiter = waiter_.lock();
  if (!waiter || waiter->resolved) return false;
  auto flight = waiter->flight.lock();
  if (!flight) return false;
  flight->CancelWaiter(waiter);
  return true;
}

Group::Group(uv_loop_t* loop, Options options)
    : impl_(internal::GroupImpl::Create(loop, std::move(options))) {
  impl_->set_on_free([this](const Stats& last) {
    impl_ = nullptr;
    last_stats_ = last;
  });
}

Group::~Group() {
  if (!impl_) return;
  impl_->set_on_free(nullptr);
  impl_->Close(nullptr);
}

Call Group::Do(std::string_view key, Producer producer, Callback callback,
               CallOptions call_options) {
  if (!impl_) {
    Call call;
    call.status_ = Status(Code::kClosed, "the group is closed");
    return call;
  }
  return impl_->Do(key, std::move(producer), std::move(callback), call_options);
}

void Group::Forget(std::string_view key) {
  if (impl_) impl_->Forget(key);
}

Stats Group::stats() const {
  return impl_ ? impl_->stats() : last_stats_;
}

void Group::Close(std::function<void()> done) {
  if (impl_) {
    impl_->Close(std::move(done));
  } else if (done) {
    done();  // already closed: nothing is left to wait for
  }
}

}  // namespace singleflight
