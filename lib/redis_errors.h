// Redis errors, classified: the one table that decides what a failed command
// means for a flight (docs/protocol.md, "Error classes").
//
// A command either never left this process, left it and lost its answer, or
// got one; an answer may be the server's error reply. Each case means
// something different for a lock token the command carried:
//
//   class           seen as                          the command ran?   flight does
//   kNotSent        Code::kUnavailable (link down)   no                 degrade / wait for link
//   kUnknown        Code::kTimeout, Code::kClosed    maybe              keep the token, re-check
//   kRetryable      BUSY LOADING TRYAGAIN MASTERDOWN no                 retry with backoff
//                   CLUSTERDOWN
//   kFatal          every other error reply          no (or no effect)  fail callers: unavailable
//   kOk             a reply                          yes                go on
//
// Unknown error prefixes are fatal: retrying what we do not understand only
// hides it. Cluster redirections (MOVED, ASK) are followed by the cluster
// link (lib/cluster_link.h); one that reaches a flight (a standalone group
// pointed at a cluster node, or too many redirections) is fatal, as is
// CROSSSLOT. CLUSTERDOWN (the cluster lost a shard, e.g. mid-failover) and
// TRYAGAIN (a multi-key command mid-migration) pass with time.
#pragma once

#include <string>
#include <string_view>

#include "redis_reply.h"
#include "singleflight/stats.h"
#include "singleflight/status.h"

namespace singleflight::internal {

enum class ReplyClass { kOk, kNotSent, kUnknown, kRetryable, kFatal };

ReplyClass Classify(const Status& status, const Reply& reply) noexcept;

// The error reply's first word, e.g. "OOM"; empty when it is not an error.
std::string_view ErrorPrefix(const Reply& reply) noexcept;

// Counts a failed command in stats by its class (nothing for kOk).
void CountFailure(ReplyClass reply_class, Stats& stats) noexcept;

// What a caller is told about a fatal error reply: the server's own words,
// with a hint for the ones a user can act on.
Status FatalStatus(const Reply& reply);

// The wait before retrying after the attempt-th retryable error reply in a
// row: 10 ms doubling to 640 ms. The caller's deadline (or the lease's
// confirmed expiry) bounds the total.
uint32_t RetryDelayMs(int attempt) noexcept;

}  // namespace singleflight::internal
