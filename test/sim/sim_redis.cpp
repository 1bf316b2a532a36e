#include "sim/sim_redis.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>

#include "support/replies.h"

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

namespace singleflight::sim {
namespace {

using test::Bulk;
using test::Err;
using test::Int;
using test::StatusReply;

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Redis's string2ll: an optional '-', digits, nothing else, no overflow.
bool ParseInt(const std::string& s, long long* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = 0;
  bool negative = false;
  if (s[0] == '-') {
    negative = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  unsigned long long v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    unsigned long long next = v * 10 + static_cast<unsigned>(s[i] - '0');
    if (next / 10 != v) return false;
    v = next;
  }
  if (!negative && v > static_cast<unsigned long long>(LLONG_MAX)) return false;
  if (negative && v > static_cast<unsigned long long>(LLONG_MAX) + 1) return false;
  *out = negative ? static_cast<long long>(0 - v) : static_cast<long long>(v);
  return true;
}

const char* kSelfKey = "singleflight_sim_redis";

SimRedis* Self(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, kSelfKey);
  auto* self = static_cast<SimRedis*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return self;
}

void PushReply(lua_State* L, const Reply& r, int depth = 0) {
  lua_checkstack(L, 4);
  switch (r.type) {
    case Reply::Type::kNil: lua_pushboolean(L, 0); return;
    case Reply::Type::kString: lua_pushlstring(L, r.str.data(), r.str.size()); return;
    case Reply::Type::kInteger: lua_pushnumber(L, static_cast<lua_Number>(r.integer)); return;
    case Reply::Type::kStatus:
    case Reply::Type::kError:
      lua_newtable(L);
      lua_pushlstring(L, r.str.data(), r.str.size());
      lua_setfield(L, -2, r.type == Reply::Type::kStatus ? "ok" : "err");
      return;
    case Reply::Type::kArray:
      lua_newtable(L);
      for (size_t i = 0; i < r.elements.size(); ++i) {
        if (depth > 64) break;
        PushReply(L, r.elements[i], depth + 1);
        lua_rawseti(L, -2, static_cast<int>(i + 1));
      }
      return;
  }
}

// The value at the top of the stack as Redis would reply it. Pops nothing.
Reply ToReply(lua_State* L, int depth = 0) {
  switch (lua_type(L, -1)) {
    case LUA_TNUMBER: {
      lua_Number n = lua_tonumber(L, -1);
      return Int(static_cast<long long>(std::trunc(n)));
    }
    case LUA_TSTRING: {
      size_t len = 0;
      const char* s = lua_tolstring(L, -1, &len);
      return Bulk(std::string(s, len));
    }
    case LUA_TBOOLEAN: return lua_toboolean(L, -1) ? Int(1) : Reply{};
    case LUA_TTABLE: {
      lua_getfield(L, -1, "err");
      if (lua_type(L, -1) == LUA_TSTRING) {
        Reply r = Err(lua_tostring(L, -1));
        lua_pop(L, 1);
        return r;
      }
      lua_pop(L, 1);
      lua_getfield(L, -1, "ok");
      if (lua_type(L, -1) == LUA_TSTRING) {
        Reply r = StatusReply(lua_tostring(L, -1));
        lua_pop(L, 1);
        return r;
      }
      lua_pop(L, 1);
      Reply array;
      array.type = Reply::Type::kArray;
      if (depth > 64) return array;
      for (int i = 1;; ++i) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          break;
        }
        array.elements.push_back(ToReply(L, depth + 1));
        lua_pop(L, 1);
      }
      return array;
    }
    default: return Reply{};
  }
}

void OpenLib(lua_State* L, lua_CFunction open, const char* name) {
  lua_pushcfunction(L, open);
  lua_pushstring(L, name);
  lua_call(L, 1, 0);
}

}  // namespace

SimRedis::SimRedis(std::function<uint64_t()> now) : now_(std::move(now)) {
  lua_ = luaL_newstate();
  // The libraries Redis opens (it adds cjson, struct, cmsgpack and bit, which
  // the scripts do not use).
  OpenLib(lua_, luaopen_base, "");
  OpenLib(lua_, luaopen_table, LUA_TABLIBNAME);
  OpenLib(lua_, luaopen_string, LUA_STRLIBNAME);
  OpenLib(lua_, luaopen_math, LUA_MATHLIBNAME);
  lua_pushlightuserdata(lua_, this);
  lua_setfield(lua_, LUA_REGISTRYINDEX, kSelfKey);
  lua_newtable(lua_);
  lua_pushcfunction(lua_, &SimRedis::LuaCall);
  lua_setfield(lua_, -2, "call");
  lua_pushcfunction(lua_, &SimRedis::LuaPcall);
  lua_setfield(lua_, -2, "pcall");
  lua_pushcfunction(lua_, &SimRedis::LuaErrorReply);
  lua_setfield(lua_, -2, "error_reply");
  lua_pushcfunction(lua_, &SimRedis::LuaStatusReply);
  lua_setfield(lua_, -2, "status_reply");
  lua_setglobal(lua_, "redis");
}

