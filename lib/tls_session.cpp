#include "tls_session.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include <cstdio>
#include <mutex>

namespace singleflight::internal {
namespace {

Status TlsError(std::string message) {
  return Status(Code::kUnavailable, "TLS: " + std::move(message));
}

// The reason of the oldest queued OpenSSL error ("certificate verify failed"),
// or `fallback`; the queue is left empty.
std::string TakeOpensslReason(const char* fallback) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return fallback;
  const char* reason = ERR_reason_error_string(code);
  if (reason != nullptr) return reason;
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[16];
  return uv_inet_pton(AF_INET, host.c_str(), buf) == 0 ||
         uv_inet_pton(AF_INET6, host.c_str(), buf) == 0;
}

void WarnUnverifiedOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::fprintf(stderr,
                 "singleflight: TLS certificate verification is off (tls_verify=0): "
                 "for tests only, anyone on the path can read and forge this traffic\n");
  });
}

// Why the server's certificate was refused, in terms of the option to fix.
std::string VerifyFailure(long result, const std::string& name) {
  std::string reason = X509_verify_cert_error_string(result);
  switch (result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return "the server's certificate does not match \"" + name + "\" (" + reason +
             "; set tls_server_name to a name the certificate holds)";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return "the server's certificate is not signed by a trusted CA (" + reason +
             "; check tls_ca)";
    default: return "the server's certificate was refused: " + reason;
  }
}

}  // namespace

struct TlsSession::Impl {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  BIO* network_in = nullptr;   // what the socket read; owned by ssl
  BIO* network_out = nullptr;  // what the socket must write; owned by ssl
  std::string verified_name;

