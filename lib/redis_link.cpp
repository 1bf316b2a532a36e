// The real RedisLink: a command connection running the Lua scripts, and the
// process's one subscriber connection multiplexing every flight's channel.
#include "redis_link.h"

#include "cluster_link.h"
#include "detecting_link.h"
#include "lua_scripts.h"
#include "redis_connection.h"
#include "subscriber.h"

namespace singleflight::internal {
namespace {

class RealLink final : public RedisLink {
 public:
  RealLink(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options, bool keep_loop_alive,
           StateCallback on_state, StateCallback on_subscriber_state)
      : on_state_(std::move(on_state)) {
    RedisConnection::Handlers handlers;
    handlers.on_state = [this](bool up, const Status& why) { OnCommandState(up, why); };
    command_ = RedisConnection::Create(loop, scheduler, options, RedisConnection::Mode::kCommand,
                                       std::move(handlers), keep_loop_alive);
    scripts_ = std::make_unique<ScriptRunner>(command_);
    Subscriber::Handlers subscriber_handlers;
    subscriber_handlers.on_state = std::move(on_subscriber_state);
    subscriber_ = std::make_unique<Subscriber>(loop, scheduler, options,
                                               std::move(subscriber_handlers), keep_loop_alive);
  }

  bool settled() const override { return settled_; }
  bool up() const override { return up_; }
  Status last_error() const override { return last_error_; }

  void RunScript(ScriptId script, std::vector<std::string> keys, std::vector<std::string> args,
                 ReplyCallback callback) override {
    // After Close the connection itself answers kClosed, from the loop.
    scripts_->Run(script, std::move(keys), std::move(args), std::move(callback));
  }

  void Listen(const std::string& channel, ChannelListener* listener) override {
    if (!closed_) subscriber_->Add(channel, listener);
  }

  void Unlisten(const std::string& channel, ChannelListener* listener) override {
    if (!closed_) subscriber_->Remove(channel, listener);
  }

  void Close(std::function<void()> done) override {
    closed_ = true;
    // Both connections close; `done` runs when the second one has.
    auto remaining = std::make_shared<int>(2);
    auto one_closed = [remaining, done = std::move(done)] {
      if (--*remaining == 0 && done) done();
    };
    subscriber_->Close(one_closed);
    command_->Close(one_closed);
  }

 private:
  void OnCommandState(bool up, const Status& why) {
    settled_ = true;
    up_ = up;
    if (!up) last_error_ = why;
    // A restarted server has an empty script cache: load the scripts on
    // every connect so EVALSHA normally hits.
    if (up) scripts_->OnConnected();
    if (on_state_) on_state_(up, why);
  }

  StateCallback on_state_;
  RedisConnection* command_;  // frees itself after Close
  std::unique_ptr<ScriptRunner> scripts_;
  std::unique_ptr<Subscriber> subscriber_;
  bool settled_ = false;
  bool up_ = false;
  bool closed_ = false;
  Status last_error_;
};

}  // namespace

std::unique_ptr<RedisLink> MakeRedisLink(uv_loop_t* loop, Scheduler* scheduler,
                                         const RedisOptions& options, bool keep_loop_alive,
                                         RedisLink::StateCallback on_command_state,
                                         RedisLink::StateCallback on_subscriber_state) {
  if (options.cluster) {
    return MakeClusterLink(loop, scheduler, options, keep_loop_alive, std::move(on_command_state),
                           std::move(on_subscriber_state));
  }
  if (options.sentinel.enabled() || !options.unix_socket.empty()) {
    return std::make_unique<RealLink>(loop, scheduler, options, keep_loop_alive,
                                      std::move(on_command_state), std::move(on_subscriber_state));
  }
  // A host:port may be a cluster node: the first MOVED says so.
  return MakeDetectingLink(
      loop, scheduler, options, keep_loop_alive,
      [loop, scheduler, &options, keep_loop_alive](RedisLink::StateCallback on_state,
                                                   RedisLink::StateCallback on_subscriber_state) {
        return std::make_unique<RealLink>(loop, scheduler, options, keep_loop_alive,
                                          std::move(on_state), std::move(on_subscriber_state));
      },
      std::move(on_command_state), std::move(on_subscriber_state));
}

}  // namespace singleflight::internal
