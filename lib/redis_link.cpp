#include "redis_link.h"

namespace singleflight::internal {

// Temporary: the real link lands with the connection layer.
std::unique_ptr<RedisLink> MakeRedisLink(uv_loop_t*, const RedisOptions&, RedisLink::StateCallback) {
  return nullptr;
}

}  // namespace singleflight::internal
