// SocketStream: one connection attempt's socket — a uv_tcp_t or a uv_pipe_t —
// with connect, read and gathered writes, and nothing Redis-specific.
//
// Lifetime: created with new by the connection for one attempt; Close() stops
// every callback to the owner except OnSocketClosed, which comes once, from
// libuv's close callback, after which the object has freed itself. Buffers of
// writes still in flight at Close live until libuv cancels them.
#pragma once

#include <uv.h>

#include <string>
#include <vector>

namespace singleflight::internal {

class SocketStream {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // status 0: connected; else a libuv error code.
    virtual void OnSocketConnected(int status) = 0;
    virtual void OnSocketData(const char* data, size_t size) = 0;
    // The stream ended: UV_EOF when the peer closed it, else a libuv error
    // (a failed read or write).
    virtual void OnSocketEnded(int status) = 0;
    virtual void OnSocketClosed() = 0;
  };

  // Starts connecting to an IP address (v4 or v6) and port, or to a unix
  // socket path. On an immediate failure returns null with *error set (a
  // libuv code); the owner then gets no callback at all.
  static SocketStream* ConnectTcp(uv_loop_t* loop, const std::string& ip, int port, Owner* owner,
                                  bool keep_loop_alive, int* error);
  static SocketStream* ConnectUnix(uv_loop_t* loop, const std::string& path, Owner* owner,
                                   bool keep_loop_alive, int* error);

  // Writes the buffers in order with one uv_write. After a failure the owner
  // hears OnSocketEnded.
  void Write(std::vector<std::string> buffers);
  // Bytes handed to Write that the kernel has not taken yet.
  size_t unwritten_bytes() const;
  void Close();

 private:
  SocketStream(uv_loop_t* loop, Owner* owner, bool tcp, bool keep_loop_alive);
  ~SocketStream() = default;
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }
  void Connected(int status);
  void Ended(int status);
  void TuneTcp();

  static void OnConnect(uv_connect_t* req, int status) noexcept;
  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void OnWrite(uv_write_t* req, int status) noexcept;
  static void OnClose(uv_handle_t* handle) noexcept;

  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle_;
  uv_connect_t connect_;
  Owner* owner_;         // null once Close() was called
  Owner* closed_owner_;  // told OnSocketClosed in any case
  bool tcp_;
  bool closing_ = false;
  char read_buffer_[65536];
};

}  // namespace singleflight::internal
