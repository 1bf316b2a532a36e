// The Node tests' Redis fixture: a private redis-server on a free loopback
// port, owned by the test that starts it and stopped by it. The same contract
// as the C++ fixture (test/support/redis_server.h): the server counts as ours
// only when its INFO process_id is the child we started (another process may
// take a free port before the server binds it), a few ports are tried, and
// nothing is persisted. Tests skip, saying why, when redis-server is missing.
//
// With TLS (startRedis({ tls: certificates }), redisForFile(..., { tls: true })
// with certificates of its own, certs.js) the server listens on a TLS-only
// TCP port and on a plaintext unix socket in its own directory; the
// fixture's checks and the tests' own RespClients go over that socket
// (`direct`), since a plaintext client on the TLS port is reset.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { RespClient } = require('./resp');
const { generateCertificates, opensslMissing } = require('./certs');

function redisServerMissing() {
  const probe = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return probe.error ? 'redis-server is not installed (Debian: apt-get install redis-server)' : null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

// Resolves once the server at `direct` (a port, or { path } of its unix
// socket) answers and is `child`; null if the child exited first (the port
// was taken) or someone else answers. With TLS the socket answering proves
// the TLS port ours too: Redis binds its TCP ports before the unix socket and
// exits if one is taken.
async function waitReady(child, direct) {
  let gone = false;
  exited(child).then(() => { gone = true; });
  for (let attempt = 0; attempt < 500 && !gone; attempt++) {
    let client;
    try {
      client = await RespClient.connect(direct);
      const info = await client.text('INFO', 'server');
      const pid = Number(/process_id:(\d+)/.exec(info)[1]);
      return pid === child.pid ? client : (client.close(), null);
    } catch {
      if (client) client.close();
      await new Promise((resolve) => setTimeout(resolve, 10)); // not listening yet: try again
    }
  }
  return null;
}

class RedisServer {
  constructor(child, port, client, { tls = null, direct, dir }) {
    this.child = child;
    this.port = port; // the TLS port with TLS
    this.tls = tls; // the certificates the server uses, or null
    // The URL for a Group: with TLS, rediss:// trusting the fixture's CA.
    this.url = tls
      ? `rediss://127.0.0.1:${port}?tls_ca=${encodeURIComponent(tls.ca)}`
      : `redis://127.0.0.1:${port}`;
    this.direct = direct; // where a RespClient reaches the server: a port or { path }
    this.client = client; // a RespClient for the test's own checks
    this._dir = dir;
  }

  async stop() {
    this.client.close();
    this.child.kill('SIGTERM');
    await exited(this.child);
    if (this._dir) fs.rmSync(this._dir, { recursive: true, force: true });
  }
}

// Starts a redis-server on a free port: `setup(port)` gives its arguments,
// where the fixture reaches it (`direct`: the port, or { path }) and the
// directory it owns (removed with it), or null.
async function startServer(setup, extra = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const { args, direct = port, dir = null } = setup(port);
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    const client = await waitReady(child, direct);
    if (client) return new RedisServer(child, port, client, { direct, dir, ...extra });
    child.kill('SIGKILL');
    await exited(child);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  throw new Error('could not start redis-server on a free port');
}

// options.tls: certificates from certs.js (serverCert, serverKey, ca): a
// TLS-only server; options.tlsAuthClients: it asks for a client certificate
// signed by that CA (mutual TLS).
function startRedis(options = {}) {
  const tls = options.tls || null;
  return startServer((port) => {
    const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    if (!tls) {
      args.push('--port', String(port), '--dir', os.tmpdir(), '--dbfilename', `sf-node-${port}.rdb`);
      return { args };
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-node-redis-'));
    const direct = { path: path.join(dir, 'redis.sock') };
    args.push('--port', '0', '--tls-port', String(port),
      '--tls-cert-file', tls.serverCert, '--tls-key-file', tls.serverKey, '--tls-ca-cert-file', tls.ca,
      '--tls-auth-clients', options.tlsAuthClients ? 'yes' : 'no',
      '--unixsocket', direct.path, '--unixsocketperm', '700', '--dir', dir);
    return { args, direct, dir };
  }, { tls });
}

// A sentinel (redis-server --sentinel, plaintext) monitoring `master` (a
// plaintext RedisServer) as `masterName`, with a quorum of 1. Its config
// file, which a sentinel rewrites, lives in a directory of its own. `url` is
// redis+sentinel:// to that master.
async function startSentinel(master, masterName) {
  const masterPort = master.port; // read first: a throw here leaves no directory behind
  const server = await startServer((port) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-node-sentinel-'));
    const config = path.join(dir, 'sentinel.conf');
    fs.writeFileSync(config, [
      `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 1`,
    ].join('\n') + '\n');
    return { args: [config, '--sentinel'], dir };
  });
  server.url = `redis+sentinel://127.0.0.1:${server.port}/${masterName}`;
  return server;
}

// One private server for a whole test file: started before its first test,
// stopped after its last. `skip` is false, or why the file's tests skip;
// url, port, direct and client are the server's; newPrefix() gives each test
// keys of its own. { tls: true }: a TLS-only server, with certificates made
// for the file in a directory of its own (`certs`: the paths, certs.js).
function redisForFile(test, name, { tls = false } = {}) {
  let server = null;
  let certs = null;
  let certsDir = null;
  let prefixes = 0;
  const skip = redisServerMissing() || (tls && opensslMissing()) || false;
  test.before(async () => {
    if (skip) return;
    if (tls) {
      certsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-node-certs-'));
      certs = generateCertificates(certsDir);
    }
    server = await startRedis({ tls: certs });
  });
  test.after(async () => {
    if (server) await server.stop();
    if (certsDir) fs.rmSync(certsDir, { recursive: true, force: true });
  });
  return {
    skip,
    get url() { return server.url; },
    get port() { return server.port; },
    get direct() { return server.direct; },
    get client() { return server.client; },
    get certs() { return certs; },
    newPrefix: () => `sfnode-${name}-${process.pid}-${++prefixes}:`,
  };
}

module.exports = { startRedis, startSentinel, redisServerMissing, redisForFile };
