// DetectingLink: a standalone link that becomes a cluster link when the
// server turns out to be a Redis Cluster node.
//
// A group given one host:port without RedisOptions::cluster starts as on a
// standalone server (the plain RedisLink; standalone traffic is unchanged:
// not one command more). The first MOVED or ASK answering one of its scripts
// says the server is a cluster node: from then on everything goes through a
// ClusterLink (lib/cluster_link.h) to the same address. The redirected
// scripts did not run; their callers are answered kUnavailable (not sent)
// once the cluster link has reported its first state, so that a flight
// retries it through the cluster link (or degrades, if the cluster cannot be
// used). Listeners move to the cluster link. The plain link is closed once
// the last script sent through it is answered.
//
// Lifetime and threading: the RedisLink contract.
#pragma once

#include <uv.h>

#include <memory>

#include "redis_link.h"
#include "scheduler.h"
#include "singleflight/options.h"

namespace singleflight::internal {

// `make_plain` makes the standalone link with the state callbacks it is
// given (so that they can be ignored once the cluster link has taken over).
using PlainLinkFactory = std::function<std::unique_ptr<RedisLink>(
    RedisLink::StateCallback on_command_state, RedisLink::StateCallback on_subscriber_state)>;

std::unique_ptr<RedisLink> MakeDetectingLink(uv_loop_t* loop, Scheduler* scheduler,
                                             const RedisOptions& options, bool keep_loop_alive,
                                             const PlainLinkFactory& make_plain,
                                             RedisLink::StateCallback on_command_state,
                                             RedisLink::StateCallback on_subscriber_state);

}  // namespace singleflight::internal
