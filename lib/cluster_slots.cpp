#include "cluster_slots.h"

#include <cstdlib>

namespace singleflight::internal {
namespace {

bool IsText(const Reply& reply) {
  return reply.type == Reply::Type::kString || reply.type == Reply::Type::kStatus;
}

// A decimal in [min, max] with nothing else around it.
bool ParseInt(std::string_view text, long min, long max, long* out) {
  if (text.empty() || text.size() > 10) return false;
  long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value < min || value > max) return false;
  *out = value;
  return true;
}

}  // namespace

uint16_t Crc16(std::string_view data) noexcept {
  uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc = static_cast<uint16_t>(crc ^ (static_cast<uint16_t>(byte) << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

int KeySlot(std::string_view key) noexcept {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16(key) % kClusterSlots;
}

bool ParseNodeAddress(std::string_view text, NodeAddress* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  long port = 0;
  if (!ParseInt(text.substr(colon + 1), 1, 65535, &port)) return false;
  out->host = std::string(text.substr(0, colon));
  out->port = static_cast<int>(port);
  return true;
}

bool ParseRedirect(const Reply& reply, Redirect* out) {
  if (!reply.is_error()) return false;
  std::string_view text = reply.str;
  bool ask = false;
  if (text.compare(0, 6, "MOVED ") == 0) {
    text.remove_prefix(6);
  } else if (text.compare(0, 4, "ASK ") == 0) {
    ask = true;
    text.remove_prefix(4);
  } else {
    return false;
  }
  size_t space = text.find(' ');
  if (space == std::string_view::npos) return false;
  long slot = 0;
  NodeAddress to;
  if (!ParseInt(text.substr(0, space), 0, kClusterSlots - 1, &slot) ||
      !ParseNodeAddress(text.substr(space + 1), &to)) {
    return false;
  }
  out->ask = ask;
  out->slot = static_cast<int>(slot);
  out->to = std::move(to);
  return true;
}

Status SlotMap::Parse(const Reply& reply, const std::string& seed_host) {
  if (reply.type != Reply::Type::kArray) {
    return Status(Code::kUnavailable, "CLUSTER SLOTS: not an array: " + reply.str);
  }
  SlotMap next;
  std::vector<bool> covered(kClusterSlots, false);
  for (const Reply& range : reply.elements) {
    if (range.type != Reply::Type::kArray || range.elements.size() < 3 ||
        range.elements[0].type != Reply::Type::kInteger ||
        range.elements[1].type != Reply::Type::kInteger ||
        range.elements[2].type != Reply::Type::kArray || range.elements[2].elements.size() < 2 ||
        !IsText(range.elements[2].elements[0]) ||
        range.elements[2].elements[1].type != Reply::Type::kInteger) {
      return Status(Code::kUnavailable, "CLUSTER SLOTS: malformed slot range");
    }
    long long first = range.elements[0].integer;
    long long last = range.elements[1].integer;
    long long port = range.elements[2].elements[1].integer;
    if (first < 0 || last >= kClusterSlots || first > last || port <= 0 || port > 65535) {
      return Status(Code::kUnavailable, "CLUSTER SLOTS: slot range or port out of bounds");
    }
    NodeAddress owner{range.elements[2].elements[0].str, static_cast<int>(port)};
    if (owner.host.empty()) owner.host = seed_host;
    int index = next.IndexOf(owner);
    for (long long slot = first; slot <= last; ++slot) {
      next.owner_[slot] = static_cast<int16_t>(index);
      covered[slot] = true;
    }
  }
  for (int slot = 0; slot < kClusterSlots; ++slot) {
    if (!covered[slot]) {
      return Status(Code::kUnavailable,
                    "CLUSTER SLOTS: slot " + std::to_string(slot) + " has no master");
    }
  }
  *this = std::move(next);
  return Status::Ok();
}

const NodeAddress* SlotMap::Owner(int slot) const {
  if (masters_.empty() || slot < 0 || slot >= kClusterSlots) return nullptr;
  return &masters_[owner_[slot]];
}

void SlotMap::Set(int slot, const NodeAddress& owner) {
  if (masters_.empty() || slot < 0 || slot >= kClusterSlots) return;
  owner_[slot] = static_cast<int16_t>(IndexOf(owner));
}

int SlotMap::IndexOf(const NodeAddress& address) {
  for (size_t i = 0; i < masters_.size(); ++i) {
    if (masters_[i] == address) return static_cast<int>(i);
  }
  masters_.push_back(address);
  return static_cast<int>(masters_.size() - 1);
}

}  // namespace singleflight::internal
