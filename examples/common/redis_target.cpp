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

}  // namespace examples
