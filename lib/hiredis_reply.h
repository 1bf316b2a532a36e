// Copies a hiredis reply into a Reply, so that nothing above the connection
// layer (and no test) depends on hiredis types or on hiredis's reply lifetime.
#pragma once

#include <hiredis/hiredis.h>

#include "redis_reply.h"

namespace singleflight::internal {

// A null reply becomes a kNil Reply. Nesting is bounded by hiredis's reader.
Reply ToReply(const redisReply* reply);

}  // namespace singleflight::internal