SimRedis::~SimRedis() {
  if (lua_) lua_close(lua_);
}

// --- Lua side -----------------------------------------------------------------

int SimRedis::LuaCall(lua_State* L) {
  return CallFromLua(L, true);
}
int SimRedis::LuaPcall(lua_State* L) {
  return CallFromLua(L, false);
}

int SimRedis::LuaErrorReply(lua_State* L) {
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "err");
  return 1;
}
int SimRedis::LuaStatusReply(lua_State* L) {
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "ok");
  return 1;
}

// lua_error longjmps: every C++ object lives in the inner block, which is
// left before the error is raised.
int SimRedis::CallFromLua(lua_State* L, bool raise) {
  bool failed = false;
  {
    SimRedis* self = Self(L);
    int n = lua_gettop(L);
    std::vector<std::string> argv;
    bool bad_arg = n == 0;
    for (int i = 1; i <= n && !bad_arg; ++i) {
      int t = lua_type(L, i);
      if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        bad_arg = true;
        break;
      }
      size_t len = 0;
      const char* s = lua_tolstring(L, i, &len);
      argv.emplace_back(s, len);
    }
    Reply reply = bad_arg ? Err("ERR Lua redis lib command arguments must be strings or integers")
                          : self->Command(argv);
    failed = reply.is_error();
    PushReply(L, reply);
  }
  if (failed && raise) return lua_error(L);
  return 1;
}

