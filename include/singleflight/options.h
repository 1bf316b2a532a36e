// Options: how a Group is configured, and per-call options.
//
// Every field has a production-minded default; the README's "Options" table
// lists each one, and docs/protocol.md ("Timing parameters") their role on
// the wire.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "singleflight/status.h"

namespace singleflight {

// TLS to Redis (rediss://), with OpenSSL. Verification is on by default: the
// server's chain against the CAs below and its name against server_name (or
// the host when that is empty; an IP address is matched against the
// certificate's IP entries). TLS 1.2 is the minimum.
struct TlsOptions {
  bool enabled = false;
  // Trusted CAs: a PEM bundle and/or a hashed directory. Both empty: the
  // system's default store (e.g. /etc/ssl/certs on Debian).
  std::string ca_file;
  std::string ca_dir;
  // A client certificate (PEM chain) and its key, for mutual TLS.
  std::string cert_file;
  std::string key_file;
  // The name sent as SNI and checked against the certificate; empty = host.
  std::string server_name;
  // false skips every check of the server's certificate: for tests only (a
  // warning is printed once per process).
  bool verify_peer = true;
};

// Redis behind Sentinel: the master is asked of the sentinels (in order) on
// every connection attempt, checked with ROLE once connected, and a
// +switch-master announced by the first sentinel drops the connection at once
// so that it follows the failover. Redis's replication is asynchronous, so a
// failover can lose recent writes — here, locks: a flight whose lock was lost
// may run a second time (README "Connecting").
struct SentinelOptions {
  struct Address {
    std::string host;
    int port = 26379;
  };
  std::vector<Address> sentinels;
  // The name the sentinels monitor the master under; enables Sentinel.
  std::string master_name;
  // AUTH on the sentinels (their requirepass / ACL user), which may differ
  // from the master's. TLS, when on, is used for the sentinels too.
  std::string username;
  std::string password;

  bool enabled() const { return !master_name.empty(); }
};

// Where Redis is and how to talk to it. Redis is used only when `host`,
// `unix_socket` or `sentinel.master_name` is set; otherwise the group is
// local-only.
struct RedisOptions {
  // A host name or IP address. Names are resolved with uv_getaddrinfo, off the
  // loop thread, on every (re)connect.
  std::string host;
  int port = 6379;
  // Path of a unix socket; takes precedence over host/port when set.
  std::string unix_socket;
  // AUTH: password alone (requirepass), or ACL username + password.
  std::string username;
  std::string password;
  // SELECT db after connecting (0 = leave the default).
  int db = 0;
  TlsOptions tls;
  // When enabled, host and port are ignored: the sentinels say where the
  // master is.
  SentinelOptions sentinel;
  // Redis Cluster (URL: ?cluster=1): host:port is any one node, the seed.
  // The slot map is read from it (CLUSTER SLOTS) and kept current on MOVED;
  // each flight's scripts run on its slot's master, one command connection
  // per master, opened at first use; followers listen by sharded pub/sub
  // (SSUBSCRIBE) on that master (README "Redis Cluster"). Not with Sentinel
  // or a unix socket; db must be 0.
  bool cluster = false;

  // A connection attempt (resolve + TCP + AUTH + SELECT) that takes longer
  // than this fails and is retried with backoff.
  uint32_t connect_timeout_ms = 2000;
  // A command without a reply within this time fails with kTimeout at once
  // (it may still run on the server); its late reply is discarded. The
  // connection stays up: a slow server is not a dead one.
  uint32_t command_timeout_ms = 2000;
  // A connection whose server has sent nothing for this long while a command
  // waits for its reply is torn down and rebuilt (0 = 3 x command_timeout_ms;
  // with command_timeout_ms 0 as well, never).
  uint32_t liveness_timeout_ms = 0;
  // Commands not yet written to the socket are bounded: past this many bytes
  // a command fails at once with kUnavailable instead of queueing.
  size_t max_unwritten_bytes = 64u << 20;
  // Reconnect backoff: starts at the minimum, doubles up to the maximum, with
  // full jitter so that a fleet does not reconnect in lockstep.
  uint32_t reconnect_min_ms = 50;
  uint32_t reconnect_max_ms = 5000;

