#include "flight.h"

#include <algorithm>
#include <exception>

#include "envelope.h"
#include "group_impl.h"
#include "redis_errors.h"

namespace singleflight::internal {
namespace {

// A message a follower cannot trust (malformed, or from a token it has not
// seen hold the lock) makes it ask Redis — at most this often, so a flood of
// garbage on a channel does not turn into a flood of scripts.
constexpr uint64_t kMessageRecheckSpacingMs = 100;

// A follower re-checks this long after the holder's lock would lapse, so
// that it sees the lapse rather than the last millisecond of the lock.
uint64_t LapseMarginMs(uint32_t lock_ttl_ms) {
  return std::max<uint64_t>(5, lock_ttl_ms / 50);
}

}  // namespace

Flight::Flight(GroupImpl& group, std::string key, Producer producer)
    : group_(group), key_(std::move(key)), producer_(std::move(producer)) {
  if (group_.link()) names_ = NameFlight(group_.options().key_prefix, key_);
}

Flight::~Flight() {
  if (lease_) lease_->Abandon();
}

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
  // A flight with nobody left to answer ends (its lease releases whatever it
  // may hold); a leader goes on, because its result fills the caches for the
  // callers still to come.
  if (live_waiters_ == 0 && state_ != State::kLeading) {
    Finish(Status(Code::kCancelled, "no caller left"), nullptr, Source::kNone, 0);
  }
}

void Flight::CancelWaiter(const std::shared_ptr<Waiter>& waiter) {
  ++group_.mutable_stats().cancels;
  group_.ResolveOne(waiter, Status(Code::kCancelled, "the caller cancelled its wait"));
}

void Flight::Start() {
  RedisLink* link = group_.link();
  if (link == nullptr) return RunLocally(false);
  if (!link->settled()) return WaitForLink();
  state_ = State::kChecking;
  if (!link->up()) {
    // A blip (the connection was lost, its reconnect not yet tried) is not
    // an outage: wait for the attempt; degrade if it fails.
    if (group_.reconnecting()) return WaitForLink();
    return Degrade(link->last_error());
  }
  Check();
}

void Flight::WaitForLink() {
  group_.WaitForLink(shared_from_this());
}

void Flight::OnLinkState(bool up) {
  if (finished() || state_ == State::kLeading) return;
  if (state_ == State::kStarting) return Start();
  if (up) return Check();
  // A reconnect attempt failed. A flight that never got an answer from Redis
  // now degrades; one that follows keeps waiting (its callers' deadlines
  // bound it), since the leader it follows may well be fine.
  if (!answered_) return Degrade(group_.link()->last_error());
  WaitForLink();
}

// --- the Redis check: get-or-lock -------------------------------------------

void Flight::Check() {
  if (finished() || state_ == State::kLeading) return;
  if (check_in_flight_) {
    recheck_wanted_ = true;
    return;
  }
  if (!lease_) lease_ = group_.leases().Create(names_);
  check_in_flight_ = true;
  recheck_wanted_ = false;
  std::weak_ptr<Flight> weak = weak_from_this();
  lease_->Check([weak](const Status& status, const Reply& reply) {
    if (auto self = weak.lock()) self->OnCheckReply(status, reply);
  });
}

void Flight::OnCheckReply(const Status& status, const Reply& reply) {
  check_in_flight_ = false;
  if (finished() || state_ == State::kLeading) return;
  switch (Classify(status, reply)) {
    case ReplyClass::kOk:
      answered_ = true;
      retries_ = 0;
      return OnCheckAnswer(reply);
    case ReplyClass::kNotSent:
      // The link was down when the check was to be sent. Its answer is
      // deferred, like every callback, and may arrive after the link came
      // back (simulation seed 31867: a pause held the reconnect and the
      // answer together): then the check simply goes out now — degrading
      // would run the producer without the lock while Redis coordinates
      // everyone else. Still down: before any answer that is an outage;
      // after one, wait for the link like an unknown outcome.
      if (group_.link()->up()) return Check();
      if (!answered_) return Degrade(status);
      return WaitForLink();
    case ReplyClass::kUnknown:
      // Not an outage: the command may have run and taken the lock. The lease
      // keeps the token; the same token re-checks once the link is back
      // (get-or-lock answers {2} for its own token).
      if (group_.link()->up()) return Check();
      return WaitForLink();
    case ReplyClass::kRetryable: {
      std::weak_ptr<Flight> weak = weak_from_this();
      group_.scheduler().Cancel(recheck_timer_);
      recheck_timer_ = group_.scheduler().After(RetryDelayMs(retries_++), [weak] {
        if (auto self = weak.lock()) {
          self->recheck_timer_ = {};
          self->Check();
        }
      });
      return;
    }
    case ReplyClass::kFatal:
      // The server refuses (OOM, NOPERM, READONLY, MOVED, ...): tell the
      // callers its words. Never a silent local run: Redis is up and may be
      // coordinating other processes.
      return Finish(FatalStatus(reply), nullptr, Source::kNone, 0);
  }
}

