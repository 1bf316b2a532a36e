#include "lua_scripts.h"

#include <utility>

namespace singleflight::internal {
namespace {

// The script bodies are part of the protocol (docs/protocol.md): change them
// only together with the docs, and only compatibly.

constexpr std::string_view kGetOrLockSource = R"lua(
local stored = redis.call('GET', KEYS[1])
if stored then return {1, stored} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {2}
end
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  pttl = tonumber(ARGV[2])
end
return {0, pttl, holder}
)lua";

constexpr std::string_view kRenewSource = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua";

constexpr std::string_view kCompleteSource = R"lua(
local ttl = tonumber(ARGV[3])
if not ttl or ttl < 0 then
  return redis.error_reply('ERR store_ttl_ms must be a non-negative integer')
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0, 0, 0} end
local stored = 0
if ttl > 0 then
  local set = redis.pcall('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if type(set) == 'table' and set.ok then stored = 1 end
end
local receivers = redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('DEL', KEYS[2])
return {1, receivers, stored}
)lua";

constexpr std::string_view kReleaseSource = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  return 1
end
return 0
)lua";

constexpr std::string_view kCompleteShardedSource = R"lua(
local ttl = tonumber(ARGV[3])
if not ttl or ttl < 0 then
  return redis.error_reply('ERR store_ttl_ms must be a non-negative integer')
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0, 0, 0} end
local stored = 0
if ttl > 0 then
  local set = redis.pcall('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if type(set) == 'table' and set.ok then stored = 1 end
end
local receivers = redis.call('SPUBLISH', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[2])
return {1, receivers, stored}
)lua";

constexpr std::string_view kReleaseShardedSource = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if KEYS[2] then redis.call('SPUBLISH', KEYS[2], ARGV[2]) end
  return 1
end
return 0
)lua";

constexpr std::string_view kForgetSource = R"lua(
local deleted = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return deleted
)lua";

// Past this many argument bytes a call goes by EVAL (see the header): the
// body (< 1 KiB) is then a small part of the request.
constexpr size_t kEvalDirectBytes = size_t{8} * 1024;

size_t Index(ScriptId id) {
  return static_cast<size_t>(id);
}

bool IsNoScript(const Reply& reply) {
  return reply.is_error() && reply.str.compare(0, 8, "NOSCRIPT") == 0;
}

size_t ArgBytes(const std::vector<std::string>& keys, const std::vector<std::string>& args) {
  size_t total = 0;
  for (const auto& k : keys) total += k.size();
  for (const auto& a : args) total += a.size();
  return total;
}

std::vector<std::string> BuildArgv(std::string command, std::string_view script_or_sha,
                                   std::vector<std::string> keys, std::vector<std::string> args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back(std::move(command));
  argv.emplace_back(script_or_sha);
  argv.push_back(std::to_string(keys.size()));
  for (auto& k : keys) argv.push_back(std::move(k));
  for (auto& a : args) argv.push_back(std::move(a));
  return argv;
}

}  // namespace

std::string_view ScriptSource(ScriptId id) noexcept {
  switch (id) {
    case ScriptId::kGetOrLock: return kGetOrLockSource;
    case ScriptId::kRenew: return kRenewSource;
    case ScriptId::kComplete: return kCompleteSource;
    case ScriptId::kRelease: return kReleaseSource;
    case ScriptId::kForget: return kForgetSource;
  }
  return {};
}

std::string_view ShardedScriptSource(ScriptId id) noexcept {
  switch (id) {
    case ScriptId::kComplete: return kCompleteShardedSource;
    case ScriptId::kRelease: return kReleaseShardedSource;
    default: return ScriptSource(id);
  }
}

