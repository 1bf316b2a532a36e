// One benchmark process: builds the implementation named in its config,
// then answers the parent's messages (IPC):
//   { type: 'go', round, t0 }  -> runs `callers` concurrent calls over `keys`
//                                 keys; replies { type: 'results', results }
//   { type: 'hit', calls }     -> times awaited calls on one cached key, and
//                                 as many awaited setImmediate (one loop turn);
//                                 replies { type: 'hit', nsPerCall, executions,
//                                 setImmediateNs }
//   { type: 'quit' }           -> closes its connections and exits 0
'use strict';

const { setTimeout: sleep } = require('node:timers/promises');
const impls = require('./impls');
const { RespClient } = require('../test/support/resp');

const config = JSON.parse(process.argv[2]);

// The work: counted in Redis before it starts (INCR, so every execution in
// any process is seen), then workMs of waiting, as sf_demo's producers.
function producer(counter, key) {
  return async () => {
    const execution = await counter.command('INCR', `${config.prefix}exec:${key}`);
    await sleep(config.workMs);
    return `v:${key}:pid${process.pid}:exec${execution}`;
  };
}

// Latency is measured from the parent's t0: hrtime is CLOCK_MONOTONIC, one
// clock for every process of the machine.
async function round(client, counter, { round: r, t0 }) {
  const start = BigInt(t0);
  const calls = Array.from({ length: config.callers }, async (_, i) => {
    // Worker i asks for key-i first, so the race for a key is not always won
    // by the worker that got "go" first (as sf_demo).
    const key = `r${r}:key-${(i + config.index) % config.keys}`;
    try {
      const { value, source } = await client.call(key, producer(counter, key));
      return { key, value, source, latencyMs: Number(process.hrtime.bigint() - start) / 1e6 };
    } catch (error) {
      return { key, error: String(error && error.message), latencyMs: Number(process.hrtime.bigint() - start) / 1e6 };
    }
  });
  return Promise.all(calls);
}

// The hit path: one call fills the caches, then `calls` awaited calls in a
// row on that key; their producer must never run again. A loop turn is the
// yardstick: a callback that is never run inside the call costs at least one.
async function hit(client, calls) {
  const key = `hit:${process.pid}`;
  let executions = 0;
  const produce = async () => {
    executions++;
    return 'the cached value';
  };
  await client.get(key, produce);
  const start = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await client.get(key, produce);
  const nsPerCall = Number(process.hrtime.bigint() - start) / calls;
  const turn = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await new Promise((resolve) => setImmediate(resolve));
  const setImmediateNs = Number(process.hrtime.bigint() - turn) / calls;
  return { nsPerCall, executions, setImmediateNs };
}

async function main() {
  const counter = await RespClient.connect(config.redisPort);
  const client = await impls[config.impl](config);
  process.on('message', async (message) => {
    if (message.type === 'go') {
      process.send({ type: 'results', results: await round(client, counter, message) });
    } else if (message.type === 'hit') {
      process.send({ type: 'hit', ...(await hit(client, message.calls)) });
    } else if (message.type === 'quit') {
      await client.close();
      counter.close();
      process.exit(0); // the IPC channel would keep us alive
    }
  });
  process.send({ type: 'ready' });
}

main().catch((error) => {
  console.error(`bench worker (${config.impl}): ${error.stack}`);
  process.exit(1);
});
