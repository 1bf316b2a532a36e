// TestCertificates: a throw-away PKI for the TLS tests, made with the openssl
// command-line tool in a temp dir the object owns (removed by the destructor):
//
//   ca.crt/.key                 the CA the tests trust
//   server.crt/.key             signed by it; subjectAltName IP:127.0.0.1, DNS:localhost
//   wrong_name.crt/.key         signed by it; its only name is DNS:wrong.example
//                               (also its CN), for the name-mismatch test
//   client.crt/.key             signed by it, for mutual TLS
//   other_ca.crt/.key           a second, unrelated CA, for the wrong-CA test
//   other_client.crt/.key       a client certificate signed by other_ca, one a
//                               server that trusts ca.crt rejects
//
// Keys are EC P-256 and unencrypted, certificates valid for 2 days. No
// certificate carries extendedKeyUsage, so the server certificate also serves
// as a replica's client certificate (Redis presents tls-cert-file both ways).
//
// Sharing: generating costs six openssl runs (tens of milliseconds), and
// ctest runs each TEST in its own process, so a test gets the process's one
// set lazily with SF_TEST_CERTIFICATES (TestCertificates::Shared, a
// function-local static): only tests that need certificates pay, once per
// process, and the directory is removed at normal exit.
//
// Not thread-safe, except Shared (its first call generates, under the
// function-local static's lock).
#pragma once

#include <string>

namespace singleflight::test {

class TestCertificates {
 public:
  TestCertificates() = default;
  ~TestCertificates();  // removes the directory and everything in it
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  // Creates the temp dir and every file above. On failure returns false with
  // `*error` naming the step and quoting openssl's output (stdout and stderr).
  // Call once.
  bool Generate(std::string* error);

  // The process's shared set, generated on the first call; nullptr with
  // `*error` set if there is no openssl or generating failed (every call then
  // reports the same error; it is not retried).
  static const TestCertificates* Shared(std::string* error);

  // Absolute paths of PEM files; valid after a successful Generate.
  const std::string& dir() const { return dir_; }
  std::string ca_cert() const { return File("ca.crt"); }
  std::string ca_key() const { return File("ca.key"); }
  std::string server_cert() const { return File("server.crt"); }
  std::string server_key() const { return File("server.key"); }
  std::string wrong_name_cert() const { return File("wrong_name.crt"); }
  std::string wrong_name_key() const { return File("wrong_name.key"); }
  std::string client_cert() const { return File("client.crt"); }
  std::string client_key() const { return File("client.key"); }
  std::string other_ca_cert() const { return File("other_ca.crt"); }
  std::string other_ca_key() const { return File("other_ca.key"); }
  std::string other_client_cert() const { return File("other_client.crt"); }
  std::string other_client_key() const { return File("other_client.key"); }

 private:
  std::string File(const char* name) const { return dir_ + "/" + name; }

  std::string dir_;  // empty until Generate created it
};

// Whether there is an openssl binary (SF_OPENSSL, found at configure time).
bool OpenSslAvailable();

}  // namespace singleflight::test

// Points `certs` (a `const TestCertificates*`) at the shared set in a test (or
// its SetUp), skipping the test with the reason when there is no openssl,
// failing it with openssl's output when generating failed.
#define SF_TEST_CERTIFICATES(certs)                                             \
  do {                                                                          \
    if (!::singleflight::test::OpenSslAvailable()) {                            \
      GTEST_SKIP() << "no openssl (apt-get install openssl, then reconfigure)"; \
    }                                                                           \
    std::string sf_certs_error;                                                 \
    (certs) = ::singleflight::test::TestCertificates::Shared(&sf_certs_error);  \
    ASSERT_NE((certs), nullptr) << "test certificates: " << sf_certs_error;     \
  } while (0)
