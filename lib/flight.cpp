#include "flight.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "envelope.h"
#include "group_impl.h"
#include "token.h"

namespace singleflight::internal {
namespace {

uint64_t WallMs() {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  using std::chrono::system_clock;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

Flight::Flight(GroupImpl& group, std::string key, Producer producer)
    : group_(group), key_(std::move(key)), producer_(std::move(producer)) {
  if (group_.link()) names_ = NameFlight(group_.options().key_prefix, key_);
}

Flight::~Flight() = default;

bool Flight::distributed() const {
  return group_.link() != nullptr && !local_only_;
}

void Flight::AddWaiter(std::shared_ptr<Waiter> waiter) {
  waiter->flight = weak_from_this();
  waiters_.push_back(std::move(waiter));
  ++live_waiters_;
}

void Flight::WaiterLeft() {
  if (live_waiters_ > 0) --live_waiters_;
  // Departed callers are skipped at delivery; drop them once they are most of
  // the list, so a long flight with many short deadlines stays small.
  if (waiters_.size() >= 64 && live_waiters_ < waiters_.size() / 2) EraseResolved(waiters_);
  // A follower with nobody left to answer stops following; a leader goes on,
  // because its result fills the caches for the callers still to come.
  if (live_waiters_ == 0 && state_ == State::kFollowing) {
    Finish(Status(Code::kCancelled, "no caller left"), nullptr, Source::kNone, 0);
  }
}

void Flight::CancelWaiter(const std::shared_ptr<Waiter>& waiter) {
  ++group_.mutable_stats().cancels;
  group_.ResolveOne(waiter, Status(Code::kCancelled, "the caller cancelled its wait"));
}

void Flight::Start() {
  RedisLink* link = group_.link();
  if (link == nullptr) return Lead(false);
  if (!link->settled()) return group_.WaitForLink(shared_from_this());
  if (!link->up()) return OnCheckFailed(Check::kFirst, link->last_error());
  CheckRedis(Check::kFirst);
}

// --- the Redis check: get-or-lock -------------------------------------------

void Flight::CheckRedis(Check why) {
  state_ = state_ == State::kStarting ? State::kChecking : state_;
  if (token_.empty()) token_ = RandomToken();
  auto self = shared_from_this();
  group_.link()->RunScript(ScriptId::kGetOrLock, {names_.result, names_.lock},
                           {token_, std::to_string(group_.options().lock_ttl_ms)},
                           [self, why](const Status& status, const Reply& reply) {
                             self->OnCheckReply(why, status, reply);
                           });
}

void Flight::OnCheckReply(Check why, const Status& status, const Reply& reply) {
  if (state_ != State::kChecking && state_ != State::kFollowing) return;
  if (!status.ok() || reply.is_error() || reply.type != Reply::Type::kArray ||
      reply.elements.empty() || reply.elements[0].type != Reply::Type::kInteger) {
    ++group_.mutable_stats().redis_errors;
    Status why_failed =
        status.ok() ? Status(Code::kUnavailable, "unexpected reply: " + reply.str) : status;
    return OnCheckFailed(why, why_failed);
  }
  ++group_.mutable_stats().checks;
  long long answer = reply.elements[0].integer;
  if (answer == kGetOrLockHit && reply.elements.size() >= 2) {
    bool fallback = why == Check::kFallback || why == Check::kAfterMalformed;
    if (fallback) ++group_.mutable_stats().fallback_hits;
    return FinishFromEnvelope(reply.elements[1].str,
                              fallback ? Source::kFallbackGet : Source::kRedisCache, false);
  }
  if (answer == kGetOrLockAcquired) {
    if (live_waiters_ == 0) {
      // Nobody wants the value any more: hand the lease straight back.
      group_.link()->RunScript(ScriptId::kRelease, {names_.lock}, {token_},
                               [](const Status&, const Reply&) {});
      return Finish(Status(Code::kCancelled, "no caller left"), nullptr, Source::kNone, 0);
    }
    return Lead(state_ == State::kFollowing);
  }
  if (state_ == State::kChecking) return Follow();
  ArmFallback();
}

void Flight::OnCheckFailed(Check why, const Status& status) {
  if (why != Check::kFirst || state_ == State::kFollowing) {
    // Following already: Redis may come back; the fallback timer retries and
    // each caller's deadline bounds the wait.
    return ArmFallback();
  }
  ++group_.mutable_stats().degraded_calls;
  if (group_.options().when_redis_down == DegradedMode::kFailFast) {
    return Finish(Status(Code::kUnavailable, "Redis unavailable: " + status.message()), nullptr,
                  Source::kNone, 0);
  }
  local_only_ = true;
  Lead(false);
}

// --- following ----------------------------------------------------------------

void Flight::Follow() {
  state_ = State::kFollowing;
  listening_ = true;
  group_.link()->Listen(names_.channel, this);
  ArmFallback();
}

void Flight::ArmFallback() {
  if (state_ != State::kFollowing || fallback_timer_.valid()) return;
  auto weak = weak_from_this();
  fallback_timer_ = group_.scheduler().After(group_.options().fallback_interval_ms, [weak] {
    auto self = weak.lock();
    if (!self || self->state_ != State::kFollowing) return;
    self->fallback_timer_ = {};
    ++self->group_.mutable_stats().fallback_checks;
    self->CheckRedis(Check::kFallback);
  });
}

void Flight::OnSubscribed() {
  // Closes the race where the leader finished before the subscription
  // existed, and lets this process lead if the lock is free.
  if (state_ == State::kFollowing) CheckRedis(Check::kAfterSubscribe);
}

void Flight::OnMessage(std::string_view payload) {
  if (state_ != State::kFollowing) return;
  FinishFromEnvelope(payload, Source::kPubSub, true);
}

// A malformed message may mean we missed the real one, so ask Redis — but at
// most once per fallback interval: a flood of garbage on a channel must not
// turn into a flood of scripts (the fallback timer still runs meanwhile).
void Flight::RecheckAfterMalformed() {
  uint64_t now = group_.scheduler().NowMs();
  if (malformed_recheck_at_ != 0 &&
      now - malformed_recheck_at_ < group_.options().fallback_interval_ms) {
    return;
  }
  malformed_recheck_at_ = now;
  CheckRedis(Check::kAfterMalformed);
}

void Flight::FinishFromEnvelope(std::string_view bytes, Source source, bool from_message) {
  const Options& options = group_.options();
  Envelope envelope;
  Status decoded =
      DecodeEnvelope(bytes, DecodeLimits::ForMaxValue(options.max_value_bytes), &envelope);
  if (!decoded.ok() && !from_message && decoded.code() == Code::kTooLarge) {
    // A stored value over our bound (written by a process with a larger
    // max_value_bytes) will not shrink: answer now, as the README promises,
    // instead of waiting until it expires, past every caller's deadline.
    ++group_.mutable_stats().too_large;
    return Finish(Status(Code::kTooLarge, decoded.message()), nullptr, source, 0);
  }
  if (!decoded.ok()) {
    ++group_.mutable_stats().malformed_dropped;
    // Never trust a malformed message; ask Redis instead. A malformed stored
    // result is left to expire: the follower keeps waiting for a message.
    if (from_message) return RecheckAfterMalformed();
    if (state_ == State::kChecking) return Follow();
    return ArmFallback();
  }
  if (source == Source::kPubSub) ++group_.mutable_stats().pubsub_wakes;
  if (source == Source::kRedisCache) ++group_.mutable_stats().redis_hits;
  if (!envelope.ok) {
    return Finish(Status(EnvelopeErrorCode(envelope.error_code), envelope.error), nullptr, source,
                  0);
  }
  // L1 keeps the value no longer than Redis does (clocks of the fleet are
  // assumed roughly in sync; a skewed clock only shortens the L1 time).
  uint64_t age = std::min<uint64_t>(WallMs() - std::min(WallMs(), envelope.produced_at_ms),
                                    options.result_ttl_ms);
  Finish(Status::Ok(), std::make_shared<const std::string>(std::move(envelope.value)), source,
         std::min<uint64_t>(options.l1_ttl_ms, options.result_ttl_ms - age));
}

// --- leading --------------------------------------------------------------------

void Flight::Lead(bool takeover) {
  StopListening();
  group_.scheduler().Cancel(fallback_timer_);
  state_ = State::kLeading;
  Stats& stats = group_.mutable_stats();
  ++stats.leads;
  if (takeover) ++stats.takeovers;
  if (distributed()) ArmWatchdog();
  auto weak = weak_from_this();
  producer_timer_ = group_.scheduler().After(group_.options().producer_timeout_ms, [weak] {
    if (auto self = weak.lock()) self->OnProducerTimeout();
  });
  RunProducer();
}

void Flight::RunProducer() {
  slot_ = std::make_shared<ProductionSlot>();
  slot_->flight = weak_from_this();
  auto self = shared_from_this();  // the producer may finish us synchronously
  ProducerContext context{key_};
  try {
    producer_(context, Done(slot_));
  } catch (const std::exception& e) {
    if (!slot_->used) OnProduced(false, std::string("producer threw: ") + e.what());
  } catch (...) {
    if (!slot_->used) OnProduced(false, "producer threw a non-std exception");
  }
}

void Flight::ArmWatchdog() {
  auto weak = weak_from_this();
  watchdog_timer_ = group_.scheduler().After(group_.options().lock_ttl_ms / 3, [weak] {
    if (auto self = weak.lock()) self->Renew();
  });
}

void Flight::Renew() {
  watchdog_timer_ = {};
  if (state_ != State::kLeading) return;
  group_.link()->RunScript(ScriptId::kRenew, {names_.lock},
                           {token_, std::to_string(group_.options().lock_ttl_ms)},
                           [](const Status&, const Reply&) {});
  ArmWatchdog();
}

void Flight::OnProducerTimeout() {
  producer_timer_ = {};
  if (state_ != State::kLeading || slot_->used) return;
  ++group_.mutable_stats().producer_timeouts;
  slot_->used = true;  // a late done is ignored
  std::string message = "producer did not call done within " +
                        std::to_string(group_.options().producer_timeout_ms) + " ms";
  if (distributed()) Publish(false, message, "timeout");
  Finish(Status(Code::kTimeout, message), nullptr, Source::kLed, 0);
}

void Flight::OnProduced(bool ok, std::string bytes) {
  if (state_ != State::kLeading) {
    ++group_.mutable_stats().done_ignored;
    return;
  }
  slot_->used = true;
  Stats& stats = group_.mutable_stats();
  if (ok && bytes.size() > group_.options().max_value_bytes) {
    ++stats.too_large;
    std::string message = "value of " + std::to_string(bytes.size()) +
                          " bytes exceeds max_value_bytes " +
                          std::to_string(group_.options().max_value_bytes);
    if (distributed()) Publish(false, message, "too_large");
    return Finish(Status(Code::kTooLarge, message), nullptr, Source::kLed, 0);
  }
  if (!ok) {
    ++stats.producer_errors;
    if (distributed()) Publish(false, bytes, "producer_error");
    return Finish(Status(Code::kProducerError, std::move(bytes)), nullptr, Source::kLed, 0);
  }
  auto value = std::make_shared<const std::string>(std::move(bytes));
  if (distributed()) Publish(true, *value, "");
  Finish(Status::Ok(), std::move(value), Source::kLed,
         std::min(group_.options().l1_ttl_ms, group_.options().result_ttl_ms));
}

// Stores (when ok, or when errors are cached), publishes and releases the
// lock in one script. The local callers do not wait for its reply.
void Flight::Publish(bool ok, const std::string& bytes, const std::string& error_code) {
  Envelope envelope;
  envelope.ok = ok;
  (ok ? envelope.value : envelope.error) = bytes;
  envelope.error_code = error_code;
  envelope.token = token_;
  envelope.produced_at_ms = WallMs();
  const Options& options = group_.options();
  uint32_t store_ttl = ok ? options.result_ttl_ms : options.error_ttl_ms;
  group_.RunCompletion({names_.result, names_.lock}, {token_, EncodeEnvelope(envelope),
                                                      std::to_string(store_ttl), names_.channel});
}

// --- the end ----------------------------------------------------------------------

void Flight::Abort(const Status& why) {
  if (finished()) return;
  if (state_ == State::kLeading && distributed()) {
    if (slot_) slot_->used = true;
    group_.BeginCloseWork();
    GroupImpl* group = &group_;
    group_.link()->RunScript(ScriptId::kRelease, {names_.lock}, {token_},
                             [group](const Status&, const Reply&) { group->EndCloseWork(); });
  }
  Finish(why, nullptr, Source::kNone, 0);
}

void Flight::Finish(const Status& status, std::shared_ptr<const std::string> value, Source source,
                    uint64_t l1_ttl_ms) {
  if (finished()) return;
  state_ = State::kFinished;
  StopTimers();
  StopListening();
  if (status.ok() && !detached_ && l1_ttl_ms > 0) {
    group_.l1().Put(key_, value, group_.scheduler().NowMs() + l1_ttl_ms);
  }
  auto self = shared_from_this();  // the table may hold the last reference
  group_.OnFlightFinished(this);
  live_waiters_ = 0;
  group_.Resolve(std::move(waiters_), status, std::move(value), source);
  waiters_.clear();
}

void Flight::StopListening() {
  if (!listening_) return;
  listening_ = false;
  group_.link()->Unlisten(names_.channel, this);
}

void Flight::StopTimers() {
  Scheduler& scheduler = group_.scheduler();
  scheduler.Cancel(fallback_timer_);
  scheduler.Cancel(watchdog_timer_);
  scheduler.Cancel(producer_timer_);
}

}  // namespace singleflight::internal
