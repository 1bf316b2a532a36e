// The Lua scripts of the wire protocol, and ScriptRunner, which runs them on
// a command connection.
//
// Every state change of a flight in Redis is one of these scripts, so each is
// atomic: no other client sees a half-done step. Every key a script touches
// is passed in KEYS (the three keys of a flight share one hash tag, see
// key_naming.h), so the scripts are valid on Redis Cluster; channels are not
// keys and travel in ARGV. docs/protocol.md ("Scripts") repeats the contracts
// for implementers in other languages: the KEYS/ARGV order and the replies
// below are part of the protocol.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_connection.h"

namespace singleflight::internal {

enum class ScriptId {
  // KEYS[1]=result key, KEYS[2]=lock key; ARGV[1]=token, ARGV[2]=lock_ttl_ms.
  // Replies:
  //   {1, envelope}  the result exists; the lock is not touched (kGetOrLockHit);
  //   {2}            the lock is now ours: SET NX PX succeeded, or the lock
  //                  already held ARGV[1] and its TTL was reset to lock_ttl_ms
  //                  (so a retry after a lost reply settles its own token)
  //                  (kGetOrLockAcquired);
  //   {0, pttl_ms, holder}  another token, `holder`, holds the lock for
  //                  pttl_ms more (kGetOrLockBusy). A lock without a TTL (never
  //                  written by this protocol) is given lock_ttl_ms first, so a
  //                  stray key cannot block the flight forever. v1 scripts
  //                  answered {0, pttl_ms}: readers treat a missing holder as
  //                  "unknown holder" (no message is trusted until a re-check).
  kGetOrLock,
  // KEYS[1]=lock; ARGV[1]=token, ARGV[2]=lock_ttl_ms.
  // Reply: 1 if the lock held the token and its TTL was reset, else 0 (the
  // lease is lost: stop renewing).
  kRenew,
  // KEYS[1]=result, KEYS[2]=lock; ARGV[1]=token, ARGV[2]=envelope,
  // ARGV[3]=store_ttl_ms (0: do not store), ARGV[4]=channel.
  // Fenced: only while the lock holds ARGV[1], SET result envelope PX
  // store_ttl_ms (when > 0; a refused SET, e.g. OOM, does not stop the rest),
  // PUBLISH channel envelope, DEL lock. Reply: {1, receivers, stored 1/0}, or
  // {0, 0, 0} when the lock is not ours (nothing written). A store_ttl_ms that
  // is not a non-negative integer is an error reply and changes nothing.
  kComplete,
  // KEYS[1]=lock; ARGV[1]=token, ARGV[2]=channel, ARGV[3]=release notice.
  // If the lock holds the token: DEL it and PUBLISH the notice (so followers
  // re-check at once instead of when the lock would lapse). Reply: 1 if
  // deleted, else 0. Without ARGV[2] nothing is published (v1's form).
  kRelease,
  // KEYS[1]=result; ARGV[1]=invalidation channel, ARGV[2]=raw user key.
  // DEL result, PUBLISH channel key. Reply: DEL's count (0 or 1).
  kForget,
};
inline constexpr size_t kScriptCount = 5;

// GetOrLock's first reply element.
inline constexpr long long kGetOrLockBusy = 0;
inline constexpr long long kGetOrLockHit = 1;
inline constexpr long long kGetOrLockAcquired = 2;

std::string_view ScriptSource(ScriptId id) noexcept;

// Redis Cluster's variant of a script (docs/protocol.md, "Cluster"): Complete
// and Release announce with SPUBLISH, which needs the channel in KEYS, so the
// channel moves from ARGV to the end of KEYS:
//   kComplete: KEYS = result, lock, channel; ARGV = token, envelope, store_ttl_ms
//   kRelease:  KEYS = lock, channel;         ARGV = token, release notice
// Replies are the plain variant's. The other scripts are the same.
std::string_view ShardedScriptSource(ScriptId id) noexcept;

// Moves a plain call's channel from ARGV to KEYS for the sharded variant
// (a Release without a channel, v1's form, is left as it is).
void MoveChannelToKeys(ScriptId id, std::vector<std::string>* keys, std::vector<std::string>* args);
std::string_view ScriptName(ScriptId id) noexcept;  // e.g. "get_or_lock"

// Runs the scripts by EVALSHA, which sends 40 bytes instead of the body.
//
// The shas are learned from SCRIPT LOAD's replies, never computed here.
// Until a sha is known, or when the server answers NOSCRIPT (it restarted,
// or someone ran SCRIPT FLUSH), the call goes by EVAL instead and the sha is
// loaded again, so a caller never sees NOSCRIPT. Calls with large arguments
// always go by EVAL: there the body is a small part of the request, and it
// spares keeping a copy of the arguments for a NOSCRIPT retry.
//
// The callback contract is RedisConnection::Command's: exactly once, never
// inside Run. A script error is an ok Status with an error Reply.
//
// Lifetime: the runner may be destroyed while calls are pending; their
// callbacks still run (a NOSCRIPT reply is then passed on as is). The
// connection must outlive the runner's use of it.
class ScriptRunner {
 public:
  // sharded: run the ShardedScriptSource variants (a Redis Cluster node).
  explicit ScriptRunner(RedisConnection* connection, bool sharded = false);

  ScriptRunner(const ScriptRunner&) = delete;
  ScriptRunner& operator=(const ScriptRunner&) = delete;

  // Loads every script (SCRIPT LOAD) and records the shas. Call on every
  // (re)connect: the server may be a fresh one with an empty script cache.
  void OnConnected();

  void Run(ScriptId id, std::vector<std::string> keys, std::vector<std::string> args,
           RedisConnection::CommandCallback cb);

  // The sha learned for id; empty until a SCRIPT LOAD has answered. For tests.
  const std::string& sha(ScriptId id) const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with pending callbacks (weakly)
};

}  // namespace singleflight::internal
