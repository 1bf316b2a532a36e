#include "detecting_link.h"

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cluster_link.h"
#include "cluster_slots.h"

namespace singleflight::internal {
namespace {

class DetectingLink final : public RedisLink {
 public:
  DetectingLink(uv_loop_t* loop, Scheduler* scheduler, RedisOptions options, bool keep_loop_alive,
                const PlainLinkFactory& make_plain, StateCallback on_state,
                StateCallback on_subscriber_state)
      : loop_(loop),
        scheduler_(scheduler),
        options_(std::move(options)),
        keep_loop_alive_(keep_loop_alive),
        on_state_(std::move(on_state)),
        on_subscriber_state_(std::move(on_subscriber_state)) {
    plain_ = make_plain(
        [this](bool up, const Status& why) {
          if (cluster_ == nullptr && on_state_) on_state_(up, why);
        },
        [this](bool up, const Status& why) {
          if (cluster_ == nullptr && on_subscriber_state_) on_subscriber_state_(up, why);
        });
  }

  bool settled() const override { return current().settled(); }
  bool up() const override { return current().up(); }
  Status last_error() const override { return current().last_error(); }

  void RunScript(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 ReplyCallback callback) override {
    if (cluster_ != nullptr) {
      return cluster_->RunScript(script, std::move(keys), std::move(args), std::move(callback));
    }
    ++plain_pending_;
    plain_->RunScript(
        script, std::move(keys), std::move(args),
        [this, callback = std::move(callback)](const Status& status, const Reply& reply) mutable {
          OnPlainReply(std::move(callback), status, reply);
        });
  }

  void Listen(const std::string& channel, ChannelListener* listener) override {
    if (closed_) return;
    listeners_[channel].insert(listener);
    current().Listen(channel, listener);
  }

  void Unlisten(const std::string& channel, ChannelListener* listener) override {
    if (closed_) return;
    auto it = listeners_.find(channel);
    if (it != listeners_.end() && it->second.erase(listener) != 0 && it->second.empty()) {
      listeners_.erase(it);
    }
    current().Unlisten(channel, listener);
  }

  void Close(std::function<void()> done) override {
    if (closed_) return;
    closed_ = true;
    // Held callbacks are answered kClosed from the loop, before `done`.
    auto remaining = std::make_shared<int>(1);
    auto one_closed = [remaining, done = std::move(done)] {
      if (--*remaining == 0 && done) done();
    };
    if (!held_.empty()) {
      ++*remaining;
      scheduler_->Defer([held = std::move(held_), one_closed] {
        for (const ReplyCallback& callback : held) {
          callback(Status(Code::kClosed, "connection closed"), Reply{});
        }
        one_closed();
      });
      held_.clear();
    }
    if (cluster_ != nullptr) {
      ++*remaining;
      cluster_->Close(one_closed);
    }
    if (plain_ != nullptr && !plain_closing_) {
      ++*remaining;
      plain_closing_ = true;
      plain_->Close(one_closed);
    } else if (plain_closing_ && !plain_closed_) {
      ++*remaining;  // closing since the switch: `done` waits for it too
      after_plain_closed_ = one_closed;
    }
    one_closed();
  }

 private:
  RedisLink& current() const { return cluster_ != nullptr ? *cluster_ : *plain_; }

  void OnPlainReply(ReplyCallback callback, const Status& status, const Reply& reply) {
    --plain_pending_;
    Redirect redirect;
    bool redirected = status.ok() && ParseRedirect(reply, &redirect);
    if (redirected && !closed_) {
      // It did not run: answered once the cluster link has its first state.
      if (cluster_ == nullptr) BecomeCluster();
      if (cluster_settled_) {
        callback(NotSent(), Reply{});
      } else {
        held_.push_back(std::move(callback));
      }
    } else {
      callback(status, reply);
    }
    MaybeClosePlain();
  }

  static Status NotSent() {
    return Status(Code::kUnavailable, "the server is a Redis Cluster node: now in cluster mode");
  }

  void BecomeCluster() {
    RedisOptions options = options_;
    options.cluster = true;
    cluster_ = MakeClusterLink(
        loop_, scheduler_, options, keep_loop_alive_,
        [this](bool up, const Status& why) { OnClusterState(up, why); },
        [this](bool up, const Status& why) {
          if (on_subscriber_state_) on_subscriber_state_(up, why);
        });
    for (const auto& [channel, listeners] : listeners_) {
      for (ChannelListener* listener : listeners) {
        plain_->Unlisten(channel, listener);
        cluster_->Listen(channel, listener);
      }
    }
  }

  void OnClusterState(bool up, const Status& why) {
    cluster_settled_ = true;
    // Ours first: a held caller retries through a link that reports itself.
    std::vector<ReplyCallback> held = std::move(held_);
    held_.clear();
    if (on_state_) on_state_(up, why);
    for (const ReplyCallback& callback : held) callback(NotSent(), Reply{});
  }

  // The plain link closes once nothing it carried is unanswered.
  void MaybeClosePlain() {
    if (cluster_ == nullptr || plain_pending_ > 0 || plain_closing_ || closed_) return;
    plain_closing_ = true;
    plain_->Close([this] {
      plain_closed_ = true;
      if (after_plain_closed_) return after_plain_closed_();
      // Not from inside its own callback: destroy it from the loop.
      scheduler_->Defer([this] { plain_.reset(); });
    });
  }

  uv_loop_t* loop_;
  Scheduler* scheduler_;
  RedisOptions options_;
  bool keep_loop_alive_;
  StateCallback on_state_;
  StateCallback on_subscriber_state_;
  std::unique_ptr<RedisLink> plain_;    // until the cluster link has taken over and it closed
  std::unique_ptr<RedisLink> cluster_;  // null until the first redirection
  int plain_pending_ = 0;               // scripts sent through plain_, not yet answered
  bool plain_closing_ = false;
  bool plain_closed_ = false;                 // its Close has completed
  std::function<void()> after_plain_closed_;  // our Close waits for the plain one
  bool cluster_settled_ = false;              // cluster_ has reported a state
  std::vector<ReplyCallback> held_;           // redirected callers, until cluster_settled_
  // Every channel's listeners, so that they can move to the cluster link.
  std::unordered_map<std::string, std::unordered_set<ChannelListener*>> listeners_;
  bool closed_ = false;
};

}  // namespace

std::unique_ptr<RedisLink> MakeDetectingLink(uv_loop_t* loop, Scheduler* scheduler,
                                             const RedisOptions& options, bool keep_loop_alive,
                                             const PlainLinkFactory& make_plain,
                                             RedisLink::StateCallback on_command_state,
                                             RedisLink::StateCallback on_subscriber_state) {
  return std::make_unique<DetectingLink>(loop, scheduler, options, keep_loop_alive, make_plain,
                                         std::move(on_command_state),
                                         std::move(on_subscriber_state));
}

}  // namespace singleflight::internal
