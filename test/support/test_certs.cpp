#include "support/test_certs.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "support/child_process.h"

namespace singleflight::test {
namespace {

// A hang guard per openssl run, not an expectation: each takes milliseconds.
constexpr uint64_t kOpenSslTimeoutMs = 30000;

// Our own config file (-config), so that neither the system's openssl.cnf
// (Debian's puts v3_ca extensions, CA:TRUE, on every `req -x509`) nor
// OPENSSL_CONF changes what we make. One extension section per kind.
constexpr const char* kConfig = R"(# Written by singleflight's TestCertificates.
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[wrong_name]
basicConstraints = critical,CA:FALSE
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

// One certificate: its file stem, subject, extension section in kConfig, and
// the stem of the CA that signs it (empty: self-signed, i.e. a CA).
struct CertSpec {
  const char* stem;
  const char* subject;
  const char* extensions;
  const char* issuer;
};

// CAs first: the others name them as issuer.
constexpr CertSpec kCerts[] = {
    {"ca", "/CN=singleflight test CA", "ca", ""},
    {"other_ca", "/CN=singleflight other test CA", "ca", ""},
    {"server", "/CN=localhost", "server", "ca"},
    {"wrong_name", "/CN=wrong.example", "wrong_name", "ca"},
    {"client", "/CN=singleflight test client", "client", "ca"},
    {"other_client", "/CN=singleflight other test client", "client", "other_ca"},
};

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

bool OpenSslAvailable() {
  const char* path = SF_OPENSSL;
  return path[0] != '\0' && access(path, X_OK) == 0;
}

TestCertificates::~TestCertificates() {
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

bool TestCertificates::Generate(std::string* error) {
  if (!OpenSslAvailable()) {
    *error = "no openssl binary (SF_OPENSSL is \"" SF_OPENSSL "\")";
    return false;
  }
  if (dir_.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "sf-certs-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      *error = "mkdtemp " + pattern + " failed";
      return false;
    }
    dir_ = pattern;
  }
  const std::string config = File("openssl.cnf");
  {
    std::ofstream out(config);
    out << kConfig;
    if (!out.flush()) {
      *error = "could not write " + config;
      return false;
    }
  }
  for (const CertSpec& cert : kCerts) {
    // OpenSSL 3.0's `req -x509` makes the key and the certificate in one run,
    // signed by -CA/-CAkey when given (self-signed otherwise), with a random
    // serial number.
    std::vector<std::string> args = {"req",
                                     "-x509",
                                     "-config",
                                     config,
                                     "-newkey",
                                     "ec",
                                     "-pkeyopt",
                                     "ec_paramgen_curve:prime256v1",
                                     "-nodes",
                                     "-days",
                                     "2",
                                     "-subj",
                                     cert.subject,
                                     "-extensions",
                                     cert.extensions,
                                     "-keyout",
                                     File(cert.stem) + ".key",
                                     "-out",
                                     File(cert.stem) + ".crt"};
    if (cert.issuer[0] != '\0') {
      args.insert(args.end(),
                  {"-CA", File(cert.issuer) + ".crt", "-CAkey", File(cert.issuer) + ".key"});
    }
    ProgramRun run = RunProgram(SF_OPENSSL, args, kOpenSslTimeoutMs);
    if (!run.succeeded()) {
      std::string command = SF_OPENSSL;
      for (const std::string& arg : args) command += " " + arg;
      *error = std::string("generating ") + cert.stem + ".crt: `" + command + "` " +
               (run.ended ? DescribeStatus(run.status) : "did not finish") +
               (run.output.empty() ? std::string() : ":\n" + run.output);
      return false;
    }
  }
  return true;
}

const TestCertificates* TestCertificates::Shared(std::string* error) {
  struct Generated {
    TestCertificates certs;
    std::string error;
    bool ok = certs.Generate(&error);
  };
  static Generated shared;
  if (!shared.ok) {
    *error = shared.error;
    return nullptr;
  }
  return &shared.certs;
}

}  // namespace singleflight::test
