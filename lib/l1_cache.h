// L1Cache: the in-process cache of finished results, bounded by entry count
// and by bytes, with a TTL per entry and LRU eviction.
//
// Values are shared immutable buffers: a hit hands out the same buffer every
// waiter of the producing flight got, without copying. Time is passed in by
// the caller (the Scheduler's clock), so the cache needs no clock of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace singleflight::internal {

class L1Cache {
 public:
  using Value = std::shared_ptr<const std::string>;

  L1Cache(size_t max_entries, size_t max_bytes);

  // The value, or null when absent or expired (an expired entry is dropped).
  Value Get(std::string_view key, uint64_t now_ms);
  // Inserts or replaces. An entry larger than max_bytes on its own is not kept.
  void Put(std::string_view key, Value value, uint64_t expires_at_ms);
  void Erase(std::string_view key);
  void Clear();

  size_t size() const { return index_.size(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Entry {
    std::string key;
    Value value;
    uint64_t expires_at_ms;
  };
  using List = std::list<Entry>;  // front = most recently used

  static size_t Cost(const Entry& e) { return e.key.size() + e.value->size(); }
  void Drop(List::iterator it);
  void EvictToFit();

  size_t max_entries_;
  size_t max_bytes_;
  size_t bytes_ = 0;  // sum of Cost() over lru_
  List lru_;
  // Keys are views into the Entry they point at; std::list nodes never move.
  std::unordered_map<std::string_view, List::iterator> index_;
};

}  // namespace singleflight::internal
