// Sentinel through the binding, against real servers: a sentinel monitoring
// this file's private redis-server, and a Group that finds that master
// through the sentinel (redis+sentinel:// or redis.sentinel). Failover itself
// is the C++ library's to prove (test/sentinel_test.cpp); this proves the
// binding carries the settings to it.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Group } = require('..');
const { redisForFile, startSentinel } = require('./support/redis');

const redis = redisForFile(test, 'sentinel');
const { skip, newPrefix } = redis;
// Started by the first test that needs it: node:test does not wait for one
// root before() hook (the master's, redisForFile) before running the next.
let starting = null;
const sentinelReady = () => (starting ??= startSentinel(redis, 'sfmaster'));
test.after(async () => { if (starting) await (await starting).stop(); });

async function callStoresInMaster(redisOptions) {
  const prefix = newPrefix();
  const group = new Group({ redis: redisOptions, whenRedisDown: 'failFast', keyPrefix: prefix });
  const outcome = await group.doWithInfo('k', () => 'via sentinel');
  assert.deepEqual([outcome.value, outcome.source, outcome.degraded], ['via sentinel', 'led', false]);
  assert.equal(await redis.client.command('EXISTS', `${prefix}{k}:result`), 1);
  await group.close();
}

test('redis+sentinel:// finds the master through the sentinel', { skip }, async () => {
  await callStoresInMaster((await sentinelReady()).url);
});

test('redis.sentinel as an object: an unreachable sentinel first, then the real one', { skip }, async () => {
  const sentinel = await sentinelReady();
  await callStoresInMaster({
    sentinel: { masterName: 'sfmaster', sentinels: [{ host: '127.0.0.1', port: 1 }, { host: '127.0.0.1', port: sentinel.port }] },
  });
});

test('a master name the sentinels do not know fails, naming it', { skip }, async () => {
  const sentinel = await sentinelReady();
  const group = new Group({ redis: `redis+sentinel://127.0.0.1:${sentinel.port}/nosuchmaster`, whenRedisDown: 'failFast', keyPrefix: newPrefix() });
  const error = await group.do('k', () => 'v').then(() => null, (e) => e);
  assert.equal(error && error.code, 'unavailable');
  assert.match(error.message, /nosuchmaster/);
  await group.close();
});