void Flight::OnCheckAnswer(const Reply& reply) {
  if (reply.type != Reply::Type::kArray || reply.elements.empty() ||
      reply.elements[0].type != Reply::Type::kInteger) {
    ++group_.mutable_stats().redis_errors;
    return Finish(FatalStatus(reply), nullptr, Source::kNone, 0);
  }
  ++group_.mutable_stats().checks;
  long long answer = reply.elements[0].integer;
  if (answer == kGetOrLockHit && reply.elements.size() >= 2) {
    bool first = state_ == State::kChecking;
    if (!first) ++group_.mutable_stats().fallback_hits;
    return FinishFromEnvelope(reply.elements[1].str,
                              first ? Source::kRedisCache : Source::kFallbackGet);
  }
  if (answer == kGetOrLockAcquired) {
    if (live_waiters_ == 0) {
      // Nobody wants the value any more: the lease hands the lock back.
      return Finish(Status(Code::kCancelled, "no caller left"), nullptr, Source::kNone, 0);
    }
    // A {2} that took longer than lock_ttl_ms to arrive (this process was
    // paused, the loop stalled) may be for a lock that has lapsed since and
    // been taken by another process: ask again with the same token, which
    // renews it if it is still ours (simulation seed 500).
    if (!lease_->held()) return Check();
    return Lead(state_ == State::kFollowing);
  }
  long long pttl = reply.elements.size() >= 2 && reply.elements[1].type == Reply::Type::kInteger
                       ? reply.elements[1].integer
                       : group_.options().lock_ttl_ms;
  std::string_view holder =
      reply.elements.size() >= 3 ? std::string_view(reply.elements[2].str) : std::string_view();
  if (state_ == State::kChecking) {
    Follow(holder);
  } else if (!holder.empty() && !TrustedHolder(holder)) {
    holders_.emplace_back(holder);  // a later holder, seen on a re-check
  }
  ArmLapseRecheck(pttl);
  if (recheck_wanted_) Check();
}

// --- following ----------------------------------------------------------------

void Flight::Follow(std::string_view holder) {
  state_ = State::kFollowing;
  if (!holder.empty()) holders_.emplace_back(holder);
  listening_ = true;
  group_.link()->Listen(names_.channel, this);
}

// The only timed re-check: when the holder's lock would lapse if its leader
// stopped renewing. A live leader renews, so the re-check sees a new PTTL and
// sets the next one; a dead one is replaced about one lock TTL after its last
// renewal. fallback_interval_ms, when set, caps the wait.
void Flight::ArmLapseRecheck(long long pttl_ms) {
  const Options& options = group_.options();
  uint64_t delay =
      static_cast<uint64_t>(std::max<long long>(pttl_ms, 0)) + LapseMarginMs(options.lock_ttl_ms);
  if (options.fallback_interval_ms > 0) {
    delay = std::min<uint64_t>(delay, options.fallback_interval_ms);
  }
  group_.scheduler().Cancel(recheck_timer_);
  std::weak_ptr<Flight> weak = weak_from_this();
  recheck_timer_ = group_.scheduler().After(delay, [weak] {
    auto self = weak.lock();
    if (!self || self->state_ != State::kFollowing) return;
    self->recheck_timer_ = {};
    ++self->group_.mutable_stats().fallback_checks;
    self->Check();
  });
}

void Flight::OnSubscribed() {
  // Closes the race where the leader finished before the subscription
  // existed (and, after a reconnect, covers the messages lost meanwhile).
  if (state_ == State::kFollowing) Check();
}