Reply SimRedis::Eval(std::string_view source, const std::vector<std::string>& keys,
                     const std::vector<std::string>& args) {
  ++scripts_run_;
  lua_State* L = lua_;
  std::string text(source);
  auto found = compiled_.find(text);
  if (found == compiled_.end()) {
    if (luaL_loadbuffer(L, text.data(), text.size(), "@user_script") != 0) {
      std::string message = lua_tostring(L, -1);
      lua_pop(L, 1);
      return Err("ERR Error compiling script: " + message);
    }
    found = compiled_.emplace(text, luaL_ref(L, LUA_REGISTRYINDEX)).first;
  }
  auto set_table = [L](const char* name, const std::vector<std::string>& values) {
    lua_createtable(L, static_cast<int>(values.size()), 0);
    for (size_t i = 0; i < values.size(); ++i) {
      lua_pushlstring(L, values[i].data(), values[i].size());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    lua_setglobal(L, name);
  };
  set_table("KEYS", keys);
  set_table("ARGV", args);
  lua_rawgeti(L, LUA_REGISTRYINDEX, found->second);
  if (lua_pcall(L, 0, 1, 0) != 0) {
    Reply r;
    if (lua_type(L, -1) == LUA_TTABLE) {
      r = ToReply(L);  // a redis.call error: the server's reply as is
      if (!r.is_error()) r = Err("ERR Error running script: error object is not an error");
    } else {
      const char* message = lua_tostring(L, -1);
      r = Err(std::string("ERR Error running script: ") + (message ? message : "?"));
    }
    lua_pop(L, 1);
    return r;
  }
  Reply r = ToReply(L);
  lua_pop(L, 1);
  return r;
}

// --- the store -------------------------------------------------------------------

SimRedis::Entry* SimRedis::Find(const std::string& key) {
  auto it = store_.find(key);
  if (it == store_.end()) return nullptr;
  // Redis: a key is expired once now > its deadline.
  if (it->second.expire_at != 0 && now_() > it->second.expire_at) {
    Remove(it, Removal::kExpired);
    return nullptr;
  }
  return &it->second;
}

void SimRedis::Remove(std::unordered_map<std::string, Entry>::iterator it, Removal how) {
  std::string key = it->first;
  Entry entry = std::move(it->second);
  store_.erase(it);
  if (hooks_.on_remove) hooks_.on_remove(key, entry.value, how, entry.expire_at);
}

Reply SimRedis::Unsupported(std::string what) {
  ++unsupported_;
  last_unsupported_ = what;
  return Err("ERR sim shim does not support " + what);
}

Reply SimRedis::Command(const std::vector<std::string>& argv) {
  if (argv.empty()) return Err("ERR empty command");
  std::string name = Upper(argv[0]);
  auto arity = [&](size_t n) { return argv.size() == n; };
  auto wrong_arity = [&] {
    return Err("ERR wrong number of arguments for '" + argv[0] + "' command");
  };
  uint64_t now = now_();

  if (name == "GET") {
    if (!arity(2)) return wrong_arity();
    Entry* e = Find(argv[1]);
    return e ? Bulk(e->value) : Reply{};
  }
  if (name == "SET") {
    if (argv.size() < 3) return wrong_arity();
    bool nx = false, xx = false;
    long long ttl_ms = 0;
    bool has_ttl = false;
    for (size_t i = 3; i < argv.size(); ++i) {
      std::string opt = Upper(argv[i]);
      if (opt == "NX" && !xx) {
        nx = true;
      } else if (opt == "XX" && !nx) {
        xx = true;
      } else if ((opt == "PX" || opt == "EX") && !has_ttl && i + 1 < argv.size()) {
        long long v = 0;
        if (!ParseInt(argv[i + 1], &v)) return Err("ERR value is not an integer or out of range");
        if (v <= 0) return Err("ERR invalid expire time in 'set' command");
        ttl_ms = opt == "EX" ? v * 1000 : v;
        has_ttl = true;
        ++i;
      } else if (opt == "KEEPTTL" || opt == "GET" || opt == "EXAT" || opt == "PXAT") {
        return Unsupported("SET option " + opt);
      } else {
        return Err("ERR syntax error");
      }
    }
    Entry* e = Find(argv[1]);
    if ((nx && e) || (xx && !e)) return Reply{};
    Entry& slot = store_[argv[1]];
    slot.value = argv[2];
    slot.expire_at = has_ttl ? now + static_cast<uint64_t>(ttl_ms) : 0;
    if (hooks_.on_set) hooks_.on_set(argv[1], argv[2], nx);
    return StatusReply("OK");
  }
  if (name == "DEL") {
    if (argv.size() < 2) return wrong_arity();
    long long deleted = 0;
    for (size_t i = 1; i < argv.size(); ++i) {
      if (!Find(argv[i])) continue;
      Remove(store_.find(argv[i]), Removal::kDeleted);
      ++deleted;
    }
    return Int(deleted);
  }
  if (name == "PEXPIRE") {
    if (argv.size() > 3) return Unsupported("PEXPIRE options");
    if (!arity(3)) return wrong_arity();
    long long ms = 0;
    if (!ParseInt(argv[2], &ms)) return Err("ERR value is not an integer or out of range");
    Entry* e = Find(argv[1]);
    if (!e) return Int(0);
    if (ms <= 0) {
      Remove(store_.find(argv[1]), Removal::kDeleted);
      return Int(1);
    }
    e->expire_at = now + static_cast<uint64_t>(ms);
    return Int(1);
  }
  if (name == "PTTL") {
    if (!arity(2)) return wrong_arity();
    Entry* e = Find(argv[1]);
    if (!e) return Int(-2);
    if (e->expire_at == 0) return Int(-1);
    return Int(static_cast<long long>(e->expire_at - now));
  }
  if (name == "PUBLISH") {
    if (!arity(3)) return wrong_arity();
    auto found = channels_.find(argv[1]);
    if (found == channels_.end()) return Int(0);
    std::vector<uint64_t> receivers = found->second;  // a hook may not change it, but be safe
    for (uint64_t client : receivers) {
      if (hooks_.on_publish) hooks_.on_publish(client, argv[1], argv[2]);
    }
    return Int(static_cast<long long>(receivers.size()));
  }
  return Unsupported("command " + name);
}

// --- pub/sub ---------------------------------------------------------------------

void SimRedis::Subscribe(uint64_t client, const std::string& channel) {
  auto& clients = channels_[channel];
  if (std::find(clients.begin(), clients.end(), client) == clients.end()) {
    clients.push_back(client);
  }
}

void SimRedis::Unsubscribe(uint64_t client, const std::string& channel) {
  auto found = channels_.find(channel);
  if (found == channels_.end()) return;
  auto& clients = found->second;
  clients.erase(std::remove(clients.begin(), clients.end(), client), clients.end());
  if (clients.empty()) channels_.erase(found);
}

void SimRedis::DropClient(uint64_t client) {
  for (auto it = channels_.begin(); it != channels_.end();) {
    auto& clients = it->second;
    clients.erase(std::remove(clients.begin(), clients.end(), client), clients.end());
    it = clients.empty() ? channels_.erase(it) : std::next(it);
  }
}

size_t SimRedis::SubscriptionCount() const {
  size_t n = 0;
  for (const auto& entry : channels_) n += entry.second.size();
  return n;
}

bool SimRedis::Exists(const std::string& key) {
  return Find(key) != nullptr;
}

const std::string* SimRedis::Peek(const std::string& key) {
  Entry* e = Find(key);
  return e ? &e->value : nullptr;
}

void SimRedis::ExpireAll() {
  // Sorted, so that removal hooks run in a deterministic order.
  std::vector<std::string> keys;
  for (const auto& entry : store_) keys.push_back(entry.first);
  std::sort(keys.begin(), keys.end());
  for (const auto& key : keys) Find(key);
}

std::map<std::string, std::pair<std::string, uint64_t>> SimRedis::Snapshot() {
  ExpireAll();
  std::map<std::string, std::pair<std::string, uint64_t>> out;
  for (const auto& entry : store_) out[entry.first] = {entry.second.value, entry.second.expire_at};
  return out;
}

}  // namespace singleflight::sim
