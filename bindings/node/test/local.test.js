// The JS API on a local-only group (no Redis): coalescing in one process,
// types, errors, timeout, AbortSignal, close, wrap, option checks.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Group, SingleflightError, parseRedisUrl } = require('..');

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

test('concurrent calls for one key share one execution', async () => {
  const group = new Group();
  let runs = 0;
  const gate = deferred();
  const producer = async () => { runs++; await gate.promise; return 'hello'; };
  const calls = Array.from({ length: 20 }, () => group.doWithInfo('k', producer));
  gate.resolve();
  const results = await Promise.all(calls);
  assert.equal(runs, 1);
  assert.deepEqual(new Set(results.map((r) => r.value)), new Set(['hello']));
  assert.equal(results.filter((r) => r.source === 'led').length, 1);
  assert.equal(results.filter((r) => r.source === 'joined').length, 19);
  assert.ok(results.every((r) => r.shared));
  await group.close();
});

test('a string comes back as a string, a Buffer as a Buffer', async () => {
  const group = new Group({ l1: false });
  assert.equal(await group.do('s', () => 'text ü'), 'text ü');
  const bytes = await group.do('b', () => Buffer.from([0, 255, 7]));
  assert.ok(Buffer.isBuffer(bytes));
  assert.deepEqual([...bytes], [0, 255, 7]);
  assert.equal(await group.do('sync', () => 'no promise needed'), 'no promise needed');
  await group.close();
});

test('raw mode gives Buffers of the bytes', async () => {
  const group = new Group({ raw: true });
  const value = await group.do('k', () => 'abc');
  assert.ok(Buffer.isBuffer(value));
  assert.equal(value.toString(), 'abc');
  await group.close();
});

test('a throwing or rejecting producer rejects every waiter with its message', async () => {
  const group = new Group();
  const gate = deferred();
  const producer = async () => { await gate.promise; throw new Error('boom'); };
  const calls = [group.do('k', producer), group.do('k', producer)];
  gate.resolve();
  for (const outcome of await Promise.allSettled(calls)) {
    assert.equal(outcome.status, 'rejected');
    assert.ok(outcome.reason instanceof SingleflightError);
    assert.equal(outcome.reason.code, 'producer_error');
    assert.equal(outcome.reason.message, 'boom');
  }
  await assert.rejects(group.do('sync', () => { throw new TypeError('sync throw'); }), { code: 'producer_error', message: 'sync throw' });
  await assert.rejects(group.do('bad', () => 42), { code: 'producer_error', message: /returned a number; return a string or a Buffer/ });
  await group.close();
});

test('a caller whose deadline passes gets timeout; the flight goes on', async () => {
  const group = new Group();
  const gate = deferred();
  const producer = () => gate.promise;
  const patient = group.do('k', producer, { timeoutMs: 600000 });
  await assert.rejects(group.do('k', producer, { timeoutMs: 1 }), { name: 'SingleflightError', code: 'timeout' });
  gate.resolve('late');
  assert.equal(await patient, 'late');
  await group.close();
});

test('an AbortSignal cancels one caller; the others still get the value', async () => {
  const group = new Group();
  const gate = deferred();
  const controller = new AbortController();
  const producer = () => gate.promise;
  const other = group.do('k', producer);
  const cancelled = group.do('k', producer, { signal: controller.signal });
  controller.abort(new Error('user left'));
  await assert.rejects(cancelled, (error) => error.code === 'cancelled' && error.cause.message === 'user left');
  await assert.rejects(group.do('k', producer, { signal: AbortSignal.abort() }), { code: 'cancelled' });
  gate.resolve('v');
  assert.equal(await other, 'v');
  await group.close();
});

