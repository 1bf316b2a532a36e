// The Node addon: a singleflight::Group on the loop of the Node thread that
// creates it (napi_get_uv_event_loop: the main loop, or a worker_thread's own).
//
// This file only translates. index.js holds the JS conventions (Promises,
// AbortSignal, SingleflightError, the keep-alive while calls are pending);
// here each native method maps to one Group method:
//
//   new NativeGroup(options)                 options already flattened by index.js
//                                            (but for the tls and sentinel objects)
//   do(key, producer, timeoutMs, onResult)   -> call id (number) | {code, message}
//       producer(key, settle): called when this process leads; settle(null,
//       value) or settle(message) reports the outcome (returns false if ignored).
//       It may return a function: run once if the library gives the
//       production up before it settled (producer timeout, close).
//       onResult(code, message, value, source, shared, degraded): exactly once.
//   cancel(id) -> bool        forget(key)        stats() -> object
//   close(callback)           callback() once every call has been answered
//
// Every call from the library into JS goes through MakeCallback on the group's
// async context, so Node drains microtasks and nextTicks after it, exactly as
// after any I/O callback. An exception left pending by JS is handed to
// napi_fatal_exception: it surfaces as Node surfaces any exception thrown from
// an I/O callback ('uncaughtException'), never swallowed here.
//
// Lifetime: while any call is pending the JS object is held by a strong
// reference (ObjectWrap::Ref), so the group is not collected under its
// callbacks. The group's libuv handles never keep the loop alive
// (Options::keep_loop_alive = false); index.js keeps the loop alive while it
// waits. An async environment cleanup hook closes the group when its Node
// environment goes away (a worker_thread ending, process teardown) and lets
// the environment finish only after the group's handles are closed: a worker's
// loop must be empty when Node closes it.
#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "singleflight/group.h"
#include "value_codec.h"

namespace singleflight::node {
namespace {

// Hands an exception that JS left pending to Node's uncaught-exception path.
void ReportPendingException(Napi::Env env) {
  if (!env.IsExceptionPending()) return;
  Napi::Error error = env.GetAndClearPendingException();
  napi_fatal_exception(env, error.Value());
}

// A Buffer is a Uint8Array, so one TypedArray path serves both.
std::string BytesOf(const Napi::Value& value) {
  if (value.IsTypedArray()) {
    auto array = value.As<Napi::TypedArray>();
    auto bytes = array.ArrayBuffer();
    return std::string(static_cast<const char*>(bytes.Data()) + array.ByteOffset(),
                       array.ByteLength());
  }
  return value.As<Napi::String>().Utf8Value();
}

bool IsBytesLike(const Napi::Value& value) {
  return value.IsTypedArray();
}

class Reader {
 public:
  Reader(Napi::Object object) : object_(object) {}

  template <typename T>
  void Number(const char* name, T* out) {
    Napi::Value value = object_.Get(name);
    if (value.IsNumber()) *out = static_cast<T>(value.As<Napi::Number>().Int64Value());
  }
  void String(const char* name, std::string* out) {
    Napi::Value value = object_.Get(name);
    if (value.IsString()) *out = value.As<Napi::String>().Utf8Value();
  }
  void Bool(const char* name, bool* out) {
    Napi::Value value = object_.Get(name);
    if (value.IsBoolean()) *out = value.As<Napi::Boolean>().Value();
  }

