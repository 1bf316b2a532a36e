// TLS through the binding, against a real TLS-only redis-server (no
// plaintext TCP port: every TCP client of it speaks TLS) with certificates
// made for this file: a flight shared by two processes over rediss://, the
// object form's tls fields each doing what they say, and refusals that name
// what to fix.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Group } = require('..');
const { redisForFile, startRedis } = require('./support/redis');
const { startNodeWorkers, parkLeaderUntilFollowed } = require('./support/fleet');

const redis = redisForFile(test, 'tls', { tls: true });
const { skip, newPrefix } = redis;

// The message of a call that cannot reach Redis (failFast: the connection's
// own error, not a local run).
async function failure(redisOptions) {
  const group = new Group({ redis: redisOptions, whenRedisDown: 'failFast', keyPrefix: newPrefix() });
  try {
    const error = await group.do('k', () => 'v').then(() => null, (e) => e);
    assert.ok(error, 'the call should have failed');
    assert.equal(error.code, 'unavailable', error.message);
    return error.message;
  } finally {
    await group.close();
  }
}

test('2 processes x 5 calls over rediss://: 1 execution, the follower woken by pub/sub', { skip }, async () => {
  assert.deepEqual((await redis.client.command('CONFIG', 'GET', 'port')).map(String), ['port', '0']);
  const prefix = newPrefix();
  const workers = await startNodeWorkers(2, { redis: redis.url, counter: redis.direct, prefix, key: 'k', callers: 5 });
  const leader = await parkLeaderUntilFollowed(workers);
  // Both groups are connected over TCP, so over TLS.
  const tcpClients = (await redis.client.text('CLIENT', 'LIST')).split('\n').filter((line) => / addr=127\.0\.0\.1:/.test(line));
  assert.ok(tcpClients.length >= 4, `command + subscriber connections of 2 groups:\n${tcpClients.join('\n')}`);
  leader.send({ type: 'finish', value: 'over TLS' });
  const reports = await Promise.all(workers.map((w) => w.next('results')));
  assert.equal(await redis.client.text('GET', `${prefix}exec:k`), '1');
  for (const [i, report] of reports.entries()) {
    for (const r of report.results) assert.deepEqual([r.code, r.value], ['ok', 'over TLS']);
    if (workers[i] === leader) assert.equal(report.stats.leads, 1);
    else assert.deepEqual([report.stats.leads, report.stats.pubsubWakes], [0, 1]);
  }
  assert.deepEqual(await Promise.all(workers.map((w) => w.quit())), [0, 0]);
});

test('redis as an object with tls { caFile, serverName }: the result lands in Redis', { skip }, async () => {
  const prefix = newPrefix();
  const options = {
    redis: { host: '127.0.0.1', port: redis.port, tls: { caFile: redis.certs.ca, serverName: 'localhost' } },
    keyPrefix: prefix,
    whenRedisDown: 'failFast',
  };
  const leader = new Group(options);
  const led = await leader.doWithInfo('k', () => 'stored over TLS');
  assert.deepEqual([led.value, led.source, led.degraded], ['stored over TLS', 'led', false]);
  assert.equal(await redis.client.command('EXISTS', `${prefix}{k}:result`), 1);
  // A second group (an empty L1) reads that result from Redis.
  const reader = new Group(options);
  const read = await reader.doWithInfo('k', () => assert.fail('the result is in Redis'));
  assert.deepEqual([read.value, read.source], ['stored over TLS', 'redis']);
  await Promise.all([leader.close(), reader.close()]);
});

test('a server certificate from another CA is refused, naming tls_ca', { skip }, async () => {
  const message = await failure(`rediss://127.0.0.1:${redis.port}?tls_ca=${encodeURIComponent(redis.certs.otherCa)}`);
  assert.match(message, /not signed by a trusted CA/);
  assert.match(message, /tls_ca/);
  // whenRedisDown "localOnly" (the default): the call runs here, degraded.
  const group = new Group({ redis: { host: '127.0.0.1', port: redis.port, tls: { caFile: redis.certs.otherCa } }, keyPrefix: newPrefix() });
  const outcome = await group.doWithInfo('k', () => 'local');
  assert.deepEqual([outcome.value, outcome.degraded], ['local', true]);
  await group.close();
});

test('tls.serverName is the name checked against the certificate', { skip }, async () => {
  const message = await failure({ host: '127.0.0.1', port: redis.port, tls: { caFile: redis.certs.ca, serverName: 'wrong.example' } });
  assert.match(message, /does not match "wrong\.example"/);
});

test('tls.verifyPeer false connects without trusting the CA', { skip }, async () => {
  const group = new Group({ redis: `rediss://127.0.0.1:${redis.port}?tls_verify=0`, whenRedisDown: 'failFast', keyPrefix: newPrefix() });
  assert.equal((await group.doWithInfo('k', () => 'unverified')).degraded, false);
  await group.close();
});

test('plaintext to the TLS port says to use rediss://', { skip }, async () => {
  const message = await failure({ host: '127.0.0.1', port: redis.port, connectTimeoutMs: 10000 });
  assert.match(message, /rediss:\/\//);
});

test('mutual TLS: tls.certFile and tls.keyFile present the client certificate', { skip }, async () => {
  const server = await startRedis({ tls: redis.certs, tlsAuthClients: true });
  try {
    const tls = { caFile: redis.certs.ca };
    // TLS 1.3 checks the client's certificate after the client's handshake:
    // the refusal comes as an alert ("certificate required") or, when the
    // server's reset overtakes it, as a reset; both messages name the fix.
    assert.match(await failure({ host: '127.0.0.1', port: server.port, tls, connectTimeoutMs: 10000 }), /(certificate required|client certificate).*tls_cert and tls_key/);
    const prefix = newPrefix();
    const group = new Group({
      redis: { host: '127.0.0.1', port: server.port, tls: { ...tls, certFile: redis.certs.clientCert, keyFile: redis.certs.clientKey } },
      whenRedisDown: 'failFast',
      keyPrefix: prefix,
    });
    assert.equal((await group.doWithInfo('k', () => 'mutual')).source, 'led');
    assert.equal(await server.client.command('EXISTS', `${prefix}{k}:result`), 1);
    await group.close();
  } finally {
    await server.stop();
  }
});
