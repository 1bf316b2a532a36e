// Flight: the state machine of one key's flight in this process
// (docs/protocol.md, "The flight of one key" and "Protocol v2").
//
//   kStarting --(local-only, or Redis down and degrading)--> kLeading
//   kStarting --GetOrLock--> kChecking --hit--> kFinished (redis)
//                                     --lock acquired--> kLeading
//                                     --lock busy--> kFollowing
//   kFollowing --holder's message / re-check hit--> kFinished (pubsub / fallback)
//   kFollowing --re-check takes the lapsed lock--> kLeading (takeover)
//   kLeading --done / producer error / producer timeout--> kFinished
//   any --Abort (Close), or no waiter left while not leading--> kFinished
//
// The lock token is not the flight's: its Lease owns it (lease.h), so a
// flight may finish at any moment — a late reply then reaches the lease,
// which releases what it took. The flight itself never polls: a follower
// re-checks when the holder's lock would lapse (the PTTL get-or-lock
// reported), on every (re-)subscription, after a message it cannot trust,
// and after the link comes back.
//
// A flight is owned by shared_ptr: the group's table holds it while it is the
// key's current flight, and every pending reply or timer holds it (or a weak
// reference), so a late reply finds a finished flight and does nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "key_naming.h"
#include "lease.h"
#include "redis_link.h"
#include "scheduler.h"
#include "singleflight/group.h"

namespace singleflight::internal {

class Flight;
class GroupImpl;

// One caller waiting for a result.
struct Waiter {
  Callback callback;
  std::weak_ptr<Flight> flight;  // empty for an L1 hit
  Scheduler::TimerId deadline;
  bool joined = false;    // joined a flight another caller started
  bool resolved = false;  // its result is decided (delivery may still be queued)
};

// Drops the waiters whose result is already decided (timed out, cancelled).
inline void EraseResolved(std::vector<std::shared_ptr<Waiter>>& waiters) {
  waiters.erase(std::remove_if(waiters.begin(), waiters.end(),
                               [](const std::shared_ptr<Waiter>& w) { return w->resolved; }),
                waiters.end());
}

// The producer's side of one production: Done refers to it. It outlives the
// flight safely: a done after the flight finished finds no flight.
struct ProductionSlot {
  std::weak_ptr<Flight> flight;
  bool used = false;                 // reported, timed out or aborted: later Done calls are refused
  bool abandoned = false;            // given up before it reported (timeout, Close)
  std::function<void()> on_abandon;  // Done::OnAbandon; run once, when abandoned is set

  // Marks the production given up; returns the callback for the flight to run
  // before it answers its callers (it may call back into the group).
  std::function<void()> Abandon() {
    used = true;
    abandoned = true;
    return std::exchange(on_abandon, nullptr);
  }
};

class Flight final : public std::enable_shared_from_this<Flight>, public ChannelListener {
 public:
  enum class State { kStarting, kChecking, kLeading, kFollowing, kFinished };

  Flight(GroupImpl& group, std::string key, Producer producer);
  ~Flight() override;

  const std::string& key() const { return key_; }
  State state() const { return state_; }
  bool finished() const { return state_ == State::kFinished; }

  void AddWaiter(std::shared_ptr<Waiter> waiter);
  // Callers still waiting (those that timed out or cancelled do not count).
  size_t waiter_count() const { return live_waiters_; }
  // A waiter gave up (timeout or cancel); the flight goes on for the others.
  void WaiterLeft();
  void CancelWaiter(const std::shared_ptr<Waiter>& waiter);
  // Begins the flight: the Redis check, or the producer in local-only mode.
  void Start();
  // The link's command connection went up or down while this flight waited
  // for it (GroupImpl::WaitForLink).
  void OnLinkState(bool up);
  // Forget: this flight still answers its callers but no longer fills L1.
  void Detach() { detached_ = true; }
  // Close: every waiter gets `why`; the lease releases what it holds.
  void Abort(const Status& why);

  // From Done. True when the value was taken (the flight was leading and had
  // not had its result yet).
  bool OnProduced(bool ok, std::string bytes);

  // ChannelListener
  void OnSubscribed() override;
  void OnMessage(std::string_view payload) override;

 private:
  bool distributed() const;
  void Check();
  void OnCheckReply(const Status& status, const Reply& reply);
  void OnCheckAnswer(const Reply& reply);
  void WaitForLink();
  void Degrade(const Status& why);
  void RunLocally(bool degraded);
  void Follow(std::string_view holder);
  void ArmLapseRecheck(long long pttl_ms);
  void RecheckSoon();
  bool TrustedHolder(std::string_view token) const;
  void FinishFromEnvelope(std::string_view bytes, Source source);
  void Lead(bool takeover);
  void RunProducer();
  void OnProducerTimeout();
  void Complete(bool ok, const std::string& bytes, const std::string& error_code);
  void Finish(const Status& status, std::shared_ptr<const std::string> value, Source source,
              uint64_t l1_ttl_ms);
  void StopFollowing();
  void StopListening();
  void StopTimers();

  GroupImpl& group_;
  std::string key_;
  FlightKeys names_;  // empty in local-only mode
  Producer producer_;
  State state_ = State::kStarting;
  std::vector<std::shared_ptr<Waiter>> waiters_;  // resolved ones are skipped
  size_t live_waiters_ = 0;                       // unresolved entries of waiters_
  bool detached_ = false;
  bool listening_ = false;
  bool local_only_ = false;  // leading without Redis
  bool degraded_ = false;    // ... because Redis could not be reached or read
  // The lock token's owner; null in local-only groups. Abandoned or
  // completed exactly once, when the flight stops wanting it.
  std::shared_ptr<Lease> lease_;
  bool answered_ = false;         // some check got a server answer
  bool check_in_flight_ = false;  // one get-or-lock at a time per flight
  bool recheck_wanted_ = false;   // ... and one more once it is answered
  int retries_ = 0;               // retryable error replies in a row
  // The lock holders whose messages we accept: learnt from get-or-lock's busy
  // replies (the first one, and later holders seen on a re-check).
  std::vector<std::string> holders_;
  std::shared_ptr<ProductionSlot> slot_;
  Scheduler::TimerId recheck_timer_;
  Scheduler::TimerId producer_timer_;
  // An untrusted message may re-check from this time on (one per spacing);
  // one asked for earlier waits on message_recheck_timer_ until then.
  uint64_t next_message_recheck_ms_ = 0;
  Scheduler::TimerId message_recheck_timer_;
};

}  // namespace singleflight::internal
