// GroupImpl: the group's table of flights, its caches, its Redis link and its
// lifecycle. The flight state machine lives in flight.cpp, the lock tokens
// in lease.cpp.
//
// Lifetime: created by Group (or a test) with new; Close() ends it: pending
// callers get kClosed, then the leases drain (completions written, held and
// possibly-held locks released, each bounded by the command timeout), then
// the Redis link and the scheduler are shut down, the close callbacks run
// and it deletes itself.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "flight.h"
#include "l1_cache.h"
#include "lease.h"
#include "redis_link.h"
#include "scheduler.h"
#include "singleflight/group.h"

namespace singleflight::internal {

class GroupImpl {
 public:
  // `scheduler` is owned (it is shut down, and a UvScheduler deletes itself).
  // `link` is null for a local-only group.
  GroupImpl(Options options, Scheduler* scheduler, std::unique_ptr<RedisLink> link);
  // The production wiring: a UvScheduler and, if options.redis is set, the
  // real Redis link.
  static GroupImpl* Create(uv_loop_t* loop, Options options);

  Call Do(std::string_view key, Producer producer, Callback callback,
          CallOptions call_options = {});
  void Forget(std::string_view key);
  Stats stats() const;
  void Close(std::function<void()> done);
  bool closing() const { return closing_; }

  // Runs with the last stats just before the impl frees itself. Group sets it
  // to forget its pointer, and clears it in its destructor so that the impl
  // never touches a dead Group.
  void set_on_free(std::function<void(const Stats&)> on_free) { on_free_ = std::move(on_free); }

  // --- for flights ---
  Scheduler& scheduler() { return *scheduler_; }
  const Options& options() const { return options_; }
  Stats& mutable_stats() { return stats_; }
  L1Cache& l1() { return l1_; }
  RedisLink* link() { return link_.get(); }
  LeaseSet& leases() { return leases_; }
  // The link lost a working connection and no reconnect attempt has failed
  // yet: Redis is not known to be down, so a new flight waits for the
  // attempt instead of degrading (docs/protocol.md, "Error classes").
  bool reconnecting() const { return ever_up_ && downs_since_up_ == 1; }
  // A flight waits here for the link's next change of state: before the
  // first connect attempt settled (so a group used right after construction
  // does not degrade at once), and after a command whose outcome is unknown.
  void WaitForLink(std::shared_ptr<Flight> flight) {
    waiting_for_link_.push_back(std::move(flight));
  }
  // A flight is over: drop it from the table if it is still the key's flight.
  void OnFlightFinished(Flight* flight);
  // Decides each waiter's result now and delivers it from the loop.
  void Resolve(std::vector<std::shared_ptr<Waiter>> waiters, const Status& status,
               std::shared_ptr<const std::string> value, Source source, bool degraded = false);
  // Resolves one waiter that gives up (timeout, cancel).
  void ResolveOne(const std::shared_ptr<Waiter>& waiter, const Status& status);

  // The link's command / subscriber connection went up or down.
  void OnLinkState(bool up);
  void OnSubscriberState(bool up);

 private:
  ~GroupImpl();
  friend class singleflight::Call;
  Status ValidateOptions() const;
  Call Reject(Status status);
  void ArmDeadline(const std::shared_ptr<Waiter>& waiter, uint32_t timeout_ms);
  void CloseLink();
  void FinishClose();
  // Debug builds abort when the group is used from a thread other than the
  // one that created it: the group is single-loop by contract, and a race
  // here would corrupt memory silently.
  void CheckThread() const;
  void ListenForInvalidations();
  void ForgetInRedis(std::string key);
  void QueueForget(std::string key);
  static constexpr size_t kMaxQueuedForgets = 10000;

  // Forget in another process drops the key from our L1. After a
  // re-subscription the whole L1 is dropped: invalidations sent during the
  // outage are lost, and a stale L1 entry is worse than a Redis round trip.
  class InvalidationListener final : public ChannelListener {
   public:
    explicit InvalidationListener(GroupImpl& group) : group_(group) {}
    void OnSubscribed() override;
    void OnMessage(std::string_view key) override;

   private:
    GroupImpl& group_;
    bool subscribed_once_ = false;
  };

  Options options_;
  Status options_status_;
  std::thread::id thread_ = std::this_thread::get_id();
  Scheduler* scheduler_;
  std::unique_ptr<RedisLink> link_;
  L1Cache l1_;
  Stats stats_;
  // The current flight of each key; a key view points into its flight.
  std::unordered_map<std::string_view, std::shared_ptr<Flight>> flights_;
  // Flights dropped from the table by Forget that still answer their callers.
  std::unordered_map<Flight*, std::shared_ptr<Flight>> detached_;
  std::vector<std::shared_ptr<Flight>> waiting_for_link_;
  std::vector<std::string> forgets_to_retry_;  // Forgets waiting for the link
  // Every lock token this process may hold; drained by Close before the
  // link closes.
  LeaseSet leases_{*scheduler_, stats_, options_};
  bool ever_up_ = false;
  int downs_since_up_ = 0;  // the loss, then one per failed reconnect attempt
  bool subscriber_ever_up_ = false;
  bool closing_ = false;
  bool close_started_ = false;
  std::vector<std::function<void()>> close_done_;
  std::function<void(const Stats&)> on_free_;
  InvalidationListener invalidations_{*this};
  std::string invalidation_channel_;  // empty when not listening
};

}  // namespace singleflight::internal
