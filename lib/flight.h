// Flight: the state machine of one key's flight in this process
// (DESIGN.md, "The flight of one key", steps 2-7; docs/protocol.md).
//
//   kStarting --(local-only, or Redis down and degrading)--> kLeading
//   kStarting --GetOrLock--> kChecking --hit--> kFinished (redis)
//                                     --lock acquired--> kLeading
//                                     --lock busy--> kFollowing
//   kFollowing --message / re-check hit--> kFinished (pubsub / fallback)
//   kFollowing --re-check takes the lapsed lock--> kLeading (takeover)
//   kLeading --done / producer error / producer timeout--> kFinished
//   any --Abort (Close), or no waiter left while not leading--> kFinished
//
// A flight is owned by shared_ptr: the group's table holds it while it is the
// key's current flight, and every pending Redis reply or timer holds it too, so
// a late reply finds a finished flight and does nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "key_naming.h"
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
  bool used = false;
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
  // Forget: this flight still answers its callers but no longer fills L1.
  void Detach() { detached_ = true; }
  // Close: every waiter gets `why`; a held lock is released.
  void Abort(const Status& why);

  // From Done.
  void OnProduced(bool ok, std::string bytes);

  // ChannelListener
  void OnSubscribed() override;
  void OnMessage(std::string_view payload) override;

 private:
  enum class Check { kFirst, kAfterSubscribe, kFallback, kAfterMalformed };

  bool distributed() const;
  void CheckRedis(Check why);
  void OnCheckReply(Check why, const Status& status, const Reply& reply);
  void OnCheckFailed(Check why, const Status& status);
  void Follow();
  void ArmFallback();
  void Lead(bool takeover);
  void RunProducer();
  void ArmWatchdog();
  void Renew();
  void OnProducerTimeout();
  void Publish(bool ok, const std::string& bytes, const std::string& error_code);
  void RecheckAfterMalformed();
  void FinishFromEnvelope(std::string_view bytes, Source source, bool from_message);
  void Finish(const Status& status, std::shared_ptr<const std::string> value, Source source,
              uint64_t l1_ttl_ms);
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
  bool local_only_ = false;  // leading without Redis (degraded)
  std::string token_;        // our lock token while leading
  std::shared_ptr<ProductionSlot> slot_;
  Scheduler::TimerId fallback_timer_;
  Scheduler::TimerId watchdog_timer_;
  Scheduler::TimerId producer_timer_;
  uint64_t malformed_recheck_at_ = 0;  // when garbage last made us re-check
};

}  // namespace singleflight::internal
