// A private redis-server for one test file: a free loopback port and a temp
// dir of its own, stopped (SIGKILL if it lingers) when the test ends. The
// same contract as the C++ fixture (test/support/redis_server.h): the
// server's INFO process_id must be our child, so the port is really ours.
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const serverBin = process.env.SF_REDIS_SERVER || 'redis-server';
const cliBin = process.env.SF_REDIS_CLI || 'redis-cli';

function available() {
  try {
    execFileSync(serverBin, ['--version'], { stdio: 'ignore' });
    execFileSync(cliBin, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
// For test(..., { skip }): false, or why the tests cannot run.
const skipReason = available() ? false : `no ${serverBin}/${cliBin} (apt-get install redis-server redis-tools)`;

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

class RedisServer {
  // Starts the server; tries a few ports (another process may take the one
  // we picked before redis binds it).
  static async start() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-node-redis-'));
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      const child = spawn(serverBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      const server = new RedisServer(port, dir, child);
      if (await server._ready()) return server;
      server._kill();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error('redis-server did not start on any of 5 free ports');
  }

  constructor(port, dir, child) {
    this.port = port;
    this.dir = dir;
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  // One command through redis-cli; returns its trimmed output.
  command(...args) {
    return execFileSync(cliBin, ['-p', String(this.port), ...args], { encoding: 'utf8' }).trim();
  }

  async stop() {
    this._kill();
    await this.exited;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  _kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  // Polls PING until the server answers as our child, or it exits. Bounded
  // generously (60 s): only "it ended at all" depends on it.
  async _ready() {
    const deadline = Date.now() + 60000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) return false;
      try {
        const info = this.command('INFO', 'server');
        const pid = /process_id:(\d+)/.exec(info);
        if (pid) return Number(pid[1]) === this.child.pid;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return false;
  }
}

// Resolves once predicate() is true, checking every few ms; rejects after a
// generous bound (a hang, not a speed, is what it catches).
async function waitFor(predicate, what, boundMs = 60000) {
  const deadline = Date.now() + boundMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

module.exports = { RedisServer, skipReason, waitFor };
