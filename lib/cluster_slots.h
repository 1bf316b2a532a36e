// Redis Cluster's key-to-slot rule and the map from slots to masters.
//
// A key's slot is CRC16 (XMODEM: polynomial 0x1021, initial value 0, no
// reflection) of its hash tag, modulo 16384 (the Redis cluster spec). The
// hash tag is the part between the first '{' and the first '}' after it, when
// that part is non-empty; otherwise the whole key. key_naming.h makes every
// name of a flight one hash tag, so a flight lives on one slot.
//
// SlotMap is what `CLUSTER SLOTS` said, as one owner per slot. It knows
// nothing of connections; ClusterLink (cluster_link.h) keeps it current.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "redis_reply.h"
#include "singleflight/status.h"

namespace singleflight::internal {

inline constexpr int kClusterSlots = 16384;

// CRC16-XMODEM of `data` (the spec's test vector: "123456789" -> 0x31C3).
uint16_t Crc16(std::string_view data) noexcept;

// The slot of `key` (0..16383), hash tags applied.
int KeySlot(std::string_view key) noexcept;

// A master's address as the cluster announces it.
struct NodeAddress {
  std::string host;
  int port = 0;

  std::string ToString() const { return host + ":" + std::to_string(port); }
  bool operator==(const NodeAddress& other) const {
    return host == other.host && port == other.port;
  }
  bool operator!=(const NodeAddress& other) const { return !(*this == other); }
};

// Parses "host:port" (the form of MOVED and ASK; IPv6 hosts keep their
// colons, the port is after the last one). False when it is not that form.
bool ParseNodeAddress(std::string_view text, NodeAddress* out);

// A redirection error reply: "MOVED 3999 127.0.0.1:6381" or "ASK ...".
struct Redirect {
  bool ask = false;  // ASK (once, after ASKING) rather than MOVED (for good)
  int slot = -1;
  NodeAddress to;
};
// True (and *out set) when `reply` is a well-formed MOVED or ASK.
bool ParseRedirect(const Reply& reply, Redirect* out);

class SlotMap {
 public:
  // Replaces the map with a CLUSTER SLOTS reply: an array of
  // [first, last, [host, port, id...], replicas...]. An empty host (a node
  // that does not know its own address) stands for `seed_host`, the host this
  // reply came from, as the spec says. Kept only if every slot is owned: a
  // partial map is refused with a kUnavailable that says which slot is
  // missing, and the old map stays.
  Status Parse(const Reply& reply, const std::string& seed_host);

  bool empty() const { return masters_.empty(); }
  // The owner of `slot`; nullptr when the map is empty or slot out of range.
  const NodeAddress* Owner(int slot) const;
  // One slot's owner as a MOVED said, before a full refresh confirms it.
  void Set(int slot, const NodeAddress& owner);
  // Every master the map names, each once.
  const std::vector<NodeAddress>& masters() const { return masters_; }

 private:
  int IndexOf(const NodeAddress& address);

  std::vector<NodeAddress> masters_;            // distinct owners
  std::array<int16_t, kClusterSlots> owner_{};  // slot -> index in masters_
};

}  // namespace singleflight::internal
