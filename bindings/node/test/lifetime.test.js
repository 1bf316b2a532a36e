// How a group lives in a Node process: one group per worker_thread's loop,
// a script that ends exits by itself, user exceptions surface as Node's own.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { redisForFile } = require('./support/redis');
const { NodeWorker } = require('./support/fleet');

const redis = redisForFile(test, 'lifetime');
const { skip, newPrefix } = redis;

// Runs `source` in a fresh node process with the package as `sf` and the
// server's URL as `url`; resolves to { code, stdout, stderr } when it exits.
// No timer here: a process that does not exit fails the test by its timeout.
function runScript(source) {
  const prelude = `const sf = require(${JSON.stringify(path.join(__dirname, '..'))}); const url = ${JSON.stringify(redis.url)};\n`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', prelude + source], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('a script that makes one call and ends exits by itself', { skip, timeout: 60000 }, async () => {
  const run = await runScript(`
    const group = new sf.Group({ redis: url, keyPrefix: ${JSON.stringify(newPrefix())} });
    group.do('k', async () => 'done').then((v) => console.log(v));`);
  assert.deepEqual([run.code, run.stdout, run.stderr], [0, 'done\n', '']);
});

test('a group that is never used does not keep the process alive', { skip, timeout: 60000 }, async () => {
  const run = await runScript(`new sf.Group({ redis: url }); console.log('created');`);
  assert.deepEqual([run.code, run.stdout], [0, 'created\n']);
});

test('an exception thrown by user code reaches uncaughtException, the call still ends', { skip, timeout: 60000 }, async () => {
  const run = await runScript(`
    process.on('uncaughtException', (error) => console.log('uncaught: ' + error.message));
    const group = new sf.Group({ redis: url, keyPrefix: ${JSON.stringify(newPrefix())} });
    group.do('k', () => { process.nextTick(() => { throw new Error('user bug'); }); return 'v'; })
      .then((v) => console.log('value: ' + v));`);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.stdout.split('\n').filter(Boolean).sort(), ['uncaught: user bug', 'value: v']);
});

test('without a handler, a user exception ends the process as Node does', { skip, timeout: 60000 }, async () => {
  const run = await runScript(`
    const group = new sf.Group({ redis: url, keyPrefix: ${JSON.stringify(newPrefix())} });
    group.do('k', () => { process.nextTick(() => { throw new Error('user bug'); }); return 'v'; });`);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /Error: user bug/);
});

test('worker_threads: one group per thread, 3 threads x 10 calls -> 1 execution', { skip, timeout: 60000 }, async () => {
  const prefix = newPrefix();
  const threads = Array.from({ length: 3 }, () => new NodeWorker({ redis: redis.url, prefix, key: 'k', callers: 10 }, { thread: true }));
  await Promise.all(threads.map((t) => t.next('ready')));
  const leading = Promise.race(threads.map((t) => t.next('leading').then(() => t)));
  for (const t of threads) t.send({ type: 'go' });
  const leader = await leading;
  await Promise.all(threads.filter((t) => t !== leader).map((t) => t.next('following')));
  leader.send({ type: 'finish', value: 'shared by threads' });
  for (const report of await Promise.all(threads.map((t) => t.next('results')))) {
    assert.deepEqual(new Set(report.results.map((r) => `${r.code}:${r.value}`)), new Set(['ok:shared by threads']));
  }
  assert.equal(await redis.client.text('GET', `${prefix}exec:k`), '1');
  assert.deepEqual(await Promise.all(threads.map((t) => t.quit())), [0, 0, 0]);
});

test('a worker_thread that ends without closing its group exits cleanly', { skip, timeout: 60000 }, async () => {
  const prefix = newPrefix();
  const thread = new NodeWorker({ redis: redis.url, prefix, key: 'k', callers: 2, skipClose: true }, { thread: true });
  await thread.next('ready');
  thread.send({ type: 'go' });
  await thread.next('leading');
  thread.send({ type: 'finish', value: 'v' });
  await thread.next('results');
  assert.equal(await thread.quit(), 0);
});

test('a worker_thread terminated mid-flight ends; its lock is released for the next leader', { skip, timeout: 60000 }, async () => {
  const prefix = newPrefix();
  const doomed = new NodeWorker({ redis: redis.url, prefix, key: 'k', callers: 3 }, { thread: true });
  await doomed.next('ready');
  doomed.send({ type: 'go' });
  await doomed.next('leading');
  assert.equal(await doomed.child.terminate(), 1);
  // The group's close released the lock, so the next caller leads at once
  // rather than after the lock's TTL.
  const next = new NodeWorker({ redis: redis.url, prefix, key: 'k', callers: 1 }, { thread: true });
  await next.next('ready');
  next.send({ type: 'go' });
  await next.next('leading');
  next.send({ type: 'finish', value: 'second' });
  const report = await next.next('results');
  assert.deepEqual([report.results[0].value, report.results[0].source], ['second', 'led']);
  assert.equal(report.stats.takeovers, 0);
  assert.equal(await next.quit(), 0);
});
