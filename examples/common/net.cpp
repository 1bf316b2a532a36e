#include "common/net.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>

namespace examples {

bool ParseInt(const std::string& text, long min, long max, long* out) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < min || value > max) return false;
  *out = value;
  return true;
}

bool ParseHostPort(const std::string& text, std::string* host, int* port, bool allow_zero) {
  size_t colon = text.rfind(':');
  long value = 0;
  if (colon == std::string::npos || colon == 0) return false;
  if (!ParseInt(text.substr(colon + 1), allow_zero ? 0 : 1, 65535, &value)) return false;
  *host = text.substr(0, colon);
  *port = static_cast<int>(value);
  return true;
}

int BindTcp(uv_loop_t* loop, uv_tcp_t* server, const std::string& host, int port, bool reuseport) {
  sockaddr_storage addr{};
  int rc = uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) rc = uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr));
  if (rc != 0) {
    uv_tcp_init(loop, server);
    return rc;
  }
  // init_ex creates the socket now, so the option can be set before bind.
  rc = uv_tcp_init_ex(loop, server, addr.ss_family);
  if (rc != 0) {
    uv_tcp_init(loop, server);
    return rc;
  }
  if (reuseport) {
    uv_os_fd_t fd;
    int on = 1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(server), &fd) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
      return UV_EINVAL;
    }
  }
  return uv_tcp_bind(server, reinterpret_cast<const sockaddr*>(&addr), 0);
}

int ListenTcp(uv_loop_t* loop, uv_tcp_t* server, const std::string& host, int port, bool reuseport,
              uv_connection_cb on_connection) {
  int rc = BindTcp(loop, server, host, port, reuseport);
  if (rc != 0) return rc;
  return uv_listen(reinterpret_cast<uv_stream_t*>(server), SOMAXCONN, on_connection);
}

int BoundPort(const uv_tcp_t* server) {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return -1;
}

StopSignals::StopSignals(uv_loop_t* loop, std::function<void(int)> on_stop)
    : on_stop_(std::move(on_stop)) {
  uv_signal_init(loop, &sigint_);
  uv_signal_init(loop, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_signal_start(&sigint_, OnSignal, SIGINT);
  uv_signal_start(&sigterm_, OnSignal, SIGTERM);
}

void StopSignals::OnSignal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<StopSignals*>(handle->data);
  auto on_stop = std::move(self->on_stop_);
  self->Close();
  if (on_stop) on_stop(signum);
}

void StopSignals::Close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
}

}  // namespace examples
