#include "support/redis_server.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "hiredis_reply.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kReadyTimeout = std::chrono::seconds(10);
constexpr auto kStopTimeout = std::chrono::seconds(5);
// Readiness and exit are probed, not awaited: a fork/exec'd server offers no
// event to wait on. The probe interval only bounds how fast we notice.
constexpr auto kProbeInterval = std::chrono::milliseconds(5);
constexpr int kPortAttempts = 5;

// Asks the kernel for a free port. Another process may take it before the
// server binds; WaitReady's process_id check catches that.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

ReplyPtr Run(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return ReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lengths.data())));
}

internal::Reply ErrorReply(std::string message) {
  internal::Reply reply;
  reply.type = internal::Reply::Type::kError;
  reply.str = std::move(message);
  return reply;
}

// The pid the server reports, or -1 if it does not answer (yet).
pid_t ServerPid(redisContext* c) {
  ReplyPtr info = Run(c, {"INFO", "server"});
  if (!info || info->type != REDIS_REPLY_STRING) return -1;
  std::string text(info->str, info->len);
  size_t at = text.find("process_id:");
  if (at == std::string::npos) return -1;
  return static_cast<pid_t>(std::atol(text.c_str() + at + 11));
}

// The fixture's own connections: the TCP port, or with TLS, which hiredis
// 0.14 cannot speak, the plaintext unix socket.
ContextPtr Connect(const RedisServer& server, timeval timeout) {
  if (server.tls()) {
    return ContextPtr(redisConnectUnixWithTimeout(server.unix_socket().c_str(), timeout));
  }
  return ContextPtr(redisConnectWithTimeout(server.host().c_str(), server.port(), timeout));
}

}  // namespace

RedisServer::RedisServer() : RedisServer(Config{}) {}
RedisServer::RedisServer(Config config) : config_(std::move(config)) {}

RedisServer::~RedisServer() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

bool RedisServer::Start() {
  if (dir_.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "sf-redis-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) return false;
    dir_ = pattern;
    if (!config_.config_file.empty()) {
      std::ofstream file(config_path());
      file << config_.config_file;
      if (!file.flush()) return false;
    }
  }
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    port_ = FreePort();
    if (config_.cluster) {
      // The kernel may hand out the port just released again.
      do {
        cluster_port_ = FreePort();
      } while (cluster_port_ != 0 && cluster_port_ == port_);
      if (cluster_port_ == 0) continue;
    }
    // A taken cluster bus port makes the server exit ("Could not bind"),
    // which WaitReady sees, as for the client port.
    if (port_ != 0 && Launch() && WaitReady()) return true;
    Kill();
  }
  return false;
}

bool RedisServerAvailable() {
  const char* path = SF_REDIS_SERVER;
  return path[0] != '\0' && access(path, X_OK) == 0;
}

bool RedisServer::Restart() {
  if (pid_ > 0) Stop();
  return Launch() && WaitReady();
}

bool RedisServer::Launch() {
  const Tls& tls = config_.tls;
  std::vector<std::string> args = {SF_REDIS_SERVER,
                                   "--port",
                                   tls.enabled() ? "0" : std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--dir",
                                   dir_,
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   dir_ + "/redis.log",
                                   "--unixsocket",
                                   unix_socket(),
                                   "--unixsocketperm",
                                   "700"};
  // redis-server takes a config file only as its first argument.
  if (!config_.config_file.empty()) args.insert(args.begin() + 1, config_path());
  if (!config_.requirepass.empty()) {
    args.insert(args.end(), {"--requirepass", config_.requirepass});
  }
  if (tls.enabled()) {
    args.insert(args.end(), {"--tls-port", std::to_string(port_), "--tls-cert-file", tls.cert_file,
                             "--tls-key-file", tls.key_file, "--tls-auth-clients",
                             tls.auth_clients ? "yes" : "no"});
    if (!tls.ca_cert_file.empty()) {
      args.insert(args.end(), {"--tls-ca-cert-file", tls.ca_cert_file});
    }
  }
  if (config_.cluster) {
    args.insert(args.end(), {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                             "--cluster-port", std::to_string(cluster_port_)});
  }
  args.insert(args.end(), config_.extra_args.begin(), config_.extra_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    // A test killed on timeout must not leave its server running.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  return true;
}

bool RedisServer::WaitReady() {
  auto deadline = Clock::now() + kReadyTimeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: the port was taken, or bad args
      pid_ = -1;
      return false;
    }
    // With TLS this probes the unix socket, which proves the TLS port ours
    // as well: Redis binds its TCP/TLS ports before the unix socket and exits
    // if one is taken ("Failed listening on port P (TLS), aborting").
    timeval timeout{0, 200 * 1000};
    ContextPtr c = Connect(*this, timeout);
    if (c && c->err == 0) {
      if (!config_.requirepass.empty()) Run(c.get(), {"AUTH", config_.requirepass});
      pid_t server = ServerPid(c.get());
      if (server == pid_) return true;
      if (server > 0) return false;  // someone else's server on this port
    }
    std::this_thread::sleep_for(kProbeInterval);
  }
  return false;
}

void RedisServer::Reap(int signal) {
  if (pid_ <= 0) return;
  paused_ = false;
  kill(pid_, signal);
  kill(pid_, SIGCONT);  // a paused server handles SIGTERM only once resumed
  auto deadline = Clock::now() + kStopTimeout;
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(kProbeInterval);
  }
  pid_ = -1;
}

