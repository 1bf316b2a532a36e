#include "sentinel.h"

#include <cstdlib>
#include <sstream>
#include <utility>

namespace singleflight::internal {

RedisOptions SentinelConnectionOptions(const RedisOptions& options,
                                       const SentinelOptions::Address& sentinel) {
  RedisOptions out;
  out.host = sentinel.host;
  out.port = sentinel.port;
  out.username = options.sentinel.username;
  out.password = options.sentinel.password;
  out.tls = options.tls;
  out.tls.server_name.clear();  // the master's name is not the sentinel's
  out.connect_timeout_ms = options.connect_timeout_ms;
  out.command_timeout_ms = options.command_timeout_ms;
  out.reconnect_min_ms = options.reconnect_min_ms;
  out.reconnect_max_ms = options.reconnect_max_ms;
  return out;
}

std::shared_ptr<MasterLookup> MasterLookup::Start(uv_loop_t* loop, Scheduler* scheduler,
                                                  const RedisOptions& options, bool keep_loop_alive,
                                                  Found found, std::function<void()> on_gone) {
  std::shared_ptr<MasterLookup> lookup(new MasterLookup(loop, scheduler, options, keep_loop_alive,
                                                        std::move(found), std::move(on_gone)));
  lookup->self_ = lookup;
  lookup->TryNext();
  return lookup;
}

MasterLookup::MasterLookup(uv_loop_t* loop, Scheduler* scheduler, RedisOptions options,
                           bool keep_loop_alive, Found found, std::function<void()> on_gone)
    : loop_(loop),
      scheduler_(scheduler),
      options_(std::move(options)),
      keep_loop_alive_(keep_loop_alive),
      found_(std::move(found)),
      on_gone_(std::move(on_gone)) {}

void MasterLookup::TryNext() {
  const std::vector<SentinelOptions::Address>& sentinels = options_.sentinel.sentinels;
  if (next_ >= sentinels.size()) {
    GiveUp(sentinels.empty() ? "no sentinels configured" : errors_);
    return;
  }
  const SentinelOptions::Address& sentinel = sentinels[next_++];
  RedisConnection::Handlers handlers;
  // The connection is passed along so that a down of one already closed
  // (its Close runs after the handler returns) is told apart.
  auto holder = std::make_shared<RedisConnection*>(nullptr);
  handlers.on_state = [this, holder](bool up, const Status& why) { OnState(*holder, up, why); };
  connection_ = RedisConnection::Create(
      loop_, scheduler_, SentinelConnectionOptions(options_, sentinel),
      RedisConnection::Mode::kCommand, std::move(handlers), keep_loop_alive_);
  *holder = connection_;
}

void MasterLookup::OnState(RedisConnection* asked, bool up, const Status& why) {
  if (asked != connection_ || !found_) return;
  if (!up) {
    errors_ += (errors_.empty() ? "" : "; ") + std::string("sentinel ") +
               options_.sentinel.sentinels[next_ - 1].host + ":" +
               std::to_string(options_.sentinel.sentinels[next_ - 1].port) + ": " + why.message();
    CloseConnection();
    TryNext();
    return;
  }
  connection_->Command({"SENTINEL", "get-master-addr-by-name", options_.sentinel.master_name},
                       [self = shared_from_this()](const Status& status, const Reply& reply) {
                         self->OnReply(status, reply);
                       });
}

void MasterLookup::OnReply(const Status& status, const Reply& reply) {
  if (!found_) return;
  const SentinelOptions::Address& asked = options_.sentinel.sentinels[next_ - 1];
  std::string who = "sentinel " + asked.host + ":" + std::to_string(asked.port);
  std::string error;
  if (!status.ok()) {
    error = status.message();
  } else if (reply.is_error()) {
    error = reply.str;
  } else if (reply.is_nil()) {
    error = "does not know a master named \"" + options_.sentinel.master_name + "\"";
  } else if (reply.type != Reply::Type::kArray || reply.elements.size() != 2) {
    error = "answered get-master-addr-by-name with something that is not [host, port]";
  } else {
    char* end = nullptr;
    long port = std::strtol(reply.elements[1].str.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && port > 0 && port < 65536 &&
        !reply.elements[0].str.empty()) {
      CloseConnection();
      Finish(Status::Ok(), reply.elements[0].str, static_cast<int>(port));
      return;
    }
    error = "gave a bad master address";
  }
  errors_ += (errors_.empty() ? "" : "; ") + who + ": " + error;
  CloseConnection();
  TryNext();
}

void MasterLookup::GiveUp(const std::string& why) {
  Finish(Status(Code::kUnavailable,
                "no sentinel named the master \"" + options_.sentinel.master_name + "\": " + why),
         "", 0);
  // Nothing open: on_gone from the loop, never inside Start or a handler.
  if (closing_ == 0 && self_) {
    scheduler_->Defer([self = std::move(self_)] {
      if (self->on_gone_) self->on_gone_();
    });
  }
}

void MasterLookup::Finish(const Status& status, const std::string& host, int port) {
  Found found = std::move(found_);
  found_ = nullptr;
  if (found) found(status, host, port);
}

void MasterLookup::Cancel() {
  found_ = nullptr;
  if (connection_ != nullptr) {
    CloseConnection();
  } else if (closing_ == 0 && self_) {
    scheduler_->Defer([self = std::move(self_)] {
      if (self->on_gone_) self->on_gone_();
    });
  }
}

void MasterLookup::CloseConnection() {
  if (connection_ == nullptr) return;
  RedisConnection* connection = connection_;
  connection_ = nullptr;
  ++closing_;
  connection->Close([this] {
    if (--closing_ > 0 || connection_ != nullptr || found_) return;
    // The last connection is gone and no answer is awaited: release.
    std::shared_ptr<MasterLookup> self = std::move(self_);
    if (self && on_gone_) on_gone_();
  });
}

SwitchWatcher::SwitchWatcher(uv_loop_t* loop, Scheduler* scheduler, const RedisOptions& options,
                             bool keep_loop_alive, OnSwitch on_switch)
    : master_name_(options.sentinel.master_name), on_switch_(std::move(on_switch)) {
  RedisConnection::Handlers handlers;
  handlers.on_state = [this](bool up, const Status&) {
    if (up) connection_->Subscribe({"+switch-master"});
  };
  handlers.on_push = [this](const Reply& push) { OnPush(push); };
  connection_ = RedisConnection::Create(
      loop, scheduler, SentinelConnectionOptions(options, options.sentinel.sentinels.front()),
      RedisConnection::Mode::kSubscriber, std::move(handlers), keep_loop_alive);
}

// "message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"
void SwitchWatcher::OnPush(const Reply& push) {
  if (push.type != Reply::Type::kArray || push.elements.size() != 3 ||
      push.elements[0].str != "message") {
    return;
  }
  std::istringstream fields(push.elements[2].str);
  std::string name, old_host, old_port, new_host;
  int new_port = 0;
  if (!(fields >> name >> old_host >> old_port >> new_host >> new_port)) return;
  if (name == master_name_ && on_switch_) on_switch_(new_host, new_port);
}

void SwitchWatcher::Close(std::function<void()> done) {
  on_switch_ = nullptr;
  connection_->Close(std::move(done));
}

}  // namespace singleflight::internal
