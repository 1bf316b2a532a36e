#include "host_resolver.h"

#include <netinet/in.h>

#include <utility>

namespace singleflight::internal {

struct HostResolver::Request {
  uv_getaddrinfo_t req;
  HostResolver* owner;  // null once the answer is no longer wanted
  std::string host;
  Done done;
};

namespace {

std::vector<std::string> Addresses(const struct addrinfo* result) {
  std::vector<std::string> ips;
  for (const struct addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET6) {
      uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(ai->ai_addr), ip, sizeof(ip));
    } else if (ai->ai_family == AF_INET) {
      uv_ip4_name(reinterpret_cast<const sockaddr_in*>(ai->ai_addr), ip, sizeof(ip));
    } else {
      continue;
    }
    ips.emplace_back(ip);
  }
  return ips;
}

}  // namespace

bool HostResolver::Start(uv_loop_t* loop, const std::string& host, Done done, Status* error) {
  Cancel();
  auto* request = new Request{{}, this, host, std::move(done)};
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop, &request->req,
      [](uv_getaddrinfo_t* req, int status, struct addrinfo* result) noexcept {
        auto* request = reinterpret_cast<Request*>(req);
        std::vector<std::string> ips = status == 0 ? Addresses(result) : std::vector<std::string>();
        uv_freeaddrinfo(result);
        if (request->owner != nullptr) {
          request->owner->request_ = nullptr;
          Status outcome = Status::Ok();
          if (status != 0) {
            outcome =
                Status(Code::kUnavailable, "resolve " + request->host + ": " + uv_strerror(status));
          } else if (ips.empty()) {
            outcome =
                Status(Code::kUnavailable, "resolve " + request->host + ": no usable address");
          }
          Done done = std::move(request->done);
          delete request;
          done(outcome, std::move(ips));
          return;
        }
        delete request;
      },
      host.c_str(), nullptr, &hints);
  if (rc != 0) {
    delete request;
    *error = Status(Code::kUnavailable, "resolve " + host + ": " + uv_strerror(rc));
    return false;
  }
  request_ = request;
  return true;
}

void HostResolver::Cancel() {
  if (request_ == nullptr) return;
  uv_cancel(reinterpret_cast<uv_req_t*>(&request_->req));
  request_->owner = nullptr;
  request_->done = nullptr;
  request_ = nullptr;
}

}  // namespace singleflight::internal