void MoveChannelToKeys(ScriptId id, std::vector<std::string>* keys,
                       std::vector<std::string>* args) {
  size_t channel = 0;  // index in ARGV
  if (id == ScriptId::kComplete) {
    channel = 3;
  } else if (id == ScriptId::kRelease) {
    channel = 1;
  } else {
    return;
  }
  if (args->size() <= channel) return;
  keys->push_back(std::move((*args)[channel]));
  args->erase(args->begin() + static_cast<std::ptrdiff_t>(channel));
}

std::string_view ScriptName(ScriptId id) noexcept {
  switch (id) {
    case ScriptId::kGetOrLock: return "get_or_lock";
    case ScriptId::kRenew: return "renew";
    case ScriptId::kComplete: return "complete";
    case ScriptId::kRelease: return "release";
    case ScriptId::kForget: return "forget";
  }
  return "unknown";
}

struct ScriptRunner::State : std::enable_shared_from_this<State> {
  RedisConnection* connection;
  bool sharded;                                // runs the ShardedScriptSource variants
  std::array<std::string, kScriptCount> shas;  // empty: not known (yet)
  // A load triggered by a miss is under way; spares a burst of identical
  // SCRIPT LOADs when many calls miss at once after a restart.
  std::array<bool, kScriptCount> loading{};

  State(RedisConnection* c, bool s) : connection(c), sharded(s) {}

  std::string_view Source(ScriptId id) const {
    return sharded ? ShardedScriptSource(id) : ScriptSource(id);
  }

  void Load(ScriptId id) {
    loading[Index(id)] = true;
    std::weak_ptr<State> weak = weak_from_this();
    connection->Command(
        {"SCRIPT", "LOAD", std::string(Source(id))},
        [weak, id](const Status& status, const Reply& reply) {
          auto self = weak.lock();
          if (!self) return;
          self->loading[Index(id)] = false;
          if (status.ok() && reply.type == Reply::Type::kString && !reply.str.empty()) {
            self->shas[Index(id)] = reply.str;
          }
        });
  }

  void LoadIfIdle(ScriptId id) {
    if (!loading[Index(id)]) Load(id);
  }
};

ScriptRunner::ScriptRunner(RedisConnection* connection, bool sharded)
    : state_(std::make_shared<State>(connection, sharded)) {}

void ScriptRunner::OnConnected() {
  // Unconditional: a load still pending from the last connection may be
  // about to fail with it.
  for (size_t i = 0; i < kScriptCount; ++i) state_->Load(static_cast<ScriptId>(i));
}

const std::string& ScriptRunner::sha(ScriptId id) const {
  return state_->shas[Index(id)];
}

void ScriptRunner::Run(ScriptId id, std::vector<std::string> keys, std::vector<std::string> args,
                       RedisConnection::CommandCallback cb) {
  State& state = *state_;
  const std::string sha = state.shas[Index(id)];
  if (sha.empty() || ArgBytes(keys, args) > kEvalDirectBytes) {
    if (sha.empty()) state.LoadIfIdle(id);
    state.connection->Command(BuildArgv("EVAL", state.Source(id), std::move(keys), std::move(args)),
                              std::move(cb));
    return;
  }
  std::vector<std::string> argv = BuildArgv("EVALSHA", sha, std::move(keys), std::move(args));
  std::vector<std::string> retry = argv;
  retry[0] = "EVAL";
  retry[1] = std::string(state.Source(id));
  std::weak_ptr<State> weak = state_;
  state.connection->Command(std::move(argv),
                            [weak, id, sha, retry = std::move(retry), cb = std::move(cb)](
                                const Status& status, const Reply& reply) mutable {
                              auto self = weak.lock();
                              if (!self || !status.ok() || !IsNoScript(reply)) {
                                cb(status, reply);
                                return;
                              }
                              // The server lost its script cache: answer this call by EVAL, and
                              // stop using the sha until a fresh SCRIPT LOAD confirms it.
                              if (self->shas[Index(id)] == sha) self->shas[Index(id)].clear();
                              self->LoadIfIdle(id);
                              self->connection->Command(std::move(retry), std::move(cb));
                            });
}

}  // namespace singleflight::internal
