// One process of a multi-process test, driven by the parent over IPC:
//   {cmd: 'go', key, calls, fail?}  starts `calls` concurrent calls on key;
//       the producer INCRs "<prefix>exec:<key>" (executions counted in
//       Redis) and then waits for the parent's 'finish'.
//   The child reports {state: 'leading'} once it runs the producer, or
//   {state: 'following'} once its flight is subscribed and has re-checked
//   (stats.checks >= 2: after that, only a message or a re-check can end it);
//   then {results: [...], stats} when every call has an answer.
//   {cmd: 'finish'} resolves (or, with fail, rejects) the parked producer.
'use strict';
const { execFile } = require('node:child_process');
const { Group } = require('../..');

const [url, prefix] = process.argv.slice(2);
const port = new URL(url).port;
const group = new Group({ redis: url, keyPrefix: prefix });
let finish = null;

function incr(key) {
  return new Promise((resolve, reject) => {
    execFile(process.env.SF_REDIS_CLI || 'redis-cli', ['-p', port, 'INCR', `${prefix}exec:${key}`], (error) => (error ? reject(error) : resolve()));
  });
}

process.on('message', async (message) => {
  if (message.cmd === 'finish') return finish();
  if (message.cmd !== 'go') return;
  const producer = async () => {
    await incr(message.key);
    process.send({ state: 'leading' });
    await new Promise((resolve) => { finish = resolve; });
    if (message.fail) throw new Error('nope from the leader');
    return `v-from-${process.pid}`;
  };
  const calls = [];
  for (let i = 0; i < message.calls; i++) calls.push(group.doWithInfo(message.key, producer, { timeoutMs: 60000 }));
  const poll = setInterval(() => {
    const s = group.stats();
    if (s.leads === 0 && s.checks >= 2) {
      clearInterval(poll);
      process.send({ state: 'following' });
    } else if (s.leads > 0) {
      clearInterval(poll);
    }
  }, 5);
  const settled = await Promise.allSettled(calls);
  clearInterval(poll);
  const results = settled.map((r) => (r.status === 'fulfilled' ? { ok: true, value: r.value.value, source: r.value.source } : { ok: false, code: r.reason.code, message: r.reason.message }));
  process.send({ results, stats: group.stats() });
  await group.close();
  process.disconnect();
});
process.send({ state: 'ready' });
