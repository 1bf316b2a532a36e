#include "redis_handshake.h"

namespace singleflight::internal {

std::vector<std::vector<std::string>> HandshakeCommands(const RedisOptions& options) {
  std::vector<std::vector<std::string>> steps;
  if (!options.password.empty()) {
    if (options.username.empty()) {
      steps.push_back({"AUTH", options.password});
    } else {
      steps.push_back({"AUTH", options.username, options.password});
    }
  }
  if (options.db != 0) steps.push_back({"SELECT", std::to_string(options.db)});
  if (options.sentinel.enabled()) steps.push_back({"ROLE"});
  steps.push_back({"PING"});
  return steps;
}

Status CheckHandshakeReply(const std::string& verb, const Reply& reply,
                           const std::string& address) {
  if (reply.is_error()) return Status(Code::kUnavailable, verb + " failed: " + reply.str);
  if (verb == "ROLE" && (reply.elements.empty() || reply.elements[0].str != "master")) {
    std::string role = reply.elements.empty() ? "server of no role" : reply.elements[0].str;
    return Status(Code::kUnavailable,
                  address + " is a " + role + " now, not the master (a failover in progress?)");
  }
  return Status::Ok();
}

}  // namespace singleflight::internal