 private:
  Napi::Object object_;
};

// An object turns TLS on (index.js passes {} for `tls: true`).
void ReadTls(const Napi::Value& value, TlsOptions* tls) {
  if (!value.IsObject()) return;
  tls->enabled = true;
  Reader r(value.As<Napi::Object>());
  r.String("caFile", &tls->ca_file);
  r.String("caDir", &tls->ca_dir);
  r.String("certFile", &tls->cert_file);
  r.String("keyFile", &tls->key_file);
  r.String("serverName", &tls->server_name);
  r.Bool("verifyPeer", &tls->verify_peer);
}

void ReadSentinel(const Napi::Value& value, SentinelOptions* sentinel) {
  if (!value.IsObject()) return;
  Napi::Object js = value.As<Napi::Object>();
  Reader r(js);
  r.String("masterName", &sentinel->master_name);
  r.String("username", &sentinel->username);
  r.String("password", &sentinel->password);
  Napi::Value list = js.Get("sentinels");
  if (!list.IsArray()) return;
  Napi::Array array = list.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value entry = array.Get(i);
    if (!entry.IsObject()) continue;
    SentinelOptions::Address address;
    Reader a(entry.As<Napi::Object>());
    a.String("host", &address.host);
    a.Number("port", &address.port);
    sentinel->sentinels.push_back(std::move(address));
  }
}

// index.js has checked every type and range it can; the library validates the
// rest (a bad combination makes every call fail with invalid_argument).
Options ReadOptions(Napi::Object js) {
  Options options;
  Reader r(js);
  r.String("host", &options.redis.host);
  r.Number("port", &options.redis.port);
  r.String("unixSocket", &options.redis.unix_socket);
  r.String("username", &options.redis.username);
  r.String("password", &options.redis.password);
  r.Number("db", &options.redis.db);
  r.Number("connectTimeoutMs", &options.redis.connect_timeout_ms);
  r.Number("commandTimeoutMs", &options.redis.command_timeout_ms);
  r.Number("reconnectMinMs", &options.redis.reconnect_min_ms);
  r.Number("reconnectMaxMs", &options.redis.reconnect_max_ms);
  r.Number("livenessTimeoutMs", &options.redis.liveness_timeout_ms);
  r.Number("maxUnwrittenBytes", &options.redis.max_unwritten_bytes);
  ReadTls(js.Get("tls"), &options.redis.tls);
  ReadSentinel(js.Get("sentinel"), &options.redis.sentinel);
  std::string mode;
  r.String("whenRedisDown", &mode);
  if (mode == "failFast") options.when_redis_down = DegradedMode::kFailFast;
  r.String("keyPrefix", &options.key_prefix);
  r.Number("maxKeyBytes", &options.max_key_bytes);
  r.Number("maxValueBytes", &options.max_value_bytes);
  r.Number("maxInflightKeys", &options.max_inflight_keys);
  r.Number("maxWaitersPerFlight", &options.max_waiters_per_flight);
  r.Number("l1MaxEntries", &options.l1_max_entries);
  r.Number("l1MaxBytes", &options.l1_max_bytes);
  r.Number("l1TtlMs", &options.l1_ttl_ms);
  r.Number("lockTtlMs", &options.lock_ttl_ms);
  r.Number("resultTtlMs", &options.result_ttl_ms);
  r.Number("errorTtlMs", &options.error_ttl_ms);
  r.Number("fallbackIntervalMs", &options.fallback_interval_ms);
  r.Number("producerTimeoutMs", &options.producer_timeout_ms);
  r.Number("waitTimeoutMs", &options.default_wait_timeout_ms);
  options.keep_loop_alive = false;
  return options;
}

Napi::Object StatsObject(Napi::Env env, const Stats& s) {
  Napi::Object o = Napi::Object::New(env);
  auto put = [&](const char* name, uint64_t value) {
    o.Set(name, Napi::Number::New(env, static_cast<double>(value)));
  };
  put("calls", s.calls);
  put("rejected", s.rejected);
  put("l1Hits", s.l1_hits);
  put("joins", s.joins);
  put("redisHits", s.redis_hits);
  put("leads", s.leads);
  put("pubsubWakes", s.pubsub_wakes);
  put("fallbackChecks", s.fallback_checks);
  put("fallbackHits", s.fallback_hits);
  put("takeovers", s.takeovers);
  put("timeouts", s.timeouts);
  put("cancels", s.cancels);
  put("producerErrors", s.producer_errors);
  put("producerTimeouts", s.producer_timeouts);
  put("doneIgnored", s.done_ignored);
  put("tooLarge", s.too_large);
  put("malformedDropped", s.malformed_dropped);
  put("reconnects", s.reconnects);
  put("degradedCalls", s.degraded_calls);
  put("redisErrors", s.redis_errors);
  put("checks", s.checks);
  put("completionRetries", s.completion_retries);
  put("invalidations", s.invalidations);
  put("leasesLost", s.leases_lost);
  put("leasesReleased", s.leases_released);
  put("leasesAbandoned", s.leases_abandoned);
  put("foreignDropped", s.foreign_dropped);
  put("unknownOutcomes", s.unknown_outcomes);
  put("errorRepliesRetryable", s.error_replies_retryable);
  put("errorRepliesFatal", s.error_replies_fatal);
  put("undecodableResults", s.undecodable_results);
  put("subscriberReconnects", s.subscriber_reconnects);
  put("subscriberErrors", s.subscriber_errors);
  put("inflight", s.inflight);
  return o;
}

class NativeGroup : public Napi::ObjectWrap<NativeGroup> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeGroup",
        {InstanceMethod<&NativeGroup::Do>("do"), InstanceMethod<&NativeGroup::Cancel>("cancel"),
         InstanceMethod<&NativeGroup::Forget>("forget"),
         InstanceMethod<&NativeGroup::GetStats>("stats"),
         InstanceMethod<&NativeGroup::Close>("close")});
  }

  explicit NativeGroup(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NativeGroup>(info), context_(info.Env(), "singleflight:Group") {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) {
      Napi::TypeError::New(env, "NativeGroup: options must be an object")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object js = info[0].As<Napi::Object>();
    Reader(js).Bool("raw", &raw_);
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "singleflight: no libuv loop for this thread")
          .ThrowAsJavaScriptException();
      return;
    }
    group_ = std::make_unique<Group>(loop, ReadOptions(js));
    napi_add_async_cleanup_hook(env, OnEnvCleanup, this, &cleanup_hook_);
  }

  ~NativeGroup() override {
    // Collected (only possible with nothing pending) before its environment
    // ended: the loop is still running, so the group can close by itself.
    if (cleanup_hook_ != nullptr) napi_remove_async_cleanup_hook(cleanup_hook_);
    cleanup_hook_ = nullptr;
    env_ending_ = true;  // a finalizer may not call JS: abandon handlers are skipped
    group_.reset();
    abandon_handlers_->clear();
  }

 private:
  struct PendingCall {
    Call call;
    Napi::FunctionReference on_result;
  };

  Napi::Value Do(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!(info[0].IsString() || IsBytesLike(info[0])) || !info[1].IsFunction() ||
        !info[2].IsNumber() || !info[3].IsFunction()) {
      Napi::TypeError::New(env, "do(key, producer, timeoutMs, onResult)")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::string key = BytesOf(info[0]);
    auto producer_fn =
        std::make_shared<Napi::FunctionReference>(Napi::Persistent(info[1].As<Napi::Function>()));
    CallOptions call_options;
    call_options.wait_timeout_ms = info[2].As<Napi::Number>().Uint32Value();
    uint64_t id = next_id_++;

    Call call = group_->Do(
        key,
        [this, producer_fn](const ProducerContext& ctx, Done done) {
          RunProducer(*producer_fn, ctx.key, std::move(done));
        },
        [this, id](const Result& result) { Deliver(id, result); }, call_options);
    if (!call.ok()) {
      Napi::Object rejected = Napi::Object::New(env);
      rejected.Set("code", std::string(CodeName(call.status().code())));
      rejected.Set("message", call.status().message());
      return rejected;
    }
    if (calls_.empty()) Ref();  // held while any callback is still to come
    calls_.emplace(id, PendingCall{call, Napi::Persistent(info[3].As<Napi::Function>())});
    return Napi::Number::New(env, static_cast<double>(id));
  }

  void RunProducer(Napi::FunctionReference& producer, std::string_view key, Done done) {
    if (env_ending_) {
      done.Fail("the Node environment is ending");
      return;
    }
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    bool raw = raw_;
    uint64_t production = next_production_++;
    auto settled = std::make_shared<bool>(false);
    Napi::Function settle = Napi::Function::New(
        env,
        [done, raw, settled, handlers = abandon_handlers_,
         production](const Napi::CallbackInfo& info) -> Napi::Value {
          Napi::Env env = info.Env();
          *settled = true;
          handlers->erase(production);  // settled: no abandon to report
          if (info[0].IsString()) {
            return Napi::Boolean::New(env, done.Fail(info[0].As<Napi::String>().Utf8Value()));
          }
          Napi::Value value = info[1];
          if (!(value.IsString() || IsBytesLike(value))) {
            return Napi::Boolean::New(env, done.Fail("producer must return a string or a Buffer"));
          }
          std::string bytes = BytesOf(value);
          if (!raw) {
            bytes = EncodeTyped(value.IsString() ? ValueKind::kString : ValueKind::kBytes, bytes);
          }
          return Napi::Boolean::New(env, done(std::move(bytes)));
        },
        "settle");
    Napi::Buffer<char> key_bytes = Napi::Buffer<char>::Copy(env, key.data(), key.size());
    Napi::Value on_abandon = producer.MakeCallback(env.Global(), {key_bytes, settle}, context_);
    ReportPendingException(env);
    if (!*settled && !on_abandon.IsEmpty() && on_abandon.IsFunction()) {
      WatchAbandon(done, production, on_abandon.As<Napi::Function>());
    }
  }

  // The JS function runs if the library gives the production up. It is kept
  // in this group's table, by production, rather than in the Done's callback
  // or in settle: the table frees it on the JS thread (when the production
  // settles or is given up, or with the group), while the callbacks, which
  // may outlive the group, hold only its number.
  void WatchAbandon(const Done& done, uint64_t production, Napi::Function on_abandon) {
    abandon_handlers_->emplace(production, Napi::Persistent(on_abandon));
    done.OnAbandon([this, production] {
      auto found = abandon_handlers_->find(production);
      if (found == abandon_handlers_->end()) return;
      Napi::FunctionReference handler = std::move(found->second);
      abandon_handlers_->erase(found);
      if (env_ending_) return;  // no JS may run any more
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      handler.MakeCallback(env.Global(), {}, context_);
      ReportPendingException(env);
    });
  }

  void Deliver(uint64_t id, const Result& result) {
    auto found = calls_.find(id);
    if (found == calls_.end()) return;  // cannot happen: one callback per call
    Napi::FunctionReference on_result = std::move(found->second.on_result);
    calls_.erase(found);
    if (env_ending_) return;  // no JS may run any more
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Status status = result.status;
    Napi::Value value = env.Undefined();
    if (status.ok()) value = ValueOf(env, result.value(), &status);
    std::initializer_list<napi_value> args = {
        Napi::String::New(env, std::string(CodeName(status.code()))),
        Napi::String::New(env, status.message()),
        value,
        Napi::String::New(env, std::string(SourceName(result.source))),
        Napi::Boolean::New(env, result.shared),
        Napi::Boolean::New(env, result.degraded)};
    on_result.MakeCallback(env.Global(), args, context_);
    ReportPendingException(env);
    if (calls_.empty()) Unref();  // nothing left to call back: collectable again
  }

  Napi::Value ValueOf(Napi::Env env, std::string_view bytes, Status* status) {
    if (raw_) return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
    ValueKind kind;
    std::string_view payload;
    if (!DecodeTyped(bytes, &kind, &payload)) {
      *status = Status(Code::kInvalidArgument,
                       "the stored value is not a string or Buffer written by the Node binding "
                       "(a raw-bytes writer? use { raw: true } on every group of this key)");
      return env.Undefined();
    }
    if (kind == ValueKind::kString) {
      return Napi::String::New(env, payload.data(), payload.size());
    }
    return Napi::Buffer<char>::Copy(env, payload.data(), payload.size());
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) return Napi::Boolean::New(env, false);
    auto found = calls_.find(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
    if (found == calls_.end()) return Napi::Boolean::New(env, false);
    return Napi::Boolean::New(env, found->second.call.Cancel());
  }

  Napi::Value Forget(const Napi::CallbackInfo& info) {
    if (info[0].IsString() || IsBytesLike(info[0])) group_->Forget(BytesOf(info[0]));
    return info.Env().Undefined();
  }

  Napi::Value GetStats(const Napi::CallbackInfo& info) {
    return StatsObject(info.Env(), group_->stats());
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto done = std::make_shared<Napi::FunctionReference>();
    if (info[0].IsFunction()) *done = Napi::Persistent(info[0].As<Napi::Function>());
    Ref();  // until `done` has run
    group_->Close([this, done] {
      if (env_ending_) return;
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      if (!done->IsEmpty()) {
        done->MakeCallback(env.Global(), {}, context_);
        ReportPendingException(env);
      }
      Unref();
    });
    return env.Undefined();
  }

  // The environment is going away: close the group, and tell Node it may go
  // on once the group's handles are closed. No JS may run from here on, so
  // the pending callbacks (which the close answers with `closed`) are
  // dropped rather than called.
  //
  // Node runs the loop for as long as a cleanup hook is pending, but libuv's
  // uv_run does not poll a loop whose handles are all unref'd (the group's
  // are): it would spin without ever reading Redis's replies. A ref'd
  // uv_async_t keeps the loop polling until the close is done; the hook is
  // removed once that handle, too, is closed.
  static void OnEnvCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
    auto* self = static_cast<NativeGroup*>(arg);
    self->cleanup_hook_ = nullptr;
    self->env_ending_ = true;
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(self->Env(), &loop);
    auto* keep_polling = new uv_async_t;
    uv_async_init(loop, keep_polling, nullptr);
    keep_polling->data = handle;
    self->group_->Close([keep_polling] {
      uv_close(reinterpret_cast<uv_handle_t*>(keep_polling), [](uv_handle_t* closed) {
        auto hook = static_cast<napi_async_cleanup_hook_handle>(closed->data);
        delete reinterpret_cast<uv_async_t*>(closed);
        napi_remove_async_cleanup_hook(hook);
      });
    });
  }

  Napi::AsyncContext context_;
  std::unique_ptr<Group> group_;
  bool raw_ = false;
  // Producers' abandon handlers by production (WatchAbandon). An entry goes
  // when its production settles (settle, which shares the table, erases it)
  // or is given up (timeout, close), so a closed group's table is empty.
  std::shared_ptr<std::unordered_map<uint64_t, Napi::FunctionReference>> abandon_handlers_ =
      std::make_shared<std::unordered_map<uint64_t, Napi::FunctionReference>>();
  uint64_t next_production_ = 0;
  bool env_ending_ = false;
  napi_async_cleanup_hook_handle cleanup_hook_ = nullptr;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, PendingCall> calls_;  // accepted, not yet answered
};