// At most one re-check per spacing, but never none: a message dropped inside
// the spacing may be the very result we wait for (its holder's busy reply,
// on the command connection, can arrive after its message, on the subscriber
// connection), so the re-check it asks for is postponed, not skipped. Red
// before: FlightDistributedTest.UntrustedMessageInsideTheSpacingStillRechecks.
void Flight::RecheckSoon() {
  Scheduler& scheduler = group_.scheduler();
  uint64_t now = scheduler.NowMs();
  if (now >= next_message_recheck_ms_) {
    next_message_recheck_ms_ = now + kMessageRecheckSpacingMs;
    return Check();
  }
  if (message_recheck_timer_.valid()) return;  // one is already coming
  std::weak_ptr<Flight> weak = weak_from_this();
  message_recheck_timer_ = scheduler.After(next_message_recheck_ms_ - now, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->message_recheck_timer_ = {};
    if (self->state_ == State::kFollowing) self->RecheckSoon();
  });
}

bool Flight::TrustedHolder(std::string_view token) const {
  return std::find(holders_.begin(), holders_.end(), token) != holders_.end();
}

void Flight::OnMessage(std::string_view payload) {
  if (state_ != State::kFollowing) return;
  Stats& stats = group_.mutable_stats();
  Envelope envelope;
  const DecodeLimits limits = DecodeLimits::ForMaxValue(group_.options().max_value_bytes);
  if (!DecodeEnvelope(payload, limits, &envelope).ok()) {
    // Never trust it; but it may stand for a real result we cannot read
    // (too large, a newer format), so ask Redis.
    ++stats.malformed_dropped;
    return RecheckSoon();
  }
  if (!TrustedHolder(envelope.token)) {
    // A stale leader's, a forged one, or a holder we have not seen yet: a
    // re-check tells which (a newer holder's result is stored by then).
    ++stats.foreign_dropped;
    return RecheckSoon();
  }
  if (envelope.released) return Check();  // the holder gave up: the lock is free
  FinishFromEnvelope(payload, Source::kPubSub);
}

// --- results ------------------------------------------------------------------

void Flight::FinishFromEnvelope(std::string_view bytes, Source source) {
  const Options& options = group_.options();
  Stats& stats = group_.mutable_stats();
  Envelope envelope;
  Status decoded =
      DecodeEnvelope(bytes, DecodeLimits::ForMaxValue(options.max_value_bytes), &envelope);
  if (!decoded.ok() && decoded.code() == Code::kTooLarge) {
    // Over our bound (written by a process with a larger max_value_bytes):
    // it will not shrink, so answer now.
    ++stats.too_large;
    return Finish(Status(Code::kTooLarge, decoded.message()), nullptr, source, 0);
  }
  if (!decoded.ok() || envelope.released) {
    // A stored result this process cannot read (a newer writer, or garbage):
    // waiting would only run into every caller's deadline. Run the producer
    // here, without touching Redis — the readable result stays for the
    // processes that can read it (docs/protocol.md, "Upgrades").
    ++stats.undecodable_results;
    return RunLocally(true);
  }
  if (source == Source::kPubSub) ++stats.pubsub_wakes;
  if (source == Source::kRedisCache) ++stats.redis_hits;
  if (!envelope.ok) {
    return Finish(Status(EnvelopeErrorCode(envelope.error_code), envelope.error), nullptr, source,
                  0);
  }
  // L1 keeps the value no longer than Redis does (clocks of the fleet are
  // assumed roughly in sync; a skewed clock only shortens the L1 time).
  uint64_t now = UnixNowMs();
  uint64_t age =
      std::min<uint64_t>(now - std::min(now, envelope.produced_at_ms), options.result_ttl_ms);
  Finish(Status::Ok(), std::make_shared<const std::string>(std::move(envelope.value)), source,
         std::min<uint64_t>(options.l1_ttl_ms, options.result_ttl_ms - age));
}

// --- degraded and local runs ------------------------------------------------------

void Flight::Degrade(const Status& why) {
  ++group_.mutable_stats().degraded_calls;
  if (group_.options().when_redis_down == DegradedMode::kFailFast) {
    return Finish(Status(Code::kUnavailable, "Redis unavailable: " + why.message()), nullptr,
                  Source::kNone, 0);
  }
  RunLocally(true);
}

void Flight::RunLocally(bool degraded) {
  local_only_ = true;
  degraded_ = degraded;
  if (lease_) lease_->Abandon();  // settles a possibly-held token once the link is back
  Lead(false);
}

// --- leading --------------------------------------------------------------------

