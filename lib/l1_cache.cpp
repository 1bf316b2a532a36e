#include "l1_cache.h"

namespace singleflight::internal {

L1Cache::L1Cache(size_t max_entries, size_t max_bytes)
    : max_entries_(max_entries), max_bytes_(max_bytes) {}

L1Cache::Value L1Cache::Get(std::string_view key, uint64_t now_ms) {
  auto found = index_.find(key);
  if (found == index_.end()) return nullptr;
  auto it = found->second;
  if (it->expires_at_ms <= now_ms) {
    Drop(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it);
  return it->value;
}

void L1Cache::Put(std::string_view key, Value value, uint64_t expires_at_ms) {
  if (max_entries_ == 0 || !value) return;
  Erase(key);
  if (key.size() + value->size() > max_bytes_) return;
  lru_.push_front(Entry{std::string(key), std::move(value), expires_at_ms});
  index_.emplace(lru_.front().key, lru_.begin());
  bytes_ += Cost(lru_.front());
  EvictToFit();
}

void L1Cache::Erase(std::string_view key) {
  auto found = index_.find(key);
  if (found != index_.end()) Drop(found->second);
}

void L1Cache::Clear() {
  index_.clear();
  lru_.clear();
  bytes_ = 0;
}

void L1Cache::Drop(List::iterator it) {
  bytes_ -= Cost(*it);
  index_.erase(std::string_view(it->key));
  lru_.erase(it);
}

void L1Cache::EvictToFit() {
  while (!lru_.empty() && (index_.size() > max_entries_ || bytes_ > max_bytes_)) {
    Drop(std::prev(lru_.end()));
  }
}

}  // namespace singleflight::internal