void RedisServer::Stop() {
  Reap(SIGTERM);
}
void RedisServer::Kill() {
  Reap(SIGKILL);
}

std::string RedisServer::LogTail(size_t lines) const {
  if (dir_.empty()) return {};
  std::ifstream log(dir_ + "/redis.log");
  std::deque<std::string> tail;
  for (std::string line; std::getline(log, line);) {
    tail.push_back(std::move(line));
    if (tail.size() > lines) tail.pop_front();
  }
  std::string text;
  for (const std::string& line : tail) text += "\n  " + line;
  return text;
}

RedisServer::Config RedisServer::ReplicaOf(const RedisServer& master) {
  Config config;
  config.requirepass = master.config_.requirepass;
  config.tls = master.config_.tls;
  config.extra_args = {"--replicaof", master.host(), std::to_string(master.port())};
  if (master.tls()) config.extra_args.insert(config.extra_args.end(), {"--tls-replication", "yes"});
  if (!master.config_.requirepass.empty()) {
    config.extra_args.insert(config.extra_args.end(), {"--masterauth", master.config_.requirepass});
  }
  return config;
}

void RedisServer::Pause() {
  if (pid_ <= 0 || paused_) return;
  kill(pid_, SIGSTOP);
  int status = 0;
  // The server is our child: waitpid reports the moment it has stopped.
  while (waitpid(pid_, &status, WUNTRACED) == pid_ && !WIFSTOPPED(status)) {
  }
  paused_ = true;
}

void RedisServer::Resume() {
  if (pid_ <= 0 || !paused_) return;
  kill(pid_, SIGCONT);
  int status = 0;
  while (waitpid(pid_, &status, WCONTINUED) == pid_ && !WIFCONTINUED(status)) {
  }
  paused_ = false;
}

internal::Reply RedisServer::Command(const std::vector<std::string>& argv) {
  return Commands({argv}).front();
}

std::vector<internal::Reply> RedisServer::Commands(
    const std::vector<std::vector<std::string>>& commands) {
  std::vector<internal::Reply> replies;
  timeval timeout{5, 0};
  ContextPtr c = Connect(*this, timeout);
  std::string failure;
  if (!c) {
    failure = "out of memory";
  } else if (c->err != 0) {
    failure = c->errstr;
  } else {
    redisSetTimeout(c.get(), timeout);
    if (!config_.requirepass.empty()) Run(c.get(), {"AUTH", config_.requirepass});
  }
  for (const std::vector<std::string>& argv : commands) {
    if (failure.empty()) {
      ReplyPtr reply = Run(c.get(), argv);
      if (reply) {
        replies.push_back(internal::ToReply(reply.get()));
        continue;
      }
      failure = c->errstr;
    }
    replies.push_back(ErrorReply(failure));
  }
  return replies;
}

RedisServer::PendingCommand::~PendingCommand() {
  if (context_ != nullptr) redisFree(static_cast<redisContext*>(context_));
}

internal::Reply RedisServer::PendingCommand::Wait() {
  if (context_ == nullptr) return ErrorReply(error_);
  auto* c = static_cast<redisContext*>(context_);
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK) return ErrorReply(c->errstr);
  ReplyPtr reply(static_cast<redisReply*>(raw));
  return internal::ToReply(reply.get());
}

std::unique_ptr<RedisServer::PendingCommand> RedisServer::Send(
    const std::vector<std::string>& argv) {
  std::unique_ptr<PendingCommand> pending(new PendingCommand);
  timeval timeout{30, 0};
  ContextPtr c = Connect(*this, timeout);
  if (!c || c->err != 0) {
    pending->error_ = c ? c->errstr : "out of memory";
    return pending;
  }
  redisSetTimeout(c.get(), timeout);
  if (!config_.requirepass.empty()) Run(c.get(), {"AUTH", config_.requirepass});
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  redisAppendCommandArgv(c.get(), static_cast<int>(args.size()), args.data(), lengths.data());
  // Written now, so the server has it before Send returns to the test; the
  // reply stays unread until Wait.
  int done = 0;
  while (!done) {
    if (redisBufferWrite(c.get(), &done) != REDIS_OK) {
      pending->error_ = c->errstr;
      return pending;
    }
  }
  pending->context_ = c.release();
  return pending;
}

std::map<std::string, long long> RedisServer::CommandCalls() {
  std::map<std::string, long long> calls;
  internal::Reply info = Command({"INFO", "commandstats"});
  size_t at = 0;
  const std::string& text = info.str;
  while ((at = text.find("cmdstat_", at)) != std::string::npos) {
    at += 8;
    size_t colon = text.find(':', at);
    size_t value = text.find("calls=", colon);
    if (colon == std::string::npos || value == std::string::npos) break;
    calls[text.substr(at, colon - at)] = std::atoll(text.c_str() + value + 6);
    at = value;
  }
  return calls;
}

bool RedisServer::WaitForReplicas(int count) {
  // WAIT counts only replicas that are online (their first sync done) and
  // have acknowledged this client's writes (none: offset 0). 4 s stays under
  // Command's 5 s socket timeout.
  internal::Reply acked = Command({"WAIT", std::to_string(count), "4000"});
  return acked.type == internal::Reply::Type::kInteger && acked.integer >= count;
}

}  // namespace singleflight::test
