// The Node tests' Redis fixture: a private redis-server on a free loopback
// port, owned by the test that starts it and stopped by it. The same contract
// as the C++ fixture (test/support/redis_server.h): the server counts as ours
// only when its INFO process_id is the child we started (another process may
// take a free port before the server binds it), a few ports are tried, and
// nothing is persisted. Tests skip, saying why, when redis-server is missing.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const net = require('node:net');
const { RespClient } = require('./resp');

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

// Resolves once the server on `port` answers and is `child`; null if the
// child exited first (the port was taken) or someone else answers.
async function waitReady(child, port) {
  let gone = false;
  exited(child).then(() => { gone = true; });
  for (let attempt = 0; attempt < 500 && !gone; attempt++) {
    let client;
    try {
      client = await RespClient.connect(port);
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
  constructor(child, port, client) {
    this.child = child;
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.client = client; // a RespClient for the test's own checks
  }

  async stop() {
    this.client.close();
    this.child.kill('SIGTERM');
    await exited(this.child);
  }
}

async function startRedis() {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', require('node:os').tmpdir(), '--dbfilename', `sf-node-${port}.rdb`,
    ], { stdio: 'ignore' });
    const client = await waitReady(child, port);
    if (client) return new RedisServer(child, port, client);
    child.kill('SIGKILL');
    await exited(child);
  }
  throw new Error('could not start redis-server on a free port');
}

// One private server for a whole test file: started before its first test,
// stopped after its last. `skip` is false, or why the file's tests skip;
// url, port and client are the server's; newPrefix() gives each test keys
// of its own.
function redisForFile(test, name) {
  let server = null;
  let prefixes = 0;
  const skip = redisServerMissing() || false;
  test.before(async () => { if (!skip) server = await startRedis(); });
  test.after(async () => { if (server) await server.stop(); });
  return {
    skip,
    get url() { return server.url; },
    get port() { return server.port; },
    get client() { return server.client; },
    newPrefix: () => `sfnode-${name}-${process.pid}-${++prefixes}:`,
  };
}

module.exports = { startRedis, redisServerMissing, redisForFile };
