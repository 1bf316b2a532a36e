// ClusterLink: the RedisLink of a group on Redis Cluster (RedisOptions::cluster).
//
// What it does (docs/protocol.md, "Cluster"):
// - The slot map comes from CLUSTER SLOTS, asked of the seed (host:port of
//   the options) or, when the seed is down, of any master this link is
//   connected to. It is refreshed on every MOVED, on a master's connection
//   loss and after a dropped sharded subscription, and every 30 s
//   otherwise; refreshes are one at a time and at least 100 ms apart, so a
//   storm of redirections costs one CLUSTER SLOTS per 100 ms.
// - A script runs on the master of its first key's slot (a flight's keys and
//   channel share one hash tag, lib/key_naming.h). One command connection
//   per master, opened at its first use; each has its own ScriptRunner (so
//   SCRIPT LOAD and EVALSHA per node) running the sharded variants of the
//   scripts (Complete and Release SPUBLISH, lib/lua_scripts.h).
// - MOVED: the slot's owner is updated at once, a refresh is asked for, and
//   the call goes to the new owner. ASK: ASKING then the script by EVAL on the
//   target, once. A call follows at most kMaxRedirects redirections; past
//   that, the last error reply is its answer (a fatal one).
// - A call before the first map waits for it, within the same bound below
//   (a group that detected a cluster, lib/detecting_link.h, hands its calls
//   over before the map is read); once the first try has failed (the seed is
//   down, or gave no usable map) such calls fail at once with kUnavailable.
// - A call for a master whose connection is not up (still connecting, or lost)
//   waits for it, at most command_timeout_ms (connect_timeout_ms if that is
//   0, then 2 s), and is re-routed if a refresh moves its slot meanwhile;
//   past that bound it fails with kUnavailable, not sent.
// - TRYAGAIN and CLUSTERDOWN are passed on: they are retryable error replies
//   (lib/redis_errors.h), which the flight retries with backoff within its
//   callers' deadline.
// - Flight channels (those with a hash tag) are listened to with SSUBSCRIBE
//   on their slot's master, one sharded Subscriber per master that has live
//   channels. When the server ends or refuses a sharded subscription (a slot
//   moved), its listeners are taken off that node, the map is refreshed, and
//   they are subscribed on the new owner; the subscription's confirmation
//   there makes each listener re-check (ChannelListener::OnSubscribed).
// - Channels without a hash tag (the invalidation channel) are plain
//   SUBSCRIBE on the seed: plain PUBLISH reaches every node of a cluster.
//
// up(): the slot map is known and at least one master's connection is up.
// settled(): the map has been read once, or the seed has failed once.
//
// Lifetime and threading: the RedisLink contract. Close fails waiting calls
// with kClosed and closes every connection; done runs after the last one.
#pragma once

#include <uv.h>

#include <memory>

#include "redis_link.h"
#include "scheduler.h"
#include "singleflight/options.h"

namespace singleflight::internal {

std::unique_ptr<RedisLink> MakeClusterLink(uv_loop_t* loop, Scheduler* scheduler,
                                           const RedisOptions& options, bool keep_loop_alive,
                                           RedisLink::StateCallback on_command_state,
                                           RedisLink::StateCallback on_subscriber_state);

}  // namespace singleflight::internal
