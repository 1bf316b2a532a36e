#include "cluster_nodes.h"

#include <cstdlib>
#include <set>

namespace bench {

std::unique_ptr<ClusterNodes> ClusterNodes::Connect(const examples::RedisTarget& seed,
                                                    std::string* error) {
  auto nodes = std::unique_ptr<ClusterNodes>(new ClusterNodes);
  nodes->seed_ = seed;
  nodes->seed_connection_ = examples::SyncRedis::Connect(seed, 2000, error);
  if (nodes->seed_connection_ == nullptr) return nullptr;
  return nodes;
}

examples::SyncRedis* ClusterNodes::Node(const std::string& host, int port) {
  std::string name = host + ":" + std::to_string(port);
  std::unique_ptr<examples::SyncRedis>& node = nodes_[name];
  if (node == nullptr) {
    examples::RedisTarget target = seed_;
    target.options.host = host;
    target.options.port = port;
    std::string error;
    node = examples::SyncRedis::Connect(target, 2000, &error);
  }
  return node.get();
}

examples::Reply ClusterNodes::Routed(const std::vector<std::string>& argv) {
  examples::SyncRedis* node = seed_connection_.get();
  examples::Reply reply;
  for (int hop = 0; hop < 4 && node != nullptr; ++hop) {
    reply = node->Command(argv);
    if (reply.type != examples::Reply::kError || reply.str.rfind("MOVED ", 0) != 0) break;
    std::string address = reply.str.substr(reply.str.rfind(' ') + 1);
    size_t colon = address.rfind(':');
    node = Node(address.substr(0, colon), std::atoi(address.c_str() + colon + 1));
  }
  return reply;
}

std::vector<examples::SyncRedis*> ClusterNodes::Masters() {
  // Asked even without ?cluster=1: the library detects a cluster node by
  // itself. A standalone server answers an error (cluster support disabled).
  examples::Reply slots = seed_connection_->Command({"CLUSTER", "SLOTS"});
  if (slots.type != examples::Reply::kArray || slots.elements.empty()) {
    return {seed_connection_.get()};
  }
  std::vector<examples::SyncRedis*> masters;
  std::set<std::string> seen;
  for (const examples::Reply& range : slots.elements) {
    if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
    const examples::Reply& master = range.elements[2];
    std::string host = master.elements[0].str.empty() ? seed_.options.host : master.elements[0].str;
    int port = static_cast<int>(master.elements[1].integer);
    if (!seen.insert(host + ":" + std::to_string(port)).second) continue;
    if (examples::SyncRedis* node = Node(host, port)) masters.push_back(node);
  }
  return masters;
}

}  // namespace bench
