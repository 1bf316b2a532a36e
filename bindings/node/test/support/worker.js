// One member of the Node fleet tests, the counterpart of the C++
// test/helpers/sf_worker. It runs as a forked process (fleet.js's NodeWorker:
// config in argv[2], messages over the IPC channel) or as a worker_thread
// (config in workerData, messages over parentPort): the same code on a
// process's main loop or on a thread's own loop.
//
//   config: {redis: URL, prefix: P, key: K, callers: C, raw: bool,
//            timeoutMs: T, skipClose: bool, counter: where the INCRs go
//            (a port or {path}; default: the URL's port — set it for a
//            TLS-only server, whose plaintext side is its unix socket)}
//
// Messages from the test: {type: "go"} starts C concurrent calls of `key`;
// {type: "finish", value} or {type: "fail", message} settles the oldest parked
// production; {type: "quit"} closes the group (not with skipClose: then the
// environment's cleanup must) and lets the process or thread end.
// Messages to the test: {type: "ready"}; {type: "following"} once the group
// has had 2 checks answered (its flight subscribed to the channel and
// re-checked: the holder's completion will now wake it by pub/sub);
// {type: "leading", key} when this member's producer starts (it INCRs
// "<prefix>exec:<key>" in Redis first, as sf_worker does, so executions are
// counted in Redis); {type: "results", results: [{code, source, value}],
// stats} when every call is answered.
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { Group } = require('../..');
const { RespClient } = require('./resp');

const channel = parentPort
  ? { config: workerData, send: (m) => parentPort.postMessage(m), on: (f) => parentPort.on('message', f), end: () => parentPort.close() }
  : { config: JSON.parse(process.argv[2]), send: (m) => process.send(m), on: (f) => process.on('message', f), end: () => process.disconnect() };

async function main() {
  const { config } = channel;
  const group = new Group({ redis: config.redis, keyPrefix: config.prefix, raw: Boolean(config.raw) });
  const counter = await RespClient.connect(config.counter ?? Number(new URL(config.redis).port));
  const parked = [];
  const producer = async ({ key }) => {
    await counter.command('INCR', `${config.prefix}exec:${key}`);
    channel.send({ type: 'leading', key });
    return new Promise((resolve, reject) => parked.push({ resolve, reject }));
  };
  const call = async () => {
    try {
      const { value, source } = await group.doWithInfo(config.key, producer, { timeoutMs: config.timeoutMs ?? 60000 });
      return { code: 'ok', source, value: value.toString() };
    } catch (error) {
      return { code: error.code, source: error.source, value: error.message };
    }
  };
  // Stats change on the group's own events, which JS does not see: look at
  // them every millisecond until the follower is in place.
  const reportFollowing = () => {
    const watch = setInterval(() => {
      if (group.stats().checks < 2) return;
      clearInterval(watch);
      channel.send({ type: 'following' });
    }, 1);
    watch.unref();
  };
  channel.on(async (message) => {
    switch (message.type) {
      case 'go': {
        reportFollowing();
        const results = await Promise.all(Array.from({ length: config.callers }, call));
        channel.send({ type: 'results', results, stats: group.stats() });
        break;
      }
      case 'finish':
        parked.shift().resolve(message.value);
        break;
      case 'fail':
        parked.shift().reject(new Error(message.message));
        break;
      case 'quit':
        if (!config.skipClose) await group.close();
        counter.close();
        channel.end();
        break;
      default:
        throw new Error(`worker: unknown message ${message.type}`);
    }
  });
  channel.send({ type: 'ready' });
}

main();