  bool enabled() const { return !host.empty() || !unix_socket.empty() || sentinel.enabled(); }
};

// What Do does while Redis is unreachable.
enum class DegradedMode {
  // Coalesce in this process only (counted in Stats::degraded_calls).
  kLocalOnly,
  // Fail the call at once with kUnavailable.
  kFailFast,
};

struct Options {
  // Sets `redis`'s address, credentials, db and TLS from a Redis URL, the
  // convention of redis-py, ioredis and node-redis (README "Connecting"):
  //   redis://[[user]:password@]host[:port][/db]   (port 6379; [v6] hosts)
  //   rediss://...same...[?tls_ca=FILE&tls_ca_dir=DIR&tls_cert=FILE&tls_key=FILE
  //                      &tls_server_name=NAME&tls_verify=0]   (TLS)
  //   unix://[[user]:password@]/path[?db=N]
  //   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]
  //       [?sentinel_user=U&sentinel_password=P]   (sentinel port 26379;
  //       the credentials before @ are the master's; rediss+sentinel:// is TLS)
  //   redis://host:port?cluster=1, rediss://...&cluster=1   (Redis Cluster,
  //       via any one node)
  //   host:port
  // User, password and parameter values are percent-decoded. The other fields
  // of `redis` (the timeouts) are left as they are. On error: an
  // kInvalidArgument saying what is wrong, and *out is unchanged.
  static Status FromUrl(std::string_view url, Options* out);

  RedisOptions redis;
  DegradedMode when_redis_down = DegradedMode::kLocalOnly;

  // Prefix of every Redis key and channel this group touches. Two groups with
  // different prefixes never see each other's keys.
  std::string key_prefix = "sf:";

  // Inputs are bounded; anything past a bound is refused with a clear code.
  size_t max_key_bytes = 1024;             // kInvalidArgument past it
  size_t max_value_bytes = 4u << 20;       // kTooLarge past it
  size_t max_inflight_keys = 100000;       // kUnavailable past it
  size_t max_waiters_per_flight = 100000;  // kUnavailable past it

  // L1: the in-process cache of finished results (0 entries disables it).
  size_t l1_max_entries = 10000;
  size_t l1_max_bytes = 64u << 20;
  uint32_t l1_ttl_ms = 1000;

  // The lease a leader holds on a key while its producer runs; a watchdog
  // renews it every lock_ttl_ms/3, so it only lapses if the leader dies.
  uint32_t lock_ttl_ms = 10000;
  // How long a result stays in Redis (and bounds how long it stays in L1).
  uint32_t result_ttl_ms = 10000;
  // How long a producer error is cached; 0 = errors are not cached.
  uint32_t error_ttl_ms = 0;
  // 0 (the default): followers never poll. They re-check when the holder's
  // lock would lapse (the PTTL get-or-lock reports, plus a small margin), on
  // every (re-)subscription, and after a message they cannot trust — pub/sub
  // loses messages only with the connection, and a reconnect re-checks
  // (docs/protocol.md, "Why followers need no poll"). A value > 0 caps the
  // wait between a follower's re-checks, for deployments that want a
  // periodic safety net anyway; it costs one script per interval per flight.
  uint32_t fallback_interval_ms = 0;
  // A producer that has not called done after this long fails its flight with
  // kTimeout (and releases the lease). It guards against a producer that never
  // calls done; its late done is ignored.
  uint32_t producer_timeout_ms = 60000;
  // The deadline of a call whose CallOptions::wait_timeout_ms is 0.
  uint32_t default_wait_timeout_ms = 10000;

  // true (the default): the group's handles are ordinary ref'd libuv handles,
  // so uv_run keeps running while the group has a connection open. false:
  // every handle of the group is unref'd (uv_unref) for its whole life, so the
  // group never keeps uv_run from returning — like a Node socket after
  // unref(). The embedder then keeps the loop alive while it waits for
  // results; the Node binding holds one ref'd handle of its own while any
  // call or producer is outstanding, so an idle group lets Node exit.
  bool keep_loop_alive = true;
};

struct CallOptions {
  // This caller's deadline; 0 means Options::default_wait_timeout_ms.
  uint32_t wait_timeout_ms = 0;
};

}  // namespace singleflight
