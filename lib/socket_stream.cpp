#include "socket_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "loop_ref.h"

namespace singleflight::internal {
namespace {

// Dead-peer detection on an idle TCP connection (the subscriber is idle most
// of the time and cannot PING): probes after 5 s of silence, every 2 s, 3
// times; TCP_USER_TIMEOUT bounds unacknowledged writes to the same ~11 s.
constexpr int kKeepAliveIdleS = 5;
constexpr int kKeepAliveIntervalS = 2;
constexpr int kKeepAliveCount = 3;
constexpr unsigned kUserTimeoutMs =
    1000u * (kKeepAliveIdleS + kKeepAliveIntervalS * kKeepAliveCount);

// Owns the bytes of one uv_write until libuv is done with them.
struct WriteRequest {
  uv_write_t req;
  std::vector<std::string> buffers;
};

}  // namespace

SocketStream::SocketStream(uv_loop_t* loop, Owner* owner, bool tcp, bool keep_loop_alive)
    : owner_(owner), closed_owner_(owner), tcp_(tcp) {
  if (tcp) {
    uv_tcp_init(loop, &handle_.tcp);
  } else {
    uv_pipe_init(loop, &handle_.pipe, 0);
  }
  KeepsLoopAlive(&handle_.tcp, keep_loop_alive);
  handle_.tcp.data = this;
  connect_.data = this;
}

SocketStream* SocketStream::ConnectTcp(uv_loop_t* loop, const std::string& ip, int port,
                                       Owner* owner, bool keep_loop_alive, int* error) {
  sockaddr_storage address{};
  int rc = uv_ip4_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in*>(&address));
  if (rc != 0) rc = uv_ip6_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in6*>(&address));
  if (rc != 0) {
    *error = rc;
    return nullptr;
  }
  auto* socket = new SocketStream(loop, owner, true, keep_loop_alive);
  rc = uv_tcp_connect(&socket->connect_, &socket->handle_.tcp,
                      reinterpret_cast<const sockaddr*>(&address), OnConnect);
  if (rc != 0) {
    socket->owner_ = socket->closed_owner_ = nullptr;  // the caller hears the error instead
    socket->Close();
    *error = rc;
    return nullptr;
  }
  return socket;
}

SocketStream* SocketStream::ConnectUnix(uv_loop_t* loop, const std::string& path, Owner* owner,
                                        bool keep_loop_alive, int* error) {
  auto* socket = new SocketStream(loop, owner, false, keep_loop_alive);
  // uv_pipe_connect reports every failure, even an immediate one, through the
  // callback.
  uv_pipe_connect(&socket->connect_, &socket->handle_.pipe, path.c_str(), OnConnect);
  *error = 0;
  return socket;
}

void SocketStream::OnConnect(uv_connect_t* req, int status) noexcept {
  static_cast<SocketStream*>(req->data)->Connected(status);
}

void SocketStream::Connected(int status) {
  if (owner_ == nullptr) return;  // closed meanwhile (status is UV_ECANCELED)
  if (status == 0) {
    if (tcp_) TuneTcp();
    status = uv_read_start(stream(), OnAlloc, OnRead);
  }
  owner_->OnSocketConnected(status);
}

// Best effort: a socket without these still works, it only detects a dead
// peer later.
void SocketStream::TuneTcp() {
  uv_tcp_nodelay(&handle_.tcp, 1);
  uv_tcp_keepalive(&handle_.tcp, 1, kKeepAliveIdleS);
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&handle_), &fd) != 0) return;
  int interval = kKeepAliveIntervalS;
  int count = kKeepAliveCount;
  unsigned user_timeout = kUserTimeoutMs;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

void SocketStream::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  auto* self = static_cast<SocketStream*>(handle->data);
  *buf = uv_buf_init(self->read_buffer_, sizeof(self->read_buffer_));
}

void SocketStream::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* self = static_cast<SocketStream*>(stream->data);
  if (self->owner_ == nullptr) return;
  if (nread > 0) {
    self->owner_->OnSocketData(buf->base, static_cast<size_t>(nread));
  } else if (nread < 0) {
    uv_read_stop(stream);
    self->Ended(static_cast<int>(nread));
  }
}

void SocketStream::Write(std::vector<std::string> buffers) {
  if (closing_ || buffers.empty()) return;
  auto* request = new WriteRequest{{}, std::move(buffers)};
  std::vector<uv_buf_t> bufs;
  bufs.reserve(request->buffers.size());
  for (std::string& buffer : request->buffers) {
    bufs.push_back(uv_buf_init(buffer.data(), static_cast<unsigned>(buffer.size())));
  }
  request->req.data = this;
  int rc =
      uv_write(&request->req, stream(), bufs.data(), static_cast<unsigned>(bufs.size()), OnWrite);
  if (rc != 0) {
    delete request;
    Ended(rc);
  }
}

void SocketStream::OnWrite(uv_write_t* req, int status) noexcept {
  auto* request = reinterpret_cast<WriteRequest*>(req);
  auto* self = static_cast<SocketStream*>(req->data);
  delete request;
  // UV_ECANCELED: the stream is being closed and the owner no longer listens.
  if (status != 0 && status != UV_ECANCELED) self->Ended(status);
}

size_t SocketStream::unwritten_bytes() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&handle_));
}

// Reported once; the owner then closes us.
void SocketStream::Ended(int status) {
  Owner* owner = owner_;
  if (owner == nullptr) return;
  owner_ = nullptr;
  owner->OnSocketEnded(status);
}

void SocketStream::Close() {
  if (closing_) return;
  closing_ = true;
  owner_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_), OnClose);
}

void SocketStream::OnClose(uv_handle_t* handle) noexcept {
  auto* self = static_cast<SocketStream*>(handle->data);
  Owner* owner = self->closed_owner_;
  delete self;
  if (owner != nullptr) owner->OnSocketClosed();
}

}  // namespace singleflight::internal
