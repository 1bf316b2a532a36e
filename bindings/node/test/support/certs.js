// Throw-away certificates for the TLS tests, made with the openssl CLI in a
// directory of the caller's: a CA, a server certificate it signs (for
// 127.0.0.1 and localhost), a client certificate it signs (mutual TLS), and a
// second CA that signs nothing the server shows (the "wrong CA"). The same
// set as the C++ tests' TestCertificates (test/support/test_certs.cpp).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function opensslMissing() {
  const probe = spawnSync('openssl', ['version'], { stdio: 'ignore' });
  return probe.error || probe.status !== 0 ? 'the openssl command is not installed (Debian: apt-get install openssl)' : null;
}

// Our own -config, so that neither the system's openssl.cnf (Debian's puts
// CA:TRUE on every `req -x509`) nor OPENSSL_CONF changes what we make. One
// extension section per kind of certificate.
const CONFIG = `# Written by singleflight's Node test support (test/support/certs.js).
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
[client]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

// CAs first: the others name them as issuer.
const CERTS = [
  { stem: 'ca', subject: '/CN=singleflight node test CA', extensions: 'ca' },
  { stem: 'other_ca', subject: '/CN=singleflight node other test CA', extensions: 'ca' },
  { stem: 'server', subject: '/CN=localhost', extensions: 'server', issuer: 'ca' },
  { stem: 'client', subject: '/CN=singleflight node test client', extensions: 'client', issuer: 'ca' },
];

// Writes the set into `dir`; returns { ca, otherCa, serverCert, serverKey,
// clientCert, clientKey } (absolute paths). Throws with openssl's output if
// a run fails.
function generateCertificates(dir) {
  const file = (name) => path.join(dir, name);
  fs.writeFileSync(file('openssl.cnf'), CONFIG);
  for (const cert of CERTS) {
    // OpenSSL 3's `req -x509` makes the key and the certificate in one run,
    // signed by -CA/-CAkey when given (self-signed otherwise).
    const args = ['req', '-x509', '-config', file('openssl.cnf'),
      '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', cert.subject, '-extensions', cert.extensions,
      '-keyout', file(`${cert.stem}.key`), '-out', file(`${cert.stem}.crt`)];
    if (cert.issuer) args.push('-CA', file(`${cert.issuer}.crt`), '-CAkey', file(`${cert.issuer}.key`));
    const run = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30000 });
    if (run.status !== 0) {
      throw new Error(`generating ${cert.stem}.crt: \`openssl ${args.join(' ')}\` failed (${run.error || `status ${run.status}`}):\n${run.stderr}`);
    }
  }
  return {
    ca: file('ca.crt'),
    otherCa: file('other_ca.crt'),
    serverCert: file('server.crt'),
    serverKey: file('server.key'),
    clientCert: file('client.crt'),
    clientKey: file('client.key'),
  };
}

module.exports = { generateCertificates, opensslMissing };
