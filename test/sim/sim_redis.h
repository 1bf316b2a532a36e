// SimRedis: the simulation's Redis server. An in-memory string store with PX
// expiry on the simulation's virtual clock, pub/sub, and the library's own Lua
// scripts run by an embedded Lua 5.1 (the version Redis embeds) through a
// small `redis.call` shim.
//
// The shim supports exactly the commands the scripts use (GET, SET with
// NX/XX/PX/EX, DEL, PEXPIRE, PTTL, PUBLISH) and converts values between Lua
// and RESP as Redis does:
//   Redis -> Lua: nil bulk -> false, bulk -> string, integer -> number,
//                 status -> {ok=...}, error -> {err=...} (pcall) or a raised
//                 error (call), array -> table.
//   Lua -> Redis: number -> integer (truncated), string -> bulk,
//                 true -> 1, false/nil -> nil bulk, {err=...} -> error,
//                 {ok=...} -> status, other tables -> arrays that stop at the
//                 first nil.
// Anything else (another command, another option) is an error reply that
// says so, and counts in unsupported(): the sim reports it instead of
// silently running a script the shim does not understand.
//
// Scripts are taken as text (the runner passes ScriptSource(id)), compiled
// once per distinct text and cached.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "redis_reply.h"

struct lua_State;

namespace singleflight::sim {

using internal::Reply;

class SimRedis {
 public:
  // How a key left the store.
  enum class Removal { kDeleted, kExpired };

  struct Hooks {
    // After every SET that wrote; `nx` when it was SET ... NX.
    std::function<void(const std::string& key, const std::string& value, bool nx)> on_set;
    // A key left the store; `expire_at` is its deadline (0: none).
    std::function<void(const std::string& key, const std::string& value, Removal how,
                       uint64_t expire_at)>
        on_remove;
    // PUBLISH reached subscriber `client`.
    std::function<void(uint64_t client, const std::string& channel, const std::string& payload)>
        on_publish;
  };

  // `now` is the virtual clock in ms.
  explicit SimRedis(std::function<uint64_t()> now);
  ~SimRedis();
  SimRedis(const SimRedis&) = delete;
  SimRedis& operator=(const SimRedis&) = delete;

  Hooks& hooks() { return hooks_; }

  // EVAL: runs `source` with KEYS and ARGV. A Lua error is an error reply.
  Reply Eval(std::string_view source, const std::vector<std::string>& keys,
             const std::vector<std::string>& args);
  // One command, as the shim runs it (also for tests).
  Reply Command(const std::vector<std::string>& argv);

  // Pub/sub: `client` is the id of a subscriber connection.
  void Subscribe(uint64_t client, const std::string& channel);
  void Unsubscribe(uint64_t client, const std::string& channel);
  void DropClient(uint64_t client);
  size_t SubscriptionCount() const;

  // Direct looks at the store (expired keys are removed first).
  bool Exists(const std::string& key);
  const std::string* Peek(const std::string& key);
  // Expires every key that is due (a real server does this in the background).
  void ExpireAll();
  // Keys currently stored, with their expiry (0: none), after ExpireAll.
  std::map<std::string, std::pair<std::string, uint64_t>> Snapshot();

  uint64_t scripts_run() const { return scripts_run_; }
  uint64_t unsupported() const { return unsupported_; }
  const std::string& last_unsupported() const { return last_unsupported_; }

 private:
  struct Entry {
    std::string value;
    uint64_t expire_at = 0;  // 0: no expiry
  };
  Entry* Find(const std::string& key);  // null when absent or expired (then removed)
  void Remove(std::unordered_map<std::string, Entry>::iterator it, Removal how);
  Reply Unsupported(std::string what);

  static int LuaCall(lua_State* L);
  static int LuaPcall(lua_State* L);
  static int LuaErrorReply(lua_State* L);
  static int LuaStatusReply(lua_State* L);
  static int CallFromLua(lua_State* L, bool raise);

  std::function<uint64_t()> now_;
  Hooks hooks_;
  std::unordered_map<std::string, Entry> store_;
  std::map<std::string, std::vector<uint64_t>> channels_;  // in subscription order
  lua_State* lua_ = nullptr;
  std::unordered_map<std::string, int> compiled_;  // script text -> registry ref
  uint64_t scripts_run_ = 0;
  uint64_t unsupported_ = 0;
  std::string last_unsupported_;
};

}  // namespace singleflight::sim
