// Side by side: the same burst as sf_demo (P processes x C concurrent callers
// over K keys, a producer of W ms that counts its executions in Redis) run
// with this package, with cache-manager on a Redis store, and with redlock
// lock-then-poll, all against one private redis-server. Prints one JSON line
// per implementation, then a table.
//
//   node bench/side_by_side.js [--processes 4] [--callers 25] [--keys 3]
//       [--work-ms 200] [--rounds 3] [--poll-ms 50] [--hit-calls 200000]
//       [--impls singleflight,cache-manager,redlock]
'use strict';

const { fork } = require('node:child_process');
const path = require('node:path');
const { startRedis, redisServerMissing } = require('../test/support/redis');

const DEFAULTS = {
  processes: 4, callers: 25, keys: 3, workMs: 200, rounds: 3, pollMs: 50, hitCalls: 200000,
  impls: 'singleflight,cache-manager,redlock',
};
// Long enough that no result or lock expires within a round, so every
// execution past the first is the implementation's, not a refill.
const TTL_MS = 30000;

function parseArgs(argv) {
  const config = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    const value = argv[i + 1];
    if (!(name in DEFAULTS) || value === undefined) throw new Error(`bad flag ${argv[i]}; see the header of ${__filename}`);
    config[name] = name === 'impls' ? value : Number(value);
    if (name !== 'impls' && !(Number.isInteger(config[name]) && config[name] > 0)) throw new Error(`${argv[i]} must be a positive integer`);
  }
  config.impls = config.impls.split(',');
  return config;
}

// A forked worker.js whose messages are awaited by type, in order.
class Worker {
  constructor(config) {
    this.child = fork(path.join(__dirname, 'worker.js'), [JSON.stringify(config)]);
    this.queue = [];
    this.waiting = [];
    this.child.on('message', (m) => this._push(m));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => {
      for (const w of this.waiting.splice(0)) w.reject(new Error(`bench worker exited (${code})`));
      resolve(code);
    }));
  }

  _push(message) {
    const at = this.waiting.findIndex((w) => w.type === message.type);
    if (at >= 0) this.waiting.splice(at, 1)[0].resolve(message);
    else this.queue.push(message);
  }

  next(type) {
    const at = this.queue.findIndex((m) => m.type === type);
    if (at >= 0) return Promise.resolve(this.queue.splice(at, 1)[0]);
    return new Promise((resolve, reject) => this.waiting.push({ type, resolve, reject }));
  }

  send(message) { this.child.send(message); }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// Redis's own count of the commands it ran since CONFIG RESETSTAT, by name
