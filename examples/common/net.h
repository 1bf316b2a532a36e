// Small pieces the examples share: argument parsing, a TCP listener that can
// share its port between processes, and a graceful stop on SIGINT/SIGTERM.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

namespace examples {

// "host:port" (port 1..65535, or 0 when allow_zero). False when malformed.
bool ParseHostPort(const std::string& text, std::string* host, int* port, bool allow_zero = false);

// A decimal integer in [min, max]; false otherwise.
bool ParseInt(const std::string& text, long min, long max, long* out);

// Binds host:port without listening. With reuseport, SO_REUSEPORT is set
// first. Returns a libuv error code; the handle is initialized either way and
// must be closed.
int BindTcp(uv_loop_t* loop, uv_tcp_t* server, const std::string& host, int port, bool reuseport);

// Binds and listens on host:port. With reuseport, SO_REUSEPORT is set before
// bind so several processes can listen on one port and the kernel spreads
// connections between them (libuv 1.44 has no flag for it). Returns a libuv
// error code; on error the handle is initialized and must still be closed.
int ListenTcp(uv_loop_t* loop, uv_tcp_t* server, const std::string& host, int port, bool reuseport,
              uv_connection_cb on_connection);

// The port a bound socket really got (useful with port 0), or -1.
int BoundPort(const uv_tcp_t* server);

// Calls on_stop once, on the first SIGINT or SIGTERM, then stops watching
// signals so the handles do not keep the loop alive. Close() stops watching
// without calling anything.
class StopSignals {
 public:
  StopSignals(uv_loop_t* loop, std::function<void(int signum)> on_stop);
  void Close();

 private:
  static void OnSignal(uv_signal_t* handle, int signum);

  uv_signal_t sigint_;
  uv_signal_t sigterm_;
  std::function<void(int)> on_stop_;
  bool closed_ = false;
};

}  // namespace examples