void Flight::Lead(bool takeover) {
  StopFollowing();
  state_ = State::kLeading;
  Stats& stats = group_.mutable_stats();
  ++stats.leads;
  if (takeover) ++stats.takeovers;
  if (distributed()) lease_->StartRenewing();
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

void Flight::OnProducerTimeout() {
  producer_timer_ = {};
  if (state_ != State::kLeading || slot_->used) return;
  ++group_.mutable_stats().producer_timeouts;
  std::function<void()> on_abandon = slot_->Abandon();  // a late done is ignored
  auto self = shared_from_this();                       // the callback may re-enter the group
  if (on_abandon) on_abandon();  // the producer hears first, then its callers
  if (finished()) return;        // it closed the group
  std::string message = "producer did not call done within " +
                        std::to_string(group_.options().producer_timeout_ms) + " ms";
  if (distributed()) Complete(false, message, "timeout");
  Finish(Status(Code::kTimeout, message), nullptr, Source::kLed, 0);
}

bool Flight::OnProduced(bool ok, std::string bytes) {
  if (state_ != State::kLeading || slot_->used) {
    ++group_.mutable_stats().done_ignored;
    return false;
  }
  slot_->used = true;
  Stats& stats = group_.mutable_stats();
  if (ok && bytes.size() > group_.options().max_value_bytes) {
    ++stats.too_large;
    std::string message = "value of " + std::to_string(bytes.size()) +
                          " bytes exceeds max_value_bytes " +
                          std::to_string(group_.options().max_value_bytes);
    if (distributed()) Complete(false, message, "too_large");
    Finish(Status(Code::kTooLarge, message), nullptr, Source::kLed, 0);
    return false;
  }
  if (!ok) {
    ++stats.producer_errors;
    if (distributed()) Complete(false, bytes, "producer_error");
    Finish(Status(Code::kProducerError, std::move(bytes)), nullptr, Source::kLed, 0);
    return true;
  }
  auto value = std::make_shared<const std::string>(std::move(bytes));
  if (distributed()) Complete(true, *value, "");
  Finish(Status::Ok(), std::move(value), Source::kLed,
         std::min(group_.options().l1_ttl_ms, group_.options().result_ttl_ms));
  return true;
}

// Hands the result to the lease, which stores and publishes it while the
// lock is still ours. The local callers do not wait for Redis.
void Flight::Complete(bool ok, const std::string& bytes, const std::string& error_code) {
  Envelope envelope;
  envelope.ok = ok;
  (ok ? envelope.value : envelope.error) = bytes;
  envelope.error_code = error_code;
  envelope.token = lease_->token();
  envelope.produced_at_ms = UnixNowMs();
  const Options& options = group_.options();
  lease_->Complete(EncodeEnvelope(envelope), ok ? options.result_ttl_ms : options.error_ttl_ms);
}

// --- the end ----------------------------------------------------------------------

void Flight::Abort(const Status& why) {
  if (finished()) return;
  std::function<void()> on_abandon;
  if (slot_ && !slot_->used) on_abandon = slot_->Abandon();
  if (slot_) slot_->used = true;
  auto self = shared_from_this();  // the callback may re-enter the group
  if (on_abandon) on_abandon();    // the producer hears first, then its callers
  Finish(why, nullptr, Source::kNone, 0);
}

void Flight::Finish(const Status& status, std::shared_ptr<const std::string> value, Source source,
                    uint64_t l1_ttl_ms) {
  if (finished()) return;
  state_ = State::kFinished;
  StopTimers();
  StopListening();
  if (lease_) lease_->Abandon();  // after Complete this does nothing
  // A degraded value was made without the fleet's lease: it answers its own
  // callers (flagged) but is not served later from L1 as if it were shared.
  if (status.ok() && !detached_ && !degraded_ && l1_ttl_ms > 0) {
    group_.l1().Put(key_, value, group_.scheduler().NowMs() + l1_ttl_ms);
  }
  auto self = shared_from_this();  // the table may hold the last reference
  group_.OnFlightFinished(this);
  live_waiters_ = 0;
  group_.Resolve(std::move(waiters_), status, std::move(value), source, degraded_);
  waiters_.clear();
}

void Flight::StopListening() {
  if (!listening_) return;
  listening_ = false;
  group_.link()->Unlisten(names_.channel, this);
}

// What a follower has running: its subscription and both re-check timers.
void Flight::StopFollowing() {
  StopListening();
  group_.scheduler().Cancel(recheck_timer_);
  group_.scheduler().Cancel(message_recheck_timer_);
}

void Flight::StopTimers() {
  Scheduler& scheduler = group_.scheduler();
  scheduler.Cancel(recheck_timer_);
  scheduler.Cancel(message_recheck_timer_);
  scheduler.Cancel(producer_timer_);
}

}  // namespace singleflight::internal
