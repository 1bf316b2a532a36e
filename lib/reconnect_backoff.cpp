#include "reconnect_backoff.h"

#include <algorithm>

namespace singleflight::internal {

ReconnectBackoff::ReconnectBackoff(uint64_t min_ms, uint64_t max_ms)
    : min_ms_(min_ms), max_ms_(std::max(min_ms, max_ms)), random_(std::random_device{}()) {}

uint64_t ReconnectBackoff::Next() {
  uint64_t ceiling = min_ms_ << std::min(failures_, 20u);
  ceiling = std::clamp(ceiling, min_ms_, max_ms_);
  ++failures_;
  std::uniform_int_distribution<uint64_t> pick(min_ms_, ceiling);
  return pick(random_);
}

}  // namespace singleflight::internal
