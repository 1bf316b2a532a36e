#include "common/redis_target.h"

#include <cstdlib>
#include <string>

namespace examples {

std::string RedisTarget::Describe() const {
  const singleflight::RedisOptions& r = options;
  std::string where =
      r.unix_socket.empty() ? r.host + ":" + std::to_string(r.port) : "unix:" + r.unix_socket;
  if (r.db != 0) where += " db " + std::to_string(r.db);
  return where;
}

bool ParseRedisTarget(std::string_view text, RedisTarget* target, std::string* error) {
  singleflight::Options parsed;
  singleflight::Status status = singleflight::Options::FromUrl(text, &parsed);
  if (!status.ok()) {
    *error = status.message();
    return false;
  }
  target->url = std::string(text);
  target->options = parsed.redis;
  return true;
}

bool RedisTargetFromEnv(RedisTarget* target, std::string* error) {
  const char* env = std::getenv("SINGLEFLIGHT_REDIS");
  if (target->enabled() || env == nullptr || *env == '\0') return true;
  if (ParseRedisTarget(env, target, error)) return true;
  *error = "SINGLEFLIGHT_REDIS: " + *error;
  return false;
}

namespace {

// One command that must answer OK; false and the server's words otherwise.
bool CommandOk(redisContext* c, const char* what, int argc, const char** argv, std::string* error) {
  auto* reply = static_cast<redisReply*>(redisCommandArgv(c, argc, argv, nullptr));
  bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
  if (!ok) *error = std::string(what) + ": " + (reply ? reply->str : c->errstr);
  freeReplyObject(reply);
  return ok;
}

}  // namespace

redisContext* ConnectBlocking(const RedisTarget& target, timeval timeout, std::string* error) {
  const singleflight::RedisOptions& r = target.options;
  redisContext* c = r.unix_socket.empty()
                        ? redisConnectWithTimeout(r.host.c_str(), r.port, timeout)
                        : redisConnectUnixWithTimeout(r.unix_socket.c_str(), timeout);
  if (c == nullptr || c->err != 0) {
    *error =
        "cannot reach redis at " + target.Describe() + (c ? ": " + std::string(c->errstr) : "");
    redisFree(c);
    return nullptr;
  }
  bool ok = true;
  if (!r.password.empty()) {
    if (r.username.empty()) {
      const char* argv[] = {"AUTH", r.password.c_str()};
      ok = CommandOk(c, "AUTH", 2, argv, error);
    } else {
      const char* argv[] = {"AUTH", r.username.c_str(), r.password.c_str()};
      ok = CommandOk(c, "AUTH", 3, argv, error);
    }
  }
  if (ok && r.db != 0) {
    std::string db = std::to_string(r.db);
    const char* argv[] = {"SELECT", db.c_str()};
    ok = CommandOk(c, "SELECT", 2, argv, error);
  }
  if (!ok) {
    redisFree(c);
    return nullptr;
  }
  return c;
}

}  // namespace examples
