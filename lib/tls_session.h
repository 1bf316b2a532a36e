// TlsSession: one TLS client session over memory BIOs, with no I/O of its own.
//
// The connection moves bytes between the socket and the session: what the
// socket read goes in through Receive, what the session wants on the wire
// comes out in `wire` and is written by the connection. Keeping OpenSSL away
// from the socket keeps the libuv side identical for plaintext and TLS, and
// lets one read or one write carry any number of TLS records.
//
// Errors are Status values whose message names the cause a user can act on
// (wrong CA, name mismatch, a plaintext server, a bad certificate file), not
// only OpenSSL's error string. OpenSSL's error queue is per thread and may be
// shared with the embedder (Node): every operation clears it first and leaves
// it empty.
//
// Not thread-safe; one session per connection attempt.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "singleflight/options.h"
#include "singleflight/status.h"

namespace singleflight::internal {

class TlsSession {
 public:
  // A session for a server reached as `host` (the configured host name or IP,
  // not the resolved address). On failure (unreadable CA or client
  // certificate, key that does not match) returns null with *error set.
  static std::unique_ptr<TlsSession> Create(const TlsOptions& options, const std::string& host,
                                            Status* error);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Starts the handshake: appends the ClientHello to *wire.
  Status Start(std::string* wire);
  // Bytes read from the socket. Appends decrypted application data to *plain
  // and anything the session must send (handshake records) to *wire.
  Status Receive(const char* data, size_t size, std::string* plain, std::string* wire);
  // Encrypts application data; appends the records to *wire. Only after
  // handshake_done().
  Status Send(std::string_view plain, std::string* wire);

  bool handshake_done() const { return handshake_done_; }
  // E.g. "TLSv1.3"; empty before the handshake is done.
  std::string version() const;

 private:
  struct Impl;
  explicit TlsSession(std::unique_ptr<Impl> impl);
  Status Handshake(std::string* plain, std::string* wire);
  Status ReadPlain(std::string* plain);
  void DrainWire(std::string* wire);
  Status Failure(const char* what, int ssl_result);

  std::unique_ptr<Impl> impl_;
  bool handshake_done_ = false;
  bool saw_bytes_ = false;       // any byte from the server yet
  bool plaintext_peer_ = false;  // the server's first bytes were not a TLS record
};

}  // namespace singleflight::internal
