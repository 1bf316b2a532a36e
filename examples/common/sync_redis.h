// SyncRedis: the examples' own small blocking Redis client, for their
// bookkeeping beside a Group (execution counters that survive a SIGKILL,
// CONFIG RESETSTAT, INFO commandstats). It speaks to the same server the
// same way as the group: TCP or unix socket, TLS for rediss://, then AUTH
// and SELECT as the URL says. hiredis 0.14's blocking context has no TLS,
// so only its protocol pieces (command formatter and reply reader) are used.
//
// Every socket read and write has the timeout given to Connect, so a call
// never hangs. One command at a time, one thread; not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/redis_target.h"

typedef struct redisReader redisReader;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace examples {

// One reply, as RESP2 has them (the values are hiredis's REDIS_REPLY_*).
struct Reply {
  enum Type { kString = 1, kArray = 2, kInteger = 3, kNil = 4, kStatus = 5, kError = 6 };
  Type type = kNil;
  std::string str;  // kString, kStatus, kError
  long long integer = 0;
  std::vector<Reply> elements;  // kArray
};

class SyncRedis {
 public:
  // nullptr and the reason (prefixed with where the server is) when it
  // cannot connect, the TLS handshake fails, or AUTH/SELECT is refused.
  // Sets SIGPIPE to ignored when it is at its default: OpenSSL writes with
  // write(), and a peer that hung up must not kill the example.
  static std::unique_ptr<SyncRedis> Connect(const RedisTarget& target, int timeout_ms,
                                            std::string* error);
  ~SyncRedis();
  SyncRedis(const SyncRedis&) = delete;
  SyncRedis& operator=(const SyncRedis&) = delete;

  // Sends one command and waits for its reply. A transport failure (timeout,
  // reset, protocol error) comes back as a kError reply with the reason and
  // leaves the connection broken: every later command fails at once with the
  // same reason, since a late reply would answer the wrong command.
  Reply Command(const std::vector<std::string>& argv);
  bool broken() const { return !broken_.empty(); }

 private:
  SyncRedis() = default;
  static bool FindMaster(singleflight::RedisOptions* r, int timeout_ms, std::string* error);
  bool Dial(const singleflight::RedisOptions& r, int timeout_ms, std::string* error);
  bool StartTls(const singleflight::RedisOptions& r, std::string* error);
  Reply Broken(const std::string& why);

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;  // both null for plaintext
  SSL* ssl_ = nullptr;
  redisReader* reader_ = nullptr;
  std::string broken_;  // why the connection is unusable; empty while it works
};

}  // namespace examples
