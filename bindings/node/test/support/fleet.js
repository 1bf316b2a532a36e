// Real processes for the Node tests: forked Node workers (worker.js) with an
// IPC channel, and the C++ sf_worker for interop. Every message a process
// sends is queued, so a test awaits the next one of a type in order.
'use strict';
const { fork, spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const { Worker } = require('node:worker_threads');

class Inbox {
  constructor() {
    this._items = [];
    this._waiters = [];
    this._closed = null;
  }

  push(item) {
    const index = this._waiters.findIndex((w) => w.match(item));
    if (index >= 0) this._waiters.splice(index, 1)[0].resolve(item);
    else this._items.push(item);
  }

  close(reason) {
    this._closed = reason;
    for (const w of this._waiters.splice(0)) w.reject(new Error(reason));
  }

  next(match) {
    const index = this._items.findIndex(match);
    if (index >= 0) return Promise.resolve(this._items.splice(index, 1)[0]);
    if (this._closed) return Promise.reject(new Error(this._closed));
    return new Promise((resolve, reject) => this._waiters.push({ match, resolve, reject }));
  }
}

function whenExited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

// worker.js as a forked process or (thread: true) as a worker_thread of this
// process; the same messages either way.
class NodeWorker {
  constructor(config, { thread = false } = {}) {
    const file = path.join(__dirname, 'worker.js');
    this.thread = thread;
    this.child = thread
      ? new Worker(file, { workerData: config })
      : fork(file, [JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.inbox = new Inbox();
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.inbox.close(`worker exited (${code ?? signal})`);
        resolve(code);
      });
    });
    this.child.on('message', (message) => this.inbox.push(message));
    if (thread) this.child.on('error', (error) => this.inbox.close(`worker thread threw: ${error.stack}`));
  }

  next(type) {
    return this.inbox.next((m) => m.type === type);
  }

  send(message) {
    if (this.thread) this.child.postMessage(message);
    else this.child.send(message);
  }

  // Resolves to the exit code once the process or thread has ended.
  quit() {
    if (this.thread || this.child.connected) this.send({ type: 'quit' });
    return this.exited;
  }
}

// Starts `count` Node workers with `config` (worker.js) and waits until they
// can take "go".
async function startNodeWorkers(count, config) {
  const workers = Array.from({ length: count }, () => new NodeWorker(config));
  await Promise.all(workers.map((w) => w.next('ready')));
  return workers;
}

// Every worker calls; the first to lead stays parked until the others follow
// it (subscribed to the flight's channel and re-checked): returns the leader.
async function parkLeaderUntilFollowed(workers) {
  const leading = Promise.race(workers.map((w) => w.next('leading').then(() => w)));
  for (const w of workers) w.send({ type: 'go' });
  const leader = await leading;
  await Promise.all(workers.filter((w) => w !== leader).map((w) => w.next('following')));
  return leader;
}

// The C++ test worker: lines on stdout, commands on stdin (see sf_worker.cpp).
class CppWorker {
  constructor(binary, args) {
    this.child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.inbox = new Inbox();
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => this.inbox.push(line));
    this.child.on('exit', (code, signal) => this.inbox.close(`sf_worker exited (${code ?? signal})`));
  }

  nextLine(prefix) {
    return this.inbox.next((line) => line.startsWith(prefix));
  }

  send(line) {
    this.child.stdin.write(`${line}\n`);
  }

  async quit() {
    this.child.stdin.end();
    return whenExited(this.child);
  }
}

// sf_worker from the CMake build: $SF_WORKER (set by ctest), else the
// default preset's build directory; null when neither exists.
function cppWorkerBinary() {
  const fs = require('node:fs');
  const candidates = [process.env.SF_WORKER, path.join(__dirname, '..', '..', '..', '..', 'build', 'test', 'sf_worker')];
  return candidates.find((file) => file && fs.existsSync(file)) || null;
}

module.exports = { NodeWorker, CppWorker, cppWorkerBinary, startNodeWorkers, parkLeaderUntilFollowed };
