// Several real processes on one private redis-server: fleet-wide coalescing,
// followers woken by pub/sub, a producer's failure reaching every process,
// and interop with the C++ library's own test worker on the same key.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { redisForFile } = require('./support/redis');
const { CppWorker, cppWorkerBinary, startNodeWorkers, parkLeaderUntilFollowed } = require('./support/fleet');

const redis = redisForFile(test, 'fleet');
const { skip, newPrefix } = redis;

// Starts `count` Node workers on this file's server.
function startWorkers(count, config) {
  return startNodeWorkers(count, { redis: redis.url, ...config });
}

test('4 processes x 25 calls on one key: 1 execution, followers woken by pub/sub', { skip }, async () => {
  const prefix = newPrefix();
  const workers = await startWorkers(4, { prefix, key: 'k', callers: 25 });
  const leader = await parkLeaderUntilFollowed(workers);
  leader.send({ type: 'finish', value: 'the one value' });
  const reports = await Promise.all(workers.map((w) => w.next('results')));
  assert.equal(await redis.client.text('GET', `${prefix}exec:k`), '1');
  for (const [i, report] of reports.entries()) {
    assert.equal(report.results.length, 25);
    for (const r of report.results) assert.deepEqual([r.code, r.value], ['ok', 'the one value']);
    const sources = report.results.map((r) => r.source);
    if (workers[i] === leader) {
      assert.deepEqual([report.stats.leads, sources.filter((s) => s === 'led').length], [1, 1]);
    } else {
      // One flight per process: its first caller is woken by the message,
      // the other 24 joined that flight in their process.
      assert.equal(report.stats.leads, 0);
      assert.equal(report.stats.pubsubWakes, 1);
      assert.equal(sources.filter((s) => s === 'pubsub').length, 1, sources.join());
      assert.equal(sources.filter((s) => s === 'joined').length, 24, sources.join());
    }
  }
  assert.deepEqual(await Promise.all(workers.map((w) => w.quit())), [0, 0, 0, 0]);
});

test('a producer that fails rejects every waiter in every process with its message', { skip }, async () => {
  const prefix = newPrefix();
  const workers = await startWorkers(3, { prefix, key: 'k', callers: 5 });
  const leader = await parkLeaderUntilFollowed(workers);
  leader.send({ type: 'fail', message: 'upstream said no' });
  const reports = await Promise.all(workers.map((w) => w.next('results')));
  assert.equal(await redis.client.text('GET', `${prefix}exec:k`), '1');
  for (const report of reports) {
    for (const r of report.results) assert.deepEqual([r.code, r.value], ['producer_error', 'upstream said no']);
  }
  await Promise.all(workers.map((w) => w.quit()));
});

const cppWorker = cppWorkerBinary();
const noCpp = skip || (cppWorker ? false : 'sf_worker is not built (cmake --build --preset default, or set SF_WORKER)');

// sf_worker's keys are "key-<i>"; both sides use the bytes as they are (raw).
test('a C++ leader wakes Node followers', { skip: noCpp }, async () => {
  const prefix = newPrefix();
  const cpp = new CppWorker(cppWorker, ['--redis', `127.0.0.1:${redis.port}`, '--prefix', prefix, '--park', '--timeout-ms', '60000']);
  cpp.send('go');
  await cpp.nextLine('leading key-0');
  const node = await startWorkers(2, { prefix, key: 'key-0', callers: 3, raw: true });
  for (const w of node) w.send({ type: 'go' });
  await Promise.all(node.map((w) => w.next('following')));
  cpp.send('finish from C++');
  assert.match(await cpp.nextLine('finished'), /^finished 1$/);
  for (const report of await Promise.all(node.map((w) => w.next('results')))) {
    for (const r of report.results) assert.deepEqual([r.code, r.value], ['ok', 'from C++']);
    assert.equal(report.stats.pubsubWakes, 1);
  }
  assert.equal(await redis.client.text('GET', `${prefix}exec:key-0`), '1');
  await Promise.all(node.map((w) => w.quit()));
  cpp.send('quit');
  assert.equal(await cpp.quit(), 0);
});

test('a Node leader wakes a C++ follower', { skip: noCpp }, async () => {
  const prefix = newPrefix();
  const [node] = await startWorkers(1, { prefix, key: 'key-0', callers: 1, raw: true });
  node.send({ type: 'go' });
  await node.next('leading');
  const cpp = new CppWorker(cppWorker, ['--redis', `127.0.0.1:${redis.port}`, '--prefix', prefix, '--callers', '2', '--timeout-ms', '60000', '--report-checks']);
  cpp.send('go');
  await cpp.nextLine('checks 2');
  node.send({ type: 'finish', value: 'from-Node' });
  const lines = [await cpp.nextLine('result 0 '), await cpp.nextLine('result 1 ')];
  const sources = lines.map((line) => {
    const [, , key, code, source, value] = line.split(' ');
    assert.deepEqual([key, code, value], ['key-0', 'ok', 'from-Node']);
    return source;
  });
  assert.deepEqual(sources.sort(), ['joined', 'pubsub']);
  assert.match(await cpp.nextLine('stats '), / leads=0 /);
  assert.equal(await cpp.quit(), 0);
  assert.equal((await node.next('results')).results[0].value, 'from-Node');
  await node.quit();
});
