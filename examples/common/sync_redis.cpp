#include "common/sync_redis.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

namespace examples {

static_assert(Reply::kString == REDIS_REPLY_STRING && Reply::kArray == REDIS_REPLY_ARRAY &&
                  Reply::kInteger == REDIS_REPLY_INTEGER && Reply::kNil == REDIS_REPLY_NIL &&
                  Reply::kStatus == REDIS_REPLY_STATUS && Reply::kError == REDIS_REPLY_ERROR,
              "Reply::Type mirrors hiredis's reply types");

namespace {

// OpenSSL's reason for the last failure, else errno's (a reset or timeout
// shows up as a syscall error with an empty OpenSSL queue).
std::string LastError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINPROGRESS) return "timed out";
    return errno != 0 ? std::strerror(errno) : "connection closed";
  }
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

Reply FromHiredis(const redisReply* r) {
  Reply out;
  out.type = static_cast<Reply::Type>(r->type);
  if (r->str != nullptr) out.str.assign(r->str, r->len);
  out.integer = r->integer;
  for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(FromHiredis(r->element[i]));
  return out;
}

}  // namespace

std::unique_ptr<SyncRedis> SyncRedis::Connect(const RedisTarget& target, int timeout_ms,
                                              std::string* error) {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
  singleflight::RedisOptions r = target.options;
  if (r.sentinel.enabled() && !FindMaster(&r, timeout_ms, error)) {
    *error = "cannot find the master of " + target.Describe() + ": " + *error;
    return nullptr;
  }
  std::unique_ptr<SyncRedis> c(new SyncRedis);
  c->reader_ = redisReaderCreate();
  if (!c->Dial(r, timeout_ms, error) || (r.tls.enabled && !c->StartTls(r, error))) {
    *error = "cannot reach redis at " + target.Describe() + ": " + *error;
    return nullptr;
  }
  std::vector<std::vector<std::string>> setup;
  if (!r.password.empty() && r.username.empty()) setup.push_back({"AUTH", r.password});
  if (!r.password.empty() && !r.username.empty()) setup.push_back({"AUTH", r.username, r.password});
  if (r.db != 0) setup.push_back({"SELECT", std::to_string(r.db)});
  // Also proves the server speaks our protocol: a TLS port resets a
  // plaintext client only once it has sent something.
  setup.push_back({"PING"});
  for (const auto& argv : setup) {
    Reply reply = c->Command(argv);
    if (reply.type != Reply::kStatus) {
      *error = argv[0] + ": " + reply.str;
      if (argv[0] == "PING" && !r.tls.enabled) *error += " (a TLS port? then use rediss://)";
      return nullptr;
    }
  }
  return c;
}

// Asks the sentinels in order where the master is, and points *r at it.
bool SyncRedis::FindMaster(singleflight::RedisOptions* r, int timeout_ms, std::string* error) {
  std::string errors;
  for (const auto& sentinel : r->sentinel.sentinels) {
    RedisTarget asked;
    asked.url = sentinel.host + ":" + std::to_string(sentinel.port);
    asked.options.host = sentinel.host;
    asked.options.port = sentinel.port;
    asked.options.username = r->sentinel.username;
    asked.options.password = r->sentinel.password;
    asked.options.tls = r->tls;
    asked.options.tls.server_name.clear();
    std::string why;
    std::unique_ptr<SyncRedis> c = Connect(asked, timeout_ms, &why);
    Reply reply =
        c ? c->Command({"SENTINEL", "get-master-addr-by-name", r->sentinel.master_name}) : Reply{};
    if (c && reply.type == Reply::kArray && reply.elements.size() == 2) {
      r->host = reply.elements[0].str;
      r->port = std::atoi(reply.elements[1].str.c_str());
      r->sentinel = {};
      return true;
    }
    if (c) why = reply.type == Reply::kNil ? "no such master" : reply.str;
    errors += (errors.empty() ? "" : "; ") + asked.url + ": " + why;
  }
  *error = errors.empty() ? "no sentinels" : errors;
  return false;
}

