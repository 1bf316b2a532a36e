// Lease: one lock token's whole life in Redis (docs/protocol.md, "Leases").
//
// A flight asks Redis for a key's lock with a random token. Every way the
// first version broke was one shape — a token whose lock might be held in
// Redis was forgotten — so one object now owns the token from the first
// command that carries it to the moment its lock is known to be gone:
// every GetOrLock sent with it, the renewals, the Complete, the Release, and
// the retries of those across reconnects.
//
// Invariant: from the moment a command carrying the token is written until
// the token is released, or its lock is known not to be ours, or (for a
// completion) the lease's last confirmed expiry has passed, the lease is in
// its LeaseSet — reachable from the group — and acts on every reply.
//
// The flight that owns a lease *wants* it while it checks, follows or leads;
// it says so by calling Complete (the leader is done) or Abandon (any other
// end). From then on the lease settles the lock by itself: a {2} arriving
// for an abandoned lease is released at once, an unknown outcome (a timeout,
// a dropped connection) leaves the token *possibly held* and it is released
// once the link is back, a completion is re-sent after a reconnect while the
// lease's confirmed expiry allows. Close drains: LeaseSet::Drain waits until
// every lease has ended, each command bounded by command_timeout_ms.
//
// Lifetime: shared by the flight, by every pending callback and by the
// LeaseSet (which holds it until it ends). Everything runs on the loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "key_naming.h"
#include "redis_errors.h"
#include "redis_link.h"
#include "scheduler.h"
#include "singleflight/options.h"
#include "singleflight/stats.h"

namespace singleflight::internal {

class LeaseSet;

class Lease final : public std::enable_shared_from_this<Lease> {
 public:
  using CheckCallback = std::function<void(const Status& status, const Reply& reply)>;

  Lease(LeaseSet& set, FlightKeys names);
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  const std::string& token() const { return token_; }
  // The lock is surely ours now: acquired or renewed by a command sent less
  // than lock_ttl_ms ago (a command runs after it is sent, so its lock lives
  // at least that long), and not yet completed or lost.
  bool held() const;

  // Runs get-or-lock with this token. The lease records what the reply means
  // for the lock, then passes it on while the flight still wants the lease.
  void Check(CheckCallback on_reply);
  // The lock is ours and the producer runs: renew every lock_ttl_ms / 3.
  void StartRenewing();
  // The leader is done: store (store_ttl_ms > 0) and publish the envelope
  // while the token still holds the lock, then drop the lock. A lease already
  // lost writes nothing. The flight no longer wants the lease.
  void Complete(std::string envelope, uint32_t store_ttl_ms);
  // The flight is over without a completion: release whatever may be ours.
  void Abandon();

  // --- for the LeaseSet ---
  void OnLinkUp();
  void ForceEnd();

 private:
  friend class LeaseSet;  // Drain asks each lease to take its next step

  uint64_t order_ = 0;  // its key in LeaseSet::leases_

  // What this process knows about the lock under our token.
  enum class Lock {
    kNotHeld,       // never written, or Redis said it is not (or no longer) ours
    kPossiblyHeld,  // a command that could take it lost its answer
    kHeld,          // confirmed ours, until confirmed_expiry_ms_
  };

  void OnCheckReply(uint64_t sent_at, const Status& status, const Reply& reply,
                    const CheckCallback& on_reply);
  void Renew();
  void OnRenewReply(uint64_t sent_at, const Status& status, const Reply& reply);
  void SendComplete();
  void OnCompleteReply(const Status& status, const Reply& reply);
  void SendRelease();
  void OnReleaseReply(const Status& status, const Reply& reply);
  // Decides the next step of an unwanted lease: wait, (re)send, or end.
  void Progress();
  void RetryLater();
  void End();
  void Send(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
            std::function<void(const Status&, const Reply&)> on_reply);
  ReplyClass Count(const Status& status, const Reply& reply);

  LeaseSet& set_;
  FlightKeys names_;
  std::string token_;
  Lock lock_ = Lock::kNotHeld;
  bool wanted_ = true;  // the flight still drives this lease
  bool ended_ = false;  // out of the set; replies are only counted
  int pending_ = 0;     // commands written and not yet answered
  bool renewing_ = false;
  uint64_t confirmed_expiry_ms_ = 0;  // last confirmed acquire/renew send time + lock_ttl_ms
  // The completion still to deliver (empty when none).
  bool completing_ = false;
  bool complete_resent_ = false;  // a {0} reply then may mean "the first one landed"
  std::string envelope_;
  uint32_t store_ttl_ms_ = 0;
  int retries_ = 0;        // failed completes/releases in a row (backoff)
  int renew_retries_ = 0;  // failed renewals in a row (backoff, capped at lock_ttl_ms / 10)
  Scheduler::TimerId renew_timer_;
  Scheduler::TimerId retry_timer_;
};

// Every live lease of a group. Owned by the group; outlives every lease's
// use of it (the group closes the link, which answers every pending command,
// before it frees itself).
class LeaseSet {
 public:
  LeaseSet(Scheduler& scheduler, Stats& stats, const Options& options)
      : scheduler_(scheduler), stats_(stats), options_(options) {}
  LeaseSet(const LeaseSet&) = delete;
  LeaseSet& operator=(const LeaseSet&) = delete;

  void set_link(RedisLink* link) { link_ = link; }
  std::shared_ptr<Lease> Create(const FlightKeys& names);
  // The command connection is back: resend what waited for it.
  void OnLinkUp();
  // Close: no lease waits for the link any more (a lease that cannot reach
  // Redis now is abandoned and counted); `done` runs once every lease has
  // ended, or after a bound of twice the command timeout.
  void Drain(std::function<void()> done);
  bool draining() const { return draining_; }
  size_t size() const { return leases_.size(); }

 private:
  friend class Lease;
  void Remove(Lease* lease);
  void MaybeDrained();
  std::vector<std::shared_ptr<Lease>> Snapshot() const;

  Scheduler& scheduler_;
  Stats& stats_;
  const Options& options_;
  RedisLink* link_ = nullptr;
  // Every lease not ended, in creation order: OnLinkUp and Drain visit them
  // in an order that does not depend on where they were allocated, so a
  // simulation seed replays alike in a batch and alone.
  std::map<uint64_t, std::shared_ptr<Lease>> leases_;
  uint64_t next_order_ = 0;
  bool draining_ = false;
  std::function<void()> drained_;
  Scheduler::TimerId drain_timer_;
};

}  // namespace singleflight::internal