// parseRedisUrl(text) -> the RedisOptions fields the URL sets (camelCased,
// only those it sets; `tls` is present, maybe empty, when TLS is on, and
// verifyPeer only when it is off), or a string: why the URL was refused. The library's
// own Options::FromUrl, so that C++ and Node read a URL the same way.
Napi::Value ParseRedisUrl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Napi::TypeError::New(env, "parseRedisUrl(url: string)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Options options;
  Status status = Options::FromUrl(info[0].As<Napi::String>().Utf8Value(), &options);
  if (!status.ok()) return Napi::String::New(env, status.message());
  const RedisOptions& r = options.redis;
  Napi::Object out = Napi::Object::New(env);
  if (!r.host.empty()) {
    out.Set("host", r.host);
    out.Set("port", r.port);
  }
  if (!r.unix_socket.empty()) out.Set("unixSocket", r.unix_socket);
  if (!r.username.empty()) out.Set("username", r.username);
  if (!r.password.empty()) out.Set("password", r.password);
  if (r.db != 0) out.Set("db", r.db);
  if (r.tls.enabled) {
    Napi::Object tls = Napi::Object::New(env);
    auto put = [&](const char* name, const std::string& value) {
      if (!value.empty()) tls.Set(name, value);
    };
    put("caFile", r.tls.ca_file);
    put("caDir", r.tls.ca_dir);
    put("certFile", r.tls.cert_file);
    put("keyFile", r.tls.key_file);
    put("serverName", r.tls.server_name);
    if (!r.tls.verify_peer) tls.Set("verifyPeer", false);
    out.Set("tls", tls);
  }
  if (r.sentinel.enabled()) {
    const SentinelOptions& s = r.sentinel;
    Napi::Array sentinels = Napi::Array::New(env, s.sentinels.size());
    for (uint32_t i = 0; i < s.sentinels.size(); ++i) {
      Napi::Object address = Napi::Object::New(env);
      address.Set("host", s.sentinels[i].host);
      address.Set("port", s.sentinels[i].port);
      sentinels.Set(i, address);
    }
    Napi::Object sentinel = Napi::Object::New(env);
    sentinel.Set("sentinels", sentinels);
    sentinel.Set("masterName", s.master_name);
    if (!s.username.empty()) sentinel.Set("username", s.username);
    if (!s.password.empty()) sentinel.Set("password", s.password);
    out.Set("sentinel", sentinel);
  }
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeGroup", NativeGroup::Define(env));
  exports.Set("parseRedisUrl", Napi::Function::New(env, ParseRedisUrl, "parseRedisUrl"));
  return exports;
}

}  // namespace
}  // namespace singleflight::node

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return singleflight::node::Init(env, exports);
}
NODE_API_MODULE(singleflight, InitAddon)