bool SyncRedis::Dial(const singleflight::RedisOptions& r, int timeout_ms, std::string* error) {
  // SO_SNDTIMEO bounds connect() too on Linux (it then fails with EINPROGRESS).
  timeval timeout{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  auto open = [&](int family) {
    fd_ = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    return true;
  };
  auto failed = [&] {
    *error = errno == EINPROGRESS ? "connect timed out" : std::strerror(errno);
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  };
  // A unix socket goes through the same loop, as a one-entry address list.
  sockaddr_un un{};
  addrinfo local{};
  addrinfo* list = &local;
  if (!r.unix_socket.empty()) {
    if (r.unix_socket.size() >= sizeof un.sun_path) {
      *error = "socket path too long";
      return false;
    }
    un.sun_family = local.ai_family = AF_UNIX;
    std::memcpy(un.sun_path, r.unix_socket.data(), r.unix_socket.size());
    local.ai_addr = reinterpret_cast<sockaddr*>(&un);
    local.ai_addrlen = sizeof un;
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = getaddrinfo(r.host.c_str(), std::to_string(r.port).c_str(), &hints, &list)) {
      *error = gai_strerror(rc);
      return false;
    }
  }
  for (addrinfo* a = list; a != nullptr && fd_ < 0; a = a->ai_next) {
    if (!open(a->ai_family) || connect(fd_, a->ai_addr, a->ai_addrlen) != 0) failed();
  }
  if (list != &local) freeaddrinfo(list);
  // Each command is one small write waiting for its answer: no Nagle delay.
  int one = 1;
  if (fd_ >= 0 && r.unix_socket.empty())
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd_ >= 0;
}

bool SyncRedis::StartTls(const singleflight::RedisOptions& r, std::string* error) {
  const singleflight::TlsOptions& t = r.tls;
  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (ctx_ == nullptr || !SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION)) {
    *error = "TLS: " + LastError();
    return false;
  }
  const char* ca_file = t.ca_file.empty() ? nullptr : t.ca_file.c_str();
  const char* ca_dir = t.ca_dir.empty() ? nullptr : t.ca_dir.c_str();
  bool cas = ca_file || ca_dir ? SSL_CTX_load_verify_locations(ctx_, ca_file, ca_dir) == 1
                               : SSL_CTX_set_default_verify_paths(ctx_) == 1;
  if (!cas) {
    *error = "TLS CA: " + LastError();
    return false;
  }
  if (!t.cert_file.empty()) {
    const std::string& key = t.key_file.empty() ? t.cert_file : t.key_file;
    if (SSL_CTX_use_certificate_chain_file(ctx_, t.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) {
      *error = "TLS client certificate: " + LastError();
      return false;
    }
  }
  SSL_CTX_set_verify(ctx_, t.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  ssl_ = SSL_new(ctx_);
  // The certificate must name the server: an IP address is matched against
  // its IP entries, a DNS name against its DNS entries and sent as SNI.
  const std::string& name = t.server_name.empty() ? r.host : t.server_name;
  in6_addr ip;
  bool is_ip =
      inet_pton(AF_INET, name.c_str(), &ip) == 1 || inet_pton(AF_INET6, name.c_str(), &ip) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  bool named = name.empty() || !t.verify_peer ||
               (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()));
  if (!named || (!is_ip && !name.empty() && !SSL_set_tlsext_host_name(ssl_, name.c_str())) ||
      !SSL_set_fd(ssl_, fd_)) {
    *error = "TLS: " + LastError();
    return false;
  }
  errno = 0;
  if (SSL_connect(ssl_) != 1) {
    long verify = SSL_get_verify_result(ssl_);
    *error = "TLS handshake: " + LastError();
    if (verify != X509_V_OK)
      *error += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
    return false;
  }
  return true;
}

SyncRedis::~SyncRedis() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  if (fd_ >= 0) close(fd_);
  if (reader_ != nullptr) redisReaderFree(reader_);
}

Reply SyncRedis::Broken(const std::string& why) {
  broken_ = why;
  Reply reply;
  reply.type = Reply::kError;
  reply.str = why;
  return reply;
}

Reply SyncRedis::Command(const std::vector<std::string>& argv) {
  if (broken()) return Broken(broken_);
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  char* command = nullptr;
  int size =
      redisFormatCommandArgv(&command, static_cast<int>(argv.size()), args.data(), lengths.data());
  if (size < 0) return Broken("out of memory");
  errno = 0;
  for (int sent = 0; sent < size;) {
    int n = ssl_ ? SSL_write(ssl_, command + sent, size - sent)
                 : static_cast<int>(send(fd_, command + sent, size - sent, 0));
    if (n <= 0) {
      redisFreeCommand(command);
      return Broken("write: " + LastError());
    }
    sent += n;
  }
  redisFreeCommand(command);
  void* raw = nullptr;
  for (;;) {
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
      return Broken(std::string("protocol: ") + reader_->errstr);
    }
    if (raw != nullptr) break;
    char buffer[16 * 1024];
    errno = 0;
    int n = ssl_ ? SSL_read(ssl_, buffer, sizeof buffer)
                 : static_cast<int>(recv(fd_, buffer, sizeof buffer, 0));
    if (n <= 0) return Broken("read: " + LastError());
    redisReaderFeed(reader_, buffer, n);
  }
  Reply reply = FromHiredis(static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  return reply;
}

}  // namespace examples
