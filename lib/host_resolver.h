// HostResolver: the name lookup of one connection attempt (uv_getaddrinfo,
// off the loop thread), cancellable.
//
// Lifetime: the libuv request outlives a Cancel — libuv calls back even
// when uv_cancel fails — so it points back at its resolver only while the
// answer is wanted, and frees itself in its callback. `done` never runs
// after Cancel or the resolver's destruction.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "singleflight/status.h"

namespace singleflight::internal {

class HostResolver {
 public:
  // ok and the addresses (IPv4 and IPv6, in the resolver's order: a name
  // like "localhost" often lists ::1 first while the server listens on
  // 127.0.0.1 only, so the caller tries them all), or kUnavailable.
  using Done = std::function<void(const Status& status, std::vector<std::string> ips)>;

  HostResolver() = default;
  ~HostResolver() { Cancel(); }
  HostResolver(const HostResolver&) = delete;
  HostResolver& operator=(const HostResolver&) = delete;

  // `done` runs once, from the loop. Returns false (and `done` never runs)
  // when the lookup cannot even start; *error says why.
  bool Start(uv_loop_t* loop, const std::string& host, Done done, Status* error);
  void Cancel();

 private:
  struct Request;
  Request* request_ = nullptr;  // the lookup under way, if any
};

}  // namespace singleflight::internal
