#include "support/sentinel_set.h"

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>

#include "hiredis_reply.h"
#include "support/child_process.h"
#include "support/poll.h"
#include "support/replies.h"

namespace singleflight::test {
namespace {

using Clock = std::chrono::steady_clock;
using internal::Reply;

// Generous: on this machine Start takes well under a second, but the Sentinel
// discovers replicas it missed only with its next INFO of the master (10 s).
constexpr auto kStartTimeout = std::chrono::seconds(60);

// Sentinel reports each replica as a flat list of field, value pairs.
std::map<std::string, std::string> Fields(const Reply& entry) {
  std::map<std::string, std::string> fields;
  for (size_t i = 0; i + 1 < entry.elements.size(); i += 2) {
    fields[entry.elements[i].str] = entry.elements[i + 1].str;
  }
  return fields;
}

}  // namespace

struct SentinelSet::Subscription {
  ~Subscription() {
    if (context != nullptr) redisFree(context);
  }
  redisContext* context = nullptr;
};

SentinelSet::SentinelSet(Config config)
    : config_(std::move(config)),
      name_(config_.master_name.empty() ? "sf-master" : config_.master_name) {}

SentinelSet::~SentinelSet() {
  // The Sentinel first: with the master stopped before it, it would fail over.
  subscription_.reset();
  sentinel_.reset();
  replica_.reset();
  master_.reset();
}

bool SentinelSet::Fail(const std::string& message, const RedisServer* log_of) {
  error_ = message;
  if (log_of != nullptr && !log_of->dir().empty()) {
    error_ += "\nlast lines of " + log_of->dir() + "/redis.log:" + log_of->LogTail();
  }
  return false;
}

bool SentinelSet::Start() {
  auto deadline = Clock::now() + kStartTimeout;
  // A full sync waits repl-diskless-sync-delay (5 s by default) for more
  // replicas to join it; there is only one.
  const std::vector<std::string> no_sync_delay = {"--repl-diskless-sync-delay", "0"};

  RedisServer::Config master;
  master.requirepass = config_.requirepass;
  master.extra_args = no_sync_delay;
  master_ = std::make_unique<RedisServer>(master);
  if (!master_->Start()) return Fail("the master did not start", master_.get());

  RedisServer::Config replica = RedisServer::ReplicaOf(*master_);
  replica.extra_args.insert(replica.extra_args.end(), no_sync_delay.begin(), no_sync_delay.end());
  replica_ = std::make_unique<RedisServer>(replica);
  if (!replica_->Start()) return Fail("the replica did not start", replica_.get());

  std::string replication;
  if (!PollUntil(deadline, [&] {
        replication = replica_->Command({"INFO", "replication"}).str;
        return replication.find("master_link_status:up") != std::string::npos;
      })) {
    return Fail(
        "the replica's link to the master did not come up within 60 s; INFO replication:\n" +
            replication,
        replica_.get());
  }

  // Started only now, the Sentinel's first INFO of the master (sent as soon
  // as it connects) already lists the synced replica: no 10 s INFO period to
  // wait for.
  std::ostringstream conf;
  conf << "sentinel monitor " << name_ << " " << master_->host() << " " << master_->port() << " 1\n"
       << "sentinel down-after-milliseconds " << name_ << " 1000\n"
       << "sentinel failover-timeout " << name_ << " 5000\n"
       << "sentinel parallel-syncs " << name_ << " 1\n";
  if (!config_.requirepass.empty()) {
    conf << "sentinel auth-pass " << name_ << " " << config_.requirepass << "\n";
  }
  RedisServer::Config sentinel;
  sentinel.requirepass = config_.sentinel_requirepass;
  sentinel.extra_args = {"--sentinel"};
  sentinel.config_file = conf.str();
  sentinel_ = std::make_unique<RedisServer>(sentinel);
  if (!sentinel_->Start()) return Fail("the Sentinel did not start", sentinel_.get());

  // Healthy as failover needs it: flags exactly "slave" (not s_down, not
  // disconnected), and master-link-status, which the Sentinel takes from the
  // replica's own INFO, "ok".
  const std::string replica_port = std::to_string(replica_->port());
  Reply replicas;
  if (!PollUntil(deadline, [&] {
        replicas = Command({"SENTINEL", "REPLICAS", name_});
        for (const Reply& entry : replicas.elements) {
          std::map<std::string, std::string> fields = Fields(entry);
          if (fields["port"] == replica_port && fields["flags"] == "slave" &&
              fields["master-link-status"] == "ok") {
            return true;
          }
        }
        return false;
      })) {
    return Fail("the Sentinel did not list the replica (port " + replica_port +
                    ") as healthy within 60 s; SENTINEL REPLICAS " + name_ + ": " +
                    DescribeReply(replicas),
                sentinel_.get());
  }
  return Subscribe();
}

bool SentinelSet::Subscribe() {
  timeval timeout{5, 0};
  auto subscription = std::make_unique<Subscription>();
  subscription->context =
      redisConnectWithTimeout(sentinel_host().c_str(), sentinel_port(), timeout);
  redisContext* c = subscription->context;
  if (c == nullptr || c->err != 0) {
    return Fail(std::string("no subscriber connection to the Sentinel: ") +
                    (c ? c->errstr : "out of memory"),
                nullptr);
  }
  redisSetTimeout(c, timeout);
  auto run = [c](std::vector<const char*> argv) {
    Reply reply;
    void* raw = redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr);
    if (raw == nullptr) {
      reply.type = Reply::Type::kError;
      reply.str = c->errstr;
      return reply;
    }
    reply = internal::ToReply(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    return reply;
  };
  if (!config_.sentinel_requirepass.empty()) {
    Reply auth = run({"AUTH", config_.sentinel_requirepass.c_str()});
    if (auth.is_error()) return Fail("AUTH to the Sentinel failed: " + auth.str, nullptr);
  }
  // The confirmation is the first reply: from then on, no switch is missed.
  Reply confirmed = run({"SUBSCRIBE", "+switch-master"});
  if (confirmed.elements.size() != 3 || confirmed.elements[0].str != "subscribe") {
    return Fail("SUBSCRIBE +switch-master on the Sentinel failed: " + DescribeReply(confirmed),
                nullptr);
  }
  subscription_ = std::move(subscription);
  return true;
}

std::string SentinelSet::sentinel_host() const {
  return sentinel_ ? sentinel_->host() : std::string();
}

int SentinelSet::sentinel_port() const {
  return sentinel_ ? sentinel_->port() : 0;
}

internal::Reply SentinelSet::Command(const std::vector<std::string>& argv) {
  if (!sentinel_) {
    Reply reply;
    reply.type = Reply::Type::kError;
    reply.str = "the Sentinel is not started";
    return reply;
  }
  return sentinel_->Command(argv);
}

void SentinelSet::KillMaster() {
  if (master_) master_->Kill();
}

SentinelSet::Address SentinelSet::WaitForFailover(std::chrono::milliseconds timeout) {
  if (!subscription_ || subscription_->context == nullptr) {
    Fail("no subscription to the Sentinel (Start failed, or an earlier wait timed out)", nullptr);
    return {};
  }
  redisContext* c = subscription_->context;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    if (left.count() <= 0) left = std::chrono::microseconds(1);
    // Bounds the blocking read below: hiredis applies it as SO_RCVTIMEO.
    timeval tv{static_cast<time_t>(left.count() / 1000000),
               static_cast<suseconds_t>(left.count() % 1000000)};
    redisSetTimeout(c, tv);
    void* raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK) {
      // A timed-out blocking context is unusable (hiredis marks it failed).
      std::string why = c->errstr;
      subscription_.reset();
      Fail("no +switch-master for " + name_ + " within " + std::to_string(timeout.count()) +
               " ms (" + why + ")",
           sentinel_.get());
      return {};
    }
    Reply message = internal::ToReply(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    // ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
    if (message.elements.size() != 3 || message.elements[0].str != "message") continue;
    std::vector<std::string> words = SplitWords(message.elements[2].str);
    if (words.size() != 5 || words[0] != name_) continue;
    Address promoted{words[3], std::atoi(words[4].c_str())};

    RedisServer* server = nullptr;
    for (RedisServer* candidate : {master_.get(), replica_.get()}) {
      if (candidate->port() == promoted.port) server = candidate;
    }
    if (server == nullptr) {
      Fail("the Sentinel promoted an unknown server: " + message.elements[2].str, nullptr);
      return {};
    }
    // The Sentinel announces the switch after it saw the promotion in the
    // server's INFO: the server says so itself by now.
    Reply role = server->Command({"ROLE"});
    if (role.elements.empty() || role.elements[0].str != "master") {
      Fail("the Sentinel switched " + name_ + " to port " + std::to_string(promoted.port) +
               ", which answers ROLE " + DescribeReply(role),
           server);
      return {};
    }
    return promoted;
  }
}

}  // namespace singleflight::test
