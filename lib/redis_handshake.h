// The handshake: what a connection sends before it counts as up, and which
// answers let it go on. Kept apart from the connection's I/O so that the
// rules (AUTH before SELECT, ROLE behind Sentinel, PING last) read in one
// place.
#pragma once

#include <string>
#include <vector>

#include "redis_reply.h"
#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

// In order: AUTH (password, or ACL user + password) and SELECT as
// configured; ROLE behind Sentinel (the server named may have been demoted
// since); PING last, which also proves the server answers (not LOADING, not
// paused) before the connection is called ready.
std::vector<std::vector<std::string>> HandshakeCommands(const RedisOptions& options);

// ok when `reply` to the handshake command `verb` lets the connection go on;
// else kUnavailable saying why (`address` names the server).
Status CheckHandshakeReply(const std::string& verb, const Reply& reply, const std::string& address);

}  // namespace singleflight::internal
