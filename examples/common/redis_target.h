// Where an example's Redis is, the same way in every example and benchmark:
// `--redis HOST:PORT`, `--redis-url URL` (Options::FromUrl: redis://,
// unix://, host:port), else $SINGLEFLIGHT_REDIS (either form).
#pragma once

#include <string>
#include <string_view>

#include "singleflight/options.h"

namespace examples {

struct RedisTarget {
  std::string url;  // as given, passed on to child processes as --redis-url
  singleflight::RedisOptions options;

  bool enabled() const { return !url.empty(); }
  // For messages: the URL without its password.
  std::string Describe() const;
};

// Parses a URL or host:port into *target. False and the reason otherwise.
bool ParseRedisTarget(std::string_view text, RedisTarget* target, std::string* error);

// When no flag set the target: $SINGLEFLIGHT_REDIS, if set. False (and the
// reason) only when the variable is set and malformed.
bool RedisTargetFromEnv(RedisTarget* target, std::string* error);

}  // namespace examples
