// examples/fetch.js as real processes (a cluster primary and 4 workers on one
// port) against a private redis-server and a local upstream that counts its
// hits, spoken to over HTTP.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const { startRedis, redisServerMissing } = require('./support/redis');

const skip = redisServerMissing() || false;
// The only bound on a hang (a service that never listens or never exits);
// nothing else in this file waits on the clock.
const timeout = 120000;
const FETCH_JS = path.join(__dirname, '..', 'examples', 'fetch.js');

// The upstream: /slow/* is held until release(), so every client request is
// sent before any answer can exist; /fail/* answers 500; /hang/* never
// answers. Bodies carry the hit number, so identical bodies prove that
// callers shared one fetch.
class Upstream {
  constructor() {
    this.hits = new Map(); // path -> requests received
    this._firstHit = deferred();
    this._gate = deferred();
    this.server = http.createServer((req, res) => this._serve(req, res));
  }

  async start() {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.base = `http://127.0.0.1:${this.server.address().port}`;
  }

  firstHit() { return this._firstHit.promise; }
  release() { this._gate.resolve(); }

  async _serve(req, res) {
    const n = (this.hits.get(req.url) ?? 0) + 1;
    this.hits.set(req.url, n);
    this._firstHit.resolve();
    if (req.url.startsWith('/fail/')) return res.writeHead(500).end('no');
    if (req.url.startsWith('/hang/')) return undefined; // until close()
    await this._gate.promise;
    res.end(`content of ${req.url} (hit #${n})`);
  }

  close() {
    this.server.closeAllConnections();
    this.server.close();
  }
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

// The service: resolves once its primary printed "listening HOST:PORT ...".
async function startService(args) {
  const child = spawn(process.execPath, [FETCH_JS, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines = readline.createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    once(lines, 'line'),
    exited.then(([code]) => { throw new Error(`fetch.js exited (${code}) before listening`); }),
  ]);
  const match = /^listening (\S+):(\d+) workers (\d+)$/.exec(line);
  assert.ok(match, `unexpected first line: ${line}`);
  return { child, exited, port: Number(match[2]), workers: Number(match[3]) };
}

// One GET on a connection of its own (no agent: every request must be a
// separate connection for the cluster to spread them). `sent` resolves when
// the request is on the wire, `response` to { status, body }.
function get(port, target) {
  const req = http.get({ host: '127.0.0.1', port, path: target, agent: false });
  const sent = once(req, 'finish');
  const response = new Promise((resolve, reject) => {
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
  });
  return { sent, response };
}

// Bytes llhttp cannot parse, on a raw socket; resolves to the status code.
async function rawStatus(port, bytes) {
  const socket = net.connect(port, '127.0.0.1');
  socket.end(bytes);
  const chunks = [];
  for await (const chunk of socket) chunks.push(chunk);
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString())[1]);
}

const fetchPath = (url) => `/fetch?url=${encodeURIComponent(url)}`;

let redis;
let upstream;
let service;
test.before(async () => {
  if (skip) return;
  redis = await startRedis();
  upstream = new Upstream();
  await upstream.start();
  service = await startService(['--listen', '127.0.0.1:0', '--workers', '4', '--redis-url', redis.url,
                                '--prefix', `sfnode-example-${process.pid}:`]);
}, { timeout });
test.after(async () => {
  if (service && service.child.exitCode === null && service.child.signalCode === null) {
    service.child.kill('SIGKILL');
    await service.exited;
  }
  if (upstream) upstream.close();
  if (redis) await redis.stop();
}, { timeout });

test('fetch.js prints one listening line for its 4 workers', { skip, timeout }, () => {
  assert.equal(service.workers, 4);
  assert.ok(service.port > 0);
});

test('20 concurrent GETs for one URL over 4 workers: one upstream fetch, one body', { skip, timeout }, async () => {
  const url = `${upstream.base}/slow/one`;
  const calls = Array.from({ length: 20 }, () => get(service.port, fetchPath(url)));
  await Promise.all([upstream.firstHit(), ...calls.map((c) => c.sent)]);
  upstream.release();
  const responses = await Promise.all(calls.map((c) => c.response));
  const bodies = responses.map((r) => {
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body);
  });
  assert.deepEqual(new Set(bodies.map((b) => b.data)), new Set(['content of /slow/one (hit #1)']));
  assert.ok(bodies.every((b) => b.url === url));
  assert.equal(upstream.hits.get('/slow/one'), 1);
  const sources = bodies.map((b) => b.source);
  assert.equal(sources.filter((s) => s === 'led').length, 1, sources.join());
  // The cluster spreads the 20 connections over the workers, so some callers
  // got the value from another process: woken by pub/sub, or found in Redis.
  assert.ok(sources.some((s) => ['pubsub', 'redis', 'fallback'].includes(s)), sources.join());
});

test('a missing, malformed or non-http url and an unparsable request get 400', { skip, timeout }, async () => {
  for (const target of ['/fetch', '/fetch?nourl=1', '/fetch?url=', '/fetch?url=%zz', fetchPath('not a url'),
                        fetchPath('file:///etc/passwd')]) {
    const { status, body } = await get(service.port, target).response;
    assert.equal(status, 400, target);
    assert.ok(JSON.parse(body).error, body);
  }
  assert.equal(await rawStatus(service.port, 'GARBAGE\r\n\r\n'), 400);
  assert.equal(await rawStatus(service.port, 'GET /fetch HTTP/1.1\r\nHost x\r\n\r\n'), 400);
  assert.equal((await get(service.port, '/nowhere').response).status, 404);
});

test('an upstream that fails is a 502 with its reason', { skip, timeout }, async () => {
  const { status, body } = await get(service.port, fetchPath(`${upstream.base}/fail/one`)).response;
  assert.equal(status, 502, body);
  assert.match(JSON.parse(body).error, /^producer_error: upstream answered 500/);
});

test('a caller whose wait passes --timeout-ms gets 504; SIGTERM then aborts the fetch', { skip, timeout }, async () => {
  const slow = await startService(['--listen', '127.0.0.1:0', '--workers', '1', '--timeout-ms', '100',
                                   '--redis-url', redis.url, '--prefix', `sfnode-example-${process.pid}-t:`]);
  try {
    const { status, body } = await get(slow.port, fetchPath(`${upstream.base}/hang/one`)).response;
    assert.equal(status, 504, body);
    assert.match(JSON.parse(body).error, /^timeout: /);
    // The fetch still hangs: the stop must not wait for it (closing the
    // group aborts ctx.signal, and so the fetch).
    slow.child.kill('SIGTERM');
    assert.deepEqual(await slow.exited, [0, null]);
  } finally {
    slow.child.kill('SIGKILL');
  }
});

test('SIGTERM stops every worker and the primary exits 0', { skip, timeout }, async () => {
  service.child.kill('SIGTERM');
  const [code, signal] = await service.exited;
  assert.deepEqual([code, signal], [0, null]);
});