  ~Impl() {
    if (ssl != nullptr) SSL_free(ssl);  // frees both BIOs
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
};

TlsSession::TlsSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsSession::~TlsSession() = default;

std::unique_ptr<TlsSession> TlsSession::Create(const TlsOptions& options, const std::string& host,
                                               Status* error) {
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  impl->ctx = SSL_CTX_new(TLS_client_method());
  if (impl->ctx == nullptr) {
    *error = TlsError("cannot create a context: " + TakeOpensslReason("out of memory"));
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(impl->ctx, TLS1_2_VERSION);
  if (options.ca_file.empty() && options.ca_dir.empty()) {
    SSL_CTX_set_default_verify_paths(impl->ctx);
  } else if (SSL_CTX_load_verify_locations(
                 impl->ctx, options.ca_file.empty() ? nullptr : options.ca_file.c_str(),
                 options.ca_dir.empty() ? nullptr : options.ca_dir.c_str()) != 1) {
    *error = TlsError(
        "cannot load the CA " +
        (options.ca_file.empty() ? "directory " + options.ca_dir : "file " + options.ca_file) +
        ": " + TakeOpensslReason("unreadable"));
    return nullptr;
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    *error = TlsError("a client certificate needs both tls_cert and tls_key");
    return nullptr;
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(impl->ctx, options.cert_file.c_str()) != 1) {
      *error = TlsError("cannot load the client certificate " + options.cert_file + ": " +
                        TakeOpensslReason("unreadable"));
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(impl->ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      std::string reason = TakeOpensslReason("unreadable");
      *error = TlsError(reason.find("mismatch") != std::string::npos
                            ? "the client key " + options.key_file +
                                  " does not match the certificate " + options.cert_file
                            : "cannot load the client key " + options.key_file + ": " + reason);
      return nullptr;
    }
    if (SSL_CTX_check_private_key(impl->ctx) != 1) {
      *error = TlsError("the client key " + options.key_file + " does not match the certificate " +
                        options.cert_file);
      ERR_clear_error();
      return nullptr;
    }
  }
  SSL_CTX_set_verify(impl->ctx, options.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (!options.verify_peer) WarnUnverifiedOnce();

  impl->ssl = SSL_new(impl->ctx);
  impl->network_in = BIO_new(BIO_s_mem());
  impl->network_out = BIO_new(BIO_s_mem());
  if (impl->ssl == nullptr || impl->network_in == nullptr || impl->network_out == nullptr) {
    // Not attached to the session yet, so not freed with it.
    if (impl->network_in != nullptr) BIO_free(impl->network_in);
    if (impl->network_out != nullptr) BIO_free(impl->network_out);
    *error = TlsError("cannot create a session: " + TakeOpensslReason("out of memory"));
    return nullptr;
  }
  // An empty memory BIO reports "retry", not EOF: the session then asks for
  // more input instead of failing.
  BIO_set_mem_eof_return(impl->network_in, -1);
  SSL_set_bio(impl->ssl, impl->network_in, impl->network_out);
  SSL_set_connect_state(impl->ssl);

  impl->verified_name = options.server_name.empty() ? host : options.server_name;
  const std::string& name = impl->verified_name;
  if (!name.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(impl->ssl);
    if (IsIpLiteral(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());  // no SNI for an address (RFC 6066)
    } else {
      X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
      SSL_set_tlsext_host_name(impl->ssl, name.c_str());
    }
  }
  ERR_clear_error();
  return std::unique_ptr<TlsSession>(new TlsSession(std::move(impl)));
}

Status TlsSession::Start(std::string* wire) {
  std::string unused;
  return Handshake(&unused, wire);
}

Status TlsSession::Receive(const char* data, size_t size, std::string* plain, std::string* wire) {
  ERR_clear_error();
  if (!saw_bytes_ && size > 0) {
    saw_bytes_ = true;
    // Every TLS record starts with its content type, 20 to 23; a Redis
    // server on a plaintext port answers a ClientHello with "-ERR ...".
    auto type = static_cast<unsigned char>(data[0]);
    plaintext_peer_ = type < 20 || type > 23;
  }
  if (plaintext_peer_) {
    return TlsError(
        "the server answered in plaintext: not a TLS port? (use redis://, not rediss://)");
  }
  if (BIO_write(impl_->network_in, data, static_cast<int>(size)) != static_cast<int>(size)) {
    return TlsError("cannot buffer received data: " + TakeOpensslReason("out of memory"));
  }
  Status status = handshake_done_ ? ReadPlain(plain) : Handshake(plain, wire);
  DrainWire(wire);
  return status;
}

Status TlsSession::Handshake(std::string* plain, std::string* wire) {
  ERR_clear_error();
  int rc = SSL_do_handshake(impl_->ssl);
  DrainWire(wire);
  if (rc == 1) {
    handshake_done_ = true;
    return ReadPlain(plain);  // records that came with the last flight
  }
  return Failure("handshake", rc);
}

Status TlsSession::ReadPlain(std::string* plain) {
  char buf[16384];
  for (;;) {
    int n = SSL_read(impl_->ssl, buf, sizeof(buf));
    if (n > 0) {
      plain->append(buf, static_cast<size_t>(n));
      continue;
    }
    return Failure("read", n);
  }
}

Status TlsSession::Send(std::string_view plain, std::string* wire) {
  ERR_clear_error();
  if (!handshake_done_) return TlsError("send before the handshake is done");
  // A memory BIO takes everything, so SSL_write never writes part of it.
  if (!plain.empty() && SSL_write(impl_->ssl, plain.data(), static_cast<int>(plain.size())) <= 0) {
    return Failure("write", -1);
  }
  DrainWire(wire);
  return Status::Ok();
}

void TlsSession::DrainWire(std::string* wire) {
  char buf[16384];
  int n;
  while ((n = BIO_read(impl_->network_out, buf, sizeof(buf))) > 0) {
    wire->append(buf, static_cast<size_t>(n));
  }
}

// "Wants more input" is success; anything else becomes a message that names
// the cause.
Status TlsSession::Failure(const char* what, int ssl_result) {
  int error = SSL_get_error(impl_->ssl, ssl_result);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return Status::Ok();
  }
  if (error == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return TlsError("the server closed the TLS session");
  }
  long verify = SSL_get_verify_result(impl_->ssl);
  if (!handshake_done_ && verify != X509_V_OK) {
    ERR_clear_error();
    return TlsError("handshake failed: " + VerifyFailure(verify, impl_->verified_name));
  }
  std::string reason = TakeOpensslReason("unknown error");
  std::string message = std::string(what) + " failed: " + reason;
  if (reason.find("certificate required") != std::string::npos ||
      reason.find("handshake failure") != std::string::npos ||
      reason.find("unknown ca") != std::string::npos ||
      reason.find("bad certificate") != std::string::npos) {
    message +=
        " (the server refused this client: does it require a client certificate, "
        "tls_cert and tls_key, signed by a CA it trusts?)";
  }
  return TlsError(message);
}

std::string TlsSession::version() const {
  return handshake_done_ ? SSL_get_version(impl_->ssl) : std::string();
}

}  // namespace singleflight::internal
