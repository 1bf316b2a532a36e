// The three ways to make "many callers, one expensive producer" that the
// benchmark compares. Each is a factory: create(config) resolves (connected)
// to { call(key, produce) -> Promise<{ value, source? }>, get(key, produce)
// -> Promise<value> (the plain call the hit loop times), close() }, where
// produce() runs the work and resolves to the value to share.
'use strict';

const { setTimeout: sleep } = require('node:timers/promises');

// (a) This package: one Group per process; followers in other processes are
// woken by pub/sub, callers in the same process join the local flight.
async function singleflight({ redisUrl, prefix, resultTtlMs, lockTtlMs }) {
  const { Group } = require('../');
  // The L1 TTL is raised so the hit loop measures the L1, not a Redis refill
  // every second (the library's default l1.ttlMs is 1000).
  const group = new Group({ redis: redisUrl, keyPrefix: prefix, resultTtlMs, lockTtlMs, l1: { ttlMs: resultTtlMs } });
  // Reach Redis once, so "ready" means connected, as sf_demo's workers do.
  await group.do(`warm:${process.pid}`, () => 'warm');
  return {
    async call(key, produce) {
      const { value, source } = await group.doWithInfo(key, produce, { timeoutMs: 60000 });
      return { value, source };
    },
    get: (key, produce) => group.do(key, produce, { timeoutMs: 60000 }),
    close: () => group.close(),
  };
}

// (b) cache-manager 7 with two tiers, in-memory then Redis (keyv +
// @keyv/redis): its wrap() coalesces concurrent callers of one process
// (coalesceAsync), but every process that misses Redis runs the producer.
async function cacheManager({ redisUrl, prefix, resultTtlMs }) {
  const { createCache } = require('cache-manager');
  const { Keyv } = require('keyv');
  const { createKeyv } = require('@keyv/redis');
  const redis = createKeyv(redisUrl, { namespace: prefix });
  const cache = createCache({ stores: [new Keyv(), redis], ttl: resultTtlMs });
  await redis.get('warm'); // @keyv/redis connects on first use
  return {
    async call(key, produce) {
      return { value: await cache.wrap(key, produce, resultTtlMs) };
    },
    get: (key, produce) => cache.wrap(key, produce, resultTtlMs),
    close: () => cache.disconnect(),
  };
}

// (c) The classic distributed pattern: redlock (v5) + ioredis. Read the
// result; on a miss try the lock once; the winner produces and stores the
// result, everyone else polls the result key every pollMs.
async function redlockPolling({ redisUrl, prefix, resultTtlMs, lockTtlMs, pollMs }) {
  const Redis = require('ioredis');
  const { default: Redlock, ExecutionError } = require('redlock');
  const redis = new Redis(redisUrl, { lazyConnect: true });
  await redis.connect();
  const redlock = new Redlock([redis], { retryCount: 0 }); // a taken lock fails at once
  const call = async (key, produce) => {
    const resultKey = `${prefix}result:${key}`;
    for (;;) {
      const stored = await redis.get(resultKey);
      if (stored !== null) return { value: stored };
      let lock;
      try {
        lock = await redlock.acquire([`${prefix}lock:${key}`], lockTtlMs);
      } catch (error) {
        if (!(error instanceof ExecutionError)) throw error;
        await sleep(pollMs); // someone else holds it: poll the result
        continue;
      }
      try {
        // The previous holder may have stored it between our GET and our lock.
        const late = await redis.get(resultKey);
        if (late !== null) return { value: late };
        const value = await produce();
        await redis.set(resultKey, value, 'PX', resultTtlMs);
        return { value };
      } finally {
        await lock.release().catch(() => {}); // it expires anyway
      }
    }
  };
  return {
    call,
    get: async (key, produce) => (await call(key, produce)).value,
    close: () => redis.quit(),
  };
}

module.exports = {
  singleflight,
  'cache-manager': cacheManager,
  redlock: redlockPolling,
};
