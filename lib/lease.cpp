#include "lease.h"

#include <algorithm>

#include "envelope.h"
#include "token.h"

namespace singleflight::internal {
namespace {

bool IsIntegerArray(const Reply& reply) {
  return reply.type == Reply::Type::kArray && !reply.elements.empty() &&
         reply.elements[0].type == Reply::Type::kInteger;
}

}  // namespace

Lease::Lease(LeaseSet& set, FlightKeys names)
    : set_(set), names_(std::move(names)), token_(RandomToken()) {}

bool Lease::held() const {
  return lock_ == Lock::kHeld && set_.scheduler_.NowMs() < confirmed_expiry_ms_;
}

ReplyClass Lease::Count(const Status& status, const Reply& reply) {
  ReplyClass reply_class = Classify(status, reply);
  CountFailure(reply_class, set_.stats_);
  return reply_class;
}

void Lease::Send(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 std::function<void(const Status&, const Reply&)> on_reply) {
  ++pending_;
  auto self = shared_from_this();
  set_.link_->RunScript(script, std::move(keys), std::move(args),
                        [self, on_reply = std::move(on_reply)](const Status& s, const Reply& r) {
                          --self->pending_;
                          on_reply(s, r);
                        });
}

// --- checks -------------------------------------------------------------------

void Lease::Check(CheckCallback on_reply) {
  uint64_t sent_at = set_.scheduler_.NowMs();
  auto self = shared_from_this();
  Send(ScriptId::kGetOrLock, {names_.result, names_.lock},
       {token_, std::to_string(set_.options_.lock_ttl_ms)},
       [self, sent_at, on_reply = std::move(on_reply)](const Status& s, const Reply& r) {
         self->OnCheckReply(sent_at, s, r, on_reply);
       });
}

void Lease::OnCheckReply(uint64_t sent_at, const Status& status, const Reply& reply,
                         const CheckCallback& on_reply) {
  ReplyClass reply_class = Count(status, reply);
  if (reply_class == ReplyClass::kUnknown && lock_ != Lock::kHeld) lock_ = Lock::kPossiblyHeld;
  if (reply_class == ReplyClass::kOk && IsIntegerArray(reply)) {
    long long answer = reply.elements[0].integer;
    if (answer == kGetOrLockAcquired) {
      lock_ = Lock::kHeld;
      confirmed_expiry_ms_ = sent_at + set_.options_.lock_ttl_ms;
    } else if (answer == kGetOrLockBusy && lock_ == Lock::kPossiblyHeld) {
      lock_ = Lock::kNotHeld;  // another token holds it, so ours does not
    }
    // A hit leaves the lock as it was: the script returned before SET NX.
  }
  if (wanted_ && !ended_ && on_reply) on_reply(status, reply);
  Progress();
}

// --- renewals -------------------------------------------------------------------

void Lease::StartRenewing() {
  renewing_ = true;
  std::weak_ptr<Lease> weak = weak_from_this();
  renew_timer_ = set_.scheduler_.After(set_.options_.lock_ttl_ms / 3, [weak] {
    if (auto self = weak.lock()) self->Renew();
  });
}

void Lease::Renew() {
  renew_timer_ = {};
  if (!renewing_ || lock_ != Lock::kHeld || ended_) return;
  uint64_t sent_at = set_.scheduler_.NowMs();
  auto self = shared_from_this();
  Send(ScriptId::kRenew, {names_.lock}, {token_, std::to_string(set_.options_.lock_ttl_ms)},
       [self, sent_at](const Status& s, const Reply& r) { self->OnRenewReply(sent_at, s, r); });
  StartRenewing();
}

void Lease::OnRenewReply(uint64_t sent_at, const Status& status, const Reply& reply) {
  ReplyClass reply_class = Count(status, reply);
  if (reply_class != ReplyClass::kOk || reply.type != Reply::Type::kInteger) {
    // Two missed renewals in a row would lose the lease (the next tick is
    // lock_ttl_ms / 3 away): try again soon instead (found by the
    // simulation, seed 1357: BUSY twice).
    if (renewing_ && lock_ == Lock::kHeld && reply_class != ReplyClass::kFatal) {
      set_.scheduler_.Cancel(renew_timer_);
      std::weak_ptr<Lease> weak = weak_from_this();
      uint64_t delay =
          std::min<uint64_t>(RetryDelayMs(renew_retries_++), set_.options_.lock_ttl_ms / 10 + 1);
      renew_timer_ = set_.scheduler_.After(delay, [weak] {
        if (auto self = weak.lock()) self->Renew();
      });
    }
    return Progress();
  }
  renew_retries_ = 0;
  if (reply.integer == 1) {
    if (lock_ == Lock::kHeld) {
      confirmed_expiry_ms_ = std::max(confirmed_expiry_ms_, sent_at + set_.options_.lock_ttl_ms);
    }
  } else if (lock_ == Lock::kHeld) {
    // Someone else's lock now, or none: the lease is lost. Stop renewing;
    // the completion will write nothing.
    lock_ = Lock::kNotHeld;
    renewing_ = false;
    set_.scheduler_.Cancel(renew_timer_);
    ++set_.stats_.leases_lost;
  }
  Progress();
}

void Lease::OnLinkUp() {
  // A renewal that could not be sent goes out now, not after its backoff.
  if (renewing_ && lock_ == Lock::kHeld && pending_ == 0 && renew_retries_ > 0) {
    set_.scheduler_.Cancel(renew_timer_);
    Renew();
  }
  Progress();
}

// --- the end of the flight's use ----------------------------------------------

void Lease::Complete(std::string envelope, uint32_t store_ttl_ms) {
  wanted_ = false;
  renewing_ = false;
  set_.scheduler_.Cancel(renew_timer_);
  if (lock_ == Lock::kHeld) {
    completing_ = true;
    envelope_ = std::move(envelope);
    store_ttl_ms_ = store_ttl_ms;
  }
  Progress();
}

void Lease::Abandon() {
  if (!wanted_) return;
  wanted_ = false;
  renewing_ = false;
  set_.scheduler_.Cancel(renew_timer_);
  Progress();
}

void Lease::Progress() {
  if (ended_ || wanted_ || pending_ > 0 || retry_timer_.valid()) return;
  uint64_t now = set_.scheduler_.NowMs();
  if (completing_ && now >= confirmed_expiry_ms_) {
    // Past the last confirmed expiry another process may lead by now: a
    // late completion must not speak for a lease that may have lapsed.
    completing_ = false;
    ++set_.stats_.leases_lost;
    lock_ = Lock::kPossiblyHeld;  // a renewal whose answer was lost may have kept it
  }
  if (lock_ == Lock::kNotHeld) return End();
  if (set_.link_ == nullptr || !set_.link_->up()) {
    if (set_.draining_) {
      ++set_.stats_.leases_abandoned;
      End();
    }
    return;  // LeaseSet::OnLinkUp calls again
  }
  if (completing_) return SendComplete();
  SendRelease();
}

void Lease::SendComplete() {
  auto self = shared_from_this();
  Send(ScriptId::kComplete, {names_.result, names_.lock},
       {token_, envelope_, std::to_string(store_ttl_ms_), names_.channel},
       [self](const Status& s, const Reply& r) { self->OnCompleteReply(s, r); });
}

void Lease::OnCompleteReply(const Status& status, const Reply& reply) {
  ReplyClass reply_class = Count(status, reply);
  switch (reply_class) {
    case ReplyClass::kOk:
      retries_ = 0;
      completing_ = false;
      lock_ = Lock::kNotHeld;  // deleted by the script, or not ours
      if (IsIntegerArray(reply) && reply.elements[0].integer == 0) {
        // Not ours. After a resend this may be our first attempt that landed.
        if (!complete_resent_) ++set_.stats_.leases_lost;
      } else if (store_ttl_ms_ > 0 && reply.elements.size() >= 3 &&
                 reply.elements[2].integer == 0) {
        ++set_.stats_.error_replies_fatal;  // the SET was refused (e.g. OOM); published anyway
      }
      break;
    case ReplyClass::kNotSent:
      ++set_.stats_.completion_retries;
      return RetryLater();  // Progress then waits for the link
    case ReplyClass::kUnknown:
      ++set_.stats_.completion_retries;
      complete_resent_ = true;
      break;
    case ReplyClass::kRetryable: complete_resent_ = true; return RetryLater();
    case ReplyClass::kFatal:
      // Refused for good: let a follower take over now rather than wait.
      completing_ = false;
      break;
  }
  Progress();
}

void Lease::SendRelease() {
  auto self = shared_from_this();
  Send(ScriptId::kRelease, {names_.lock},
       {token_, names_.channel, EncodeReleaseNotice(token_, UnixNowMs())},
       [self](const Status& s, const Reply& r) { self->OnReleaseReply(s, r); });
}

void Lease::OnReleaseReply(const Status& status, const Reply& reply) {
  ReplyClass reply_class = Count(status, reply);
  switch (reply_class) {
    case ReplyClass::kOk:
      retries_ = 0;
      if (reply.type == Reply::Type::kInteger && reply.integer == 1) {
        ++set_.stats_.leases_released;
      }
      lock_ = Lock::kNotHeld;
      break;
    case ReplyClass::kNotSent: return RetryLater();
    case ReplyClass::kUnknown: lock_ = Lock::kPossiblyHeld; break;
    case ReplyClass::kRetryable: return RetryLater();
    case ReplyClass::kFatal:
      // Nothing more to try; the lock lapses within lock_ttl_ms.
      ++set_.stats_.leases_abandoned;
      lock_ = Lock::kNotHeld;
      break;
  }
  Progress();
}

void Lease::RetryLater() {
  std::weak_ptr<Lease> weak = weak_from_this();
  retry_timer_ = set_.scheduler_.After(RetryDelayMs(retries_++), [weak] {
    if (auto self = weak.lock()) {
      self->retry_timer_ = {};
      self->Progress();
    }
  });
}

void Lease::ForceEnd() {
  if (ended_) return;
  if (lock_ != Lock::kNotHeld) ++set_.stats_.leases_abandoned;
  End();
}

void Lease::End() {
  if (ended_) return;
  ended_ = true;
  set_.scheduler_.Cancel(renew_timer_);
  set_.scheduler_.Cancel(retry_timer_);
  set_.Remove(this);  // may free this lease: nothing after
}

// --- the set ---------------------------------------------------------------------

std::shared_ptr<Lease> LeaseSet::Create(const FlightKeys& names) {
  auto lease = std::make_shared<Lease>(*this, names);
  lease->order_ = next_order_++;
  leases_.emplace(lease->order_, lease);
  return lease;
}

// A copy: a lease may end (and leave the set) while it is called.
std::vector<std::shared_ptr<Lease>> LeaseSet::Snapshot() const {
  std::vector<std::shared_ptr<Lease>> all;
  all.reserve(leases_.size());
  for (const auto& entry : leases_) all.push_back(entry.second);
  return all;
}

void LeaseSet::OnLinkUp() {
  for (auto& lease : Snapshot()) lease->OnLinkUp();
}

void LeaseSet::Remove(Lease* lease) {
  auto found = leases_.find(lease->order_);
  if (found == leases_.end()) return;
  auto keep = std::move(found->second);  // freed after erase returns
  leases_.erase(found);
  MaybeDrained();
}

void LeaseSet::Drain(std::function<void()> done) {
  draining_ = true;
  drained_ = std::move(done);
  uint64_t bound = 2 * uint64_t{options_.redis.command_timeout_ms} + 100;
  drain_timer_ = scheduler_.After(bound, [this] {
    drain_timer_ = {};
    for (auto& lease : Snapshot()) lease->ForceEnd();
  });
  for (auto& lease : Snapshot()) lease->Progress();
  MaybeDrained();
}

void LeaseSet::MaybeDrained() {
  if (!draining_ || !leases_.empty() || !drained_) return;
  scheduler_.Cancel(drain_timer_);
  auto done = std::move(drained_);
  drained_ = nullptr;
  // From the loop: `done` closes the link and may free the group, and with it
  // this set, which may still be inside Drain or a lease's reply (flight_fuzz
  // crash-0104c0d3).
  scheduler_.Defer(std::move(done));
}

}  // namespace singleflight::internal