test('the producer sees its key and a signal that aborts on close', async () => {
  const group = new Group();
  let seen = null;
  const pending = group.do('the-key', (ctx) => {
    seen = ctx;
    return new Promise(() => {});
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(seen.key, 'the-key');
  assert.equal(seen.signal.aborted, false);
  const closed = group.close();
  await assert.rejects(pending, { code: 'closed' });
  await closed;
  assert.equal(seen.signal.aborted, true);
  assert.equal(seen.signal.reason.code, 'closed');
});

test('after close, calls reject with closed and close is idempotent', async () => {
  const group = new Group();
  await group.close();
  await group.close();
  await assert.rejects(group.do('k', () => 'v'), { code: 'closed' });
});

test('bad keys and options are refused clearly', async () => {
  const group = new Group({ maxKeyBytes: 8 });
  await assert.rejects(group.do('', () => 'v'), { code: 'invalid_argument' });
  await assert.rejects(group.do('123456789', () => 'v'), { code: 'invalid_argument' });
  await assert.rejects(group.do(42, () => 'v'), TypeError);
  await assert.rejects(group.do('k', 'not a function'), TypeError);
  await group.close();
  assert.throws(() => new Group({ lockTtl: 5 }), /unknown option "lockTtl"/);
  assert.throws(() => new Group({ lockTtlMs: -1 }), RangeError);
  assert.throws(() => new Group({ whenRedisDown: 'maybe' }), TypeError);
  assert.throws(() => new Group({ redis: 'rediss://h:1?tls_verify=maybe' }), { code: 'invalid_argument', message: /tls_verify is 0 or 1/ });
  assert.throws(() => new Group({ redis: 'redis://h:1?tls_ca=x' }), { code: 'invalid_argument', message: /needs rediss:\/\// });
  assert.throws(() => new Group({ redis: 'http://h' }), { code: 'invalid_argument' });
});

test('redis.tls and redis.sentinel are checked at construction', () => {
  const bad = (redis, pattern, type = TypeError) => assert.throws(() => new Group({ redis }), (e) => e instanceof type && pattern.test(e.message));
  bad({ host: 'h', tls: 'yes' }, /redis\.tls must be true, false or an object \(got a string\)/);
  bad({ host: 'h', tls: { caFlie: 'x' } }, /unknown redis\.tls option "caFlie"/);
  bad({ host: 'h', tls: { caFile: 1 } }, /redis\.tls\.caFile must be a string \(got a number\)/);
  bad({ host: 'h', tls: { verifyPeer: 0 } }, /redis\.tls\.verifyPeer must be a boolean/);
  bad({ host: 'h', tls: { certFile: 'c' } }, /certFile and redis\.tls\.keyFile go together/);
  bad({ sentinel: { sentinels: [{ host: 's' }] } }, /redis\.sentinel\.masterName must be a non-empty string \(got undefined\)/);
  bad({ sentinel: { masterName: 'm' } }, /redis\.sentinel\.sentinels must be a non-empty array/);
  bad({ sentinel: { masterName: 'm', sentinels: [] } }, /redis\.sentinel\.sentinels must be a non-empty array/);
  bad({ sentinel: { masterName: 'm', sentinels: ['s:26379'] } }, /redis\.sentinel\.sentinels\[0\] must be an object/);
  bad({ sentinel: { masterName: 'm', sentinels: [{ host: 's', port: 0 }] } }, /sentinels\[0\]\.port must be a port/, RangeError);
  bad({ sentinel: { masterName: 'm', sentinels: [{ host: 's' }], pasword: 'x' } }, /unknown redis\.sentinel option "pasword"/);
  bad({ host: 'h', livenessTimeoutMs: -1 }, /redis\.livenessTimeoutMs must be an integer/, RangeError);
  bad({ host: 'h', maxUnwrittenBytes: 0.5 }, /redis\.maxUnwrittenBytes must be an integer/, RangeError);
  // Accepted (nothing connects until a call).
  for (const redis of [
    { host: 'h', tls: true },
    { host: 'h', tls: false, livenessTimeoutMs: 1000, maxUnwrittenBytes: 1 << 20 },
    { sentinel: { masterName: 'm', sentinels: [{ host: 's' }, { host: 't', port: 5000 }], username: 'u', password: 'p' }, tls: { caFile: '/ca.pem' } },
  ]) new Group({ redis }).close();
});

test('a value over maxValueBytes is too_large', async () => {
  const group = new Group({ maxValueBytes: 16 });
  await assert.rejects(group.do('k', () => 'x'.repeat(100)), { code: 'too_large' });
  await group.close();
});

test('Redis URLs parse like redis-py and ioredis', () => {
  assert.deepEqual(parseRedisUrl('redis://127.0.0.1:6380/2'), { host: '127.0.0.1', port: 6380, db: 2 });
  assert.deepEqual(parseRedisUrl('redis://u:p%40ss@h'), { username: 'u', password: 'p@ss', host: 'h', port: 6379 });
  assert.deepEqual(parseRedisUrl('redis://:pw@h:1'), { password: 'pw', host: 'h', port: 1 });
  assert.deepEqual(parseRedisUrl('unix:///run/redis.sock?db=3'), { unixSocket: '/run/redis.sock', db: 3 });
  assert.deepEqual(parseRedisUrl('localhost:7000'), { host: 'localhost', port: 7000 });
  assert.deepEqual(parseRedisUrl('redis://[::1]:7000'), { host: '::1', port: 7000 });
});

test('rediss:// and redis+sentinel:// URLs carry tls and sentinel', () => {
  assert.deepEqual(parseRedisUrl('rediss://h'), { host: 'h', port: 6379, tls: {} });
  assert.deepEqual(
    parseRedisUrl('rediss://u:p@127.0.0.1:6390/1?tls_ca=%2Fetc%2Fca.pem&tls_ca_dir=/etc/cas&tls_cert=c.pem&tls_key=k.pem&tls_server_name=redis.internal&tls_verify=0'),
    { host: '127.0.0.1', port: 6390, username: 'u', password: 'p', db: 1,
      tls: { caFile: '/etc/ca.pem', caDir: '/etc/cas', certFile: 'c.pem', keyFile: 'k.pem', serverName: 'redis.internal', verifyPeer: false } });
  assert.deepEqual(parseRedisUrl('rediss://h?tls_verify=1'), { host: 'h', port: 6379, tls: {} });
  const sentinel = parseRedisUrl('redis+sentinel://u:p%40w@s1:5000,s2,[::1]:5002/mymaster/2?sentinel_user=su&sentinel_password=sp');
  assert.deepEqual(sentinel, {
    username: 'u', password: 'p@w', db: 2,
    sentinel: { sentinels: [{ host: 's1', port: 5000 }, { host: 's2', port: 26379 }, { host: '::1', port: 5002 }], masterName: 'mymaster', username: 'su', password: 'sp' },
  });
  assert.deepEqual(parseRedisUrl('rediss+sentinel://s1/m?tls_ca=ca.pem'),
    { tls: { caFile: 'ca.pem' }, sentinel: { sentinels: [{ host: 's1', port: 26379 }], masterName: 'm' } });
  // What parseRedisUrl returns is itself a valid `redis` object.
  new Group({ redis: sentinel }).close();
  assert.throws(() => parseRedisUrl('redis+sentinel://s1'), { code: 'invalid_argument', message: /no master name/ });
  assert.throws(() => parseRedisUrl('rediss://h?tls_cert=c'), { code: 'invalid_argument', message: /tls_cert and tls_key go together/ });
});

test('wrap shares one execution per key and keeps fn\'s signature', async () => {
  const group = new Group();
  let runs = 0;
  const gate = deferred();
  const fetchUser = group.wrap(async (id, suffix) => { runs++; await gate.promise; return `user ${id}${suffix}`; }, { key: (id) => `user:${id}` });
  const calls = [fetchUser(1, '!'), fetchUser(1, '?'), fetchUser(2, '.')];
  gate.resolve();
  assert.deepEqual(await Promise.all(calls), ['user 1!', 'user 1!', 'user 2.']);
  assert.equal(runs, 2);
  assert.throws(() => group.wrap(() => 'x'), /needs a key function/);
  await group.close();
});

test('stats are a plain object of counters', async () => {
  const group = new Group();
  await group.do('k', () => 'v');
  await group.do('k', () => 'v');
  const stats = group.stats();
  assert.equal(stats.calls, 2);
  assert.equal(stats.leads, 1);
  assert.equal(stats.l1Hits, 1);
  await group.close();
});

test('an exception thrown in user code after a result surfaces as Node surfaces it', async () => {
  // In a child process, so that the uncaught exception ends that process only.
  const { spawnSync } = require('node:child_process');
  const script = `
    const { Group } = require(${JSON.stringify(require.resolve('..'))});
    const g = new Group();
    process.on('uncaughtException', (e) => { console.log('caught:' + e.message); process.exit(7); });
    g.do('k', () => 'v').then(() => { throw new Error('from user code'); });
  `;
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  // An unhandled rejection of user code reaches 'uncaughtException' (Node's default mode).
  assert.equal(run.status, 7, run.stderr);
  assert.match(run.stdout, /caught:from user code/);
});

test('a producer that never settles: ctx.signal aborts and its callers get timeout', async () => {
  const group = new Group({ producerTimeoutMs: 20 });
  let reason = null;
  const producer = ({ signal }) => new Promise(() => {
    signal.addEventListener('abort', () => { reason = signal.reason; });
  });
  await assert.rejects(group.do('k', producer, { timeoutMs: 600000 }), { code: 'timeout' });
  assert.ok(reason instanceof SingleflightError);
  assert.equal(reason.code, 'timeout');
  assert.equal(group.stats().producerTimeouts, 1);
  await group.close();
});