// (the bench's own INFO and CONFIG left out).
async function commandCounts(redis) {
  const counts = {};
  for (const [, name, calls] of (await redis.client.text('INFO', 'commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (!name.startsWith('config')) counts[name] = Number(calls);
  }
  return counts;
}

// One implementation: its workers, R rounds, then the hit loop in worker 0.
async function runImpl(impl, config, redis) {
  const prefix = `bench:${process.pid}:${impl}:`;
  const workers = Array.from({ length: config.processes }, (_, index) => new Worker({
    impl, index, prefix, redisUrl: redis.url, redisPort: redis.port, callers: config.callers, keys: config.keys,
    workMs: config.workMs, pollMs: config.pollMs, resultTtlMs: TTL_MS, lockTtlMs: TTL_MS,
  }));
  await Promise.all(workers.map((w) => w.next('ready')));
  const rounds = [];
  await redis.client.command('CONFIG', 'RESETSTAT');
  for (let r = 0; r < config.rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (const w of workers) w.send({ type: 'go', round: r, t0: String(t0) });
    const results = (await Promise.all(workers.map((w) => w.next('results')))).flatMap((m) => m.results);
    rounds.push({ results, wallMs: Number(process.hrtime.bigint() - t0) / 1e6 });
  }
  const commands = await commandCounts(redis);
  for (const [r, round] of rounds.entries()) {
    round.executions = [];
    for (let k = 0; k < config.keys; k++) {
      round.executions.push(Number(await redis.client.text('GET', `${prefix}exec:r${r}:key-${k}`)));
    }
  }
  // A Redis round trip per call is slower by orders of magnitude: fewer calls.
  const hitCalls = impl === 'redlock' ? Math.ceil(config.hitCalls / 20) : config.hitCalls;
  workers[0].send({ type: 'hit', calls: hitCalls });
  const hit = await workers[0].next('hit');
  for (const w of workers) w.send({ type: 'quit' });
  const codes = await Promise.all(workers.map((w) => w.exited));
  if (codes.some((c) => c !== 0)) throw new Error(`${impl}: a worker exited with ${codes}`);
  return summarize(impl, config, rounds, commands, { ...hit, calls: hitCalls });
}

function summarize(impl, config, rounds, commands, hit) {
  const all = rounds.flatMap((r) => r.results);
  const latencies = all.map((r) => r.latencyMs).sort((a, b) => a - b);
  const executions = rounds.map((r) => r.executions);
  const flat = executions.flat();
  const sources = {};
  for (const r of all) if (r.source) sources[r.source] = (sources[r.source] ?? 0) + 1;
  const values = new Map(); // round:key -> distinct values seen by its callers
  for (const [i, r] of rounds.entries()) {
    for (const x of r.results) {
      if (x.error) continue;
      const id = `${i}:${x.key}`;
      if (!values.has(id)) values.set(id, new Set());
      values.get(id).add(x.value);
    }
  }
  const round1 = (x) => Math.round(x * 10) / 10;
  return {
    impl,
    shape: { processes: config.processes, callers: config.callers, keys: config.keys, workMs: config.workMs,
             rounds: config.rounds, ...(impl === 'redlock' ? { pollMs: config.pollMs } : {}) },
    calls: all.length,
    errors: all.filter((r) => r.error).length,
    firstError: (all.find((r) => r.error) || {}).error,
    executionsPerKey: executions,
    executionsMean: round1(flat.reduce((a, b) => a + b, 0) / flat.length),
    executionsMax: Math.max(...flat),
    valuesPerKeyMax: Math.max(...[...values.values()].map((s) => s.size)),
    latencyMs: { p50: round1(percentile(latencies, 50)), p99: round1(percentile(latencies, 99)),
                 max: round1(latencies[latencies.length - 1]) },
    wallMs: rounds.map((r) => round1(r.wallMs)),
    redisCommandsPerRound: Math.round(Object.values(commands).reduce((a, b) => a + b, 0) / rounds.length),
    redisCommands: commands,
    sources: Object.keys(sources).length ? sources : undefined,
    hit: { calls: hit.calls, nsPerCall: Math.round(hit.nsPerCall), executions: hit.executions,
           setImmediateNs: Math.round(hit.setImmediateNs) },
  };
}

function table(summaries) {
  const rows = [['impl', 'exec/key mean (max)', 'values/key', 'p50 ms', 'p99 ms', 'max ms', 'wall ms (median)',
                 'redis cmds/round', 'hit ns/call', 'setImmediate ns', 'errors']];
  for (const s of summaries) {
    const walls = [...s.wallMs].sort((a, b) => a - b);
    rows.push([s.impl, `${s.executionsMean} (${s.executionsMax})`, String(s.valuesPerKeyMax), String(s.latencyMs.p50),
               String(s.latencyMs.p99), String(s.latencyMs.max), String(walls[Math.floor(walls.length / 2)]),
               String(s.redisCommandsPerRound), String(s.hit.nsPerCall), String(s.hit.setImmediateNs), String(s.errors)]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

async function main() {
  const config = parseArgs(process.argv.slice(2));
  const missing = redisServerMissing();
  if (missing) throw new Error(missing);
  const redis = await startRedis();
  try {
    const summaries = [];
    for (const impl of config.impls) {
      const summary = await runImpl(impl, config, redis);
      console.log(JSON.stringify(summary));
      summaries.push(summary);
    }
    console.log(`\n${table(summaries)}`);
  } finally {
    await redis.stop();
  }
}

main().catch((error) => {
  console.error(`side_by_side: ${error.message}`);
  process.exitCode = 1;
});
