// fetch.js: the C++ examples/fetch_service in Node. An HTTP service whose
// upstream fetches go through a singleflight Group, so concurrent requests
// for one URL, on any worker of any instance sharing the Redis server, cause
// one upstream fetch.
//
//   node examples/fetch.js [--listen HOST:PORT=127.0.0.1:8080 | --port N]
//       [--redis HOST:PORT | --redis-url URL]  (else $SINGLEFLIGHT_REDIS, else in-process only)
//       [--workers N=4] [--timeout-ms 10000] [--upstream-timeout-ms 10000]
//       [--result-ttl-ms 10000] [--lock-ttl-ms 10000] [--prefix sf:fetch:] [--keep-going]
//
//   GET /fetch?url=U  200 {"url":U,"data":<upstream body>,"source":...,"shared":...}
//                     400 bad or missing url, 502 upstream failed, 504 timed out
//   GET /stats        the worker's group counters as JSON; GET /metrics: Prometheus text
//
// The primary forks N node:cluster workers, each with its own Group, prints
// "listening HOST:PORT workers N" once all of them listen, forwards
// SIGTERM/SIGINT (workers answer what is in flight, close their group and
// exit 0) and exits 0 when all exited 0. A worker dying on its own stops the
// service, unless --keep-going. Unlike the C++ example, whose upstream is
// simulated, this one really fetches U, so U must be an http(s) URL; a real
// service would also restrict which hosts it fetches.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { Group, SingleflightError, codes, parseRedisUrl } = require('..');

const MAX_URL_BYTES = 8192; // as the C++ service: 414 past it, and the key limit
const DRAIN_TIMEOUT_MS = 10000; // after a stop, busy connections are dropped past this

const USAGE = `usage: node examples/fetch.js [--listen HOST:PORT=127.0.0.1:8080 | --port N]
       [--redis HOST:PORT | --redis-url URL] [--workers N=4] [--timeout-ms 10000]
       [--upstream-timeout-ms 10000] [--result-ttl-ms 10000] [--lock-ttl-ms 10000]
       [--prefix sf:fetch:] [--keep-going]`;

const INTEGER_FLAGS = {
  '--port': ['port', 0, 65535],
  '--workers': ['workers', 1, 64],
  '--timeout-ms': ['timeoutMs', 1, 600000],
  '--upstream-timeout-ms': ['upstreamTimeoutMs', 1, 600000],
  '--result-ttl-ms': ['resultTtlMs', 1, 86400000],
  '--lock-ttl-ms': ['lockTtlMs', 100, 86400000],
};

// argv -> config, or a message saying what is wrong. Workers parse the same
// argv (cluster.fork re-runs this script with it), so nothing is passed on.
function parseArgs(argv) {
  const config = {
    host: '127.0.0.1', port: 8080, workers: 4, timeoutMs: 10000, upstreamTimeoutMs: 10000,
    resultTtlMs: 10000, lockTtlMs: 10000, prefix: 'sf:fetch:', keepGoing: false,
    redis: process.env.SINGLEFLIGHT_REDIS || undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--keep-going') {
      config.keepGoing = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) return `${flag} needs a value`;
    if (flag in INTEGER_FLAGS) {
      const [name, min, max] = INTEGER_FLAGS[flag];
      if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
        return `${flag} must be an integer from ${min} to ${max}`;
      }
      config[name] = Number(value);
    } else if (flag === '--listen') {
      const match = /^(.+):(\d+)$/.exec(value);
      if (!match || Number(match[2]) > 65535) return `--listen wants HOST:PORT, got ${value}`;
      [config.host, config.port] = [match[1].replace(/^\[|\]$/g, ''), Number(match[2])];
    } else if (flag === '--redis' || flag === '--redis-url') {
      config.redis = value;
    } else if (flag === '--prefix') {
      config.prefix = value;
    } else {
      return `unknown flag ${flag}`;
    }
  }
  if (config.redis !== undefined) {
    try {
      parseRedisUrl(config.redis); // a typo fails here, once, not in every worker
    } catch (error) {
      return error.message;
    }
  }
  return config;
}

// --- primary -----------------------------------------------------------------

function runPrimary(config) {
  const listening = new Set();
  let stopping = false;
  let failed = false;
  const alive = () => Object.keys(cluster.workers).length;
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  };
  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    // With port 0 the first worker's bind picks the port and cluster hands
    // the same one to the others, so any worker's address is the service's.
    if (listening.size === config.workers) {
      console.log(`listening ${config.host}:${address.port} workers ${config.workers}`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (code !== 0 || signal) {
      console.error(`fetch.js: worker ${worker.process.pid} exited with status ${code} signal ${signal}`);
      // With --keep-going a death before the stop is tolerated while another
      // worker still serves; nothing is respawned (a real supervisor would).
      if (stopping || !config.keepGoing || alive() === 0) failed = true;
    }
    if (!stopping && !(config.keepGoing && alive() > 0)) stop();
    if (alive() === 0) process.exit(failed ? 1 : 0);
  });
  // Ctrl-C also reaches the workers themselves (one process group); their
  // stop is idempotent, so forwarding it as well does no harm.
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < config.workers; i++) cluster.fork();
}

// --- worker ------------------------------------------------------------------

let stopping = false; // responses then say "Connection: close"

function answer(res, status, body, contentType = 'application/json') {
  const headers = { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) };
  if (stopping) headers.Connection = 'close';
  res.writeHead(status, headers).end(body);
}

const errorJson = (message) => `${JSON.stringify({ error: message })}\n`;

// What a failed call means to an HTTP client (as the C++ service's HttpCode).
function httpStatus(error) {
  if (!(error instanceof SingleflightError)) return 500;
  switch (error.code) {
    case codes.INVALID_ARGUMENT: return 400;
    case codes.TIMEOUT: return 504;
    case codes.PRODUCER_ERROR:
    case codes.TOO_LARGE: return 502;
    default: return 503;
  }
}

// The value of `name` in a query string; null when it is missing or its
// percent-encoding is malformed (URLSearchParams would pass "%zz" through).
function queryParam(search, name) {
  for (const pair of search.replace(/^\?/, '').split('&')) {
    const eq = pair.indexOf('=');
    if (eq < 0 || pair.slice(0, eq) !== name) continue;
    try {
      return decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' '));
    } catch {
      return null;
    }
  }
  return null;
}

function isHttpUrl(text) {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

// The producer: runs in one process of the fleet per flight of `url`. Any
// failure rejects every waiter, everywhere, with its message.
async function fetchUpstream(url, signal) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    // undici says only "fetch failed"; the reason (ECONNREFUSED, ...) is the cause.
    throw new Error(`upstream fetch failed: ${error.cause ? error.cause.message : error.message}`);
  }
  const body = await response.text();
  if (!response.ok) throw new Error(`upstream answered ${response.status} ${response.statusText}`);
  return body;
}

async function handleFetch(res, group, config, url) {
  // A client that hangs up stops only its own wait; the flight goes on.
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  try {
    const { value, source, shared } = await group.doWithInfo(
      url, ({ signal }) => fetchUpstream(url, signal), { timeoutMs: config.timeoutMs, signal: gone.signal });
    answer(res, 200, `${JSON.stringify({ url, data: value, source, shared })}\n`);
  } catch (error) {
    if (gone.signal.aborted) return;
    const message = error instanceof SingleflightError ? `${error.code}: ${error.message}` : String(error);
    answer(res, httpStatus(error), errorJson(message));
  }
}

function metrics(stats) {
  const lines = [];
  for (const [name, value] of Object.entries(stats)) {
    const gauge = name === 'inflight';
    const metric = `singleflight_${name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}${gauge ? '' : '_total'}`;
    lines.push(`# TYPE ${metric} ${gauge ? 'gauge' : 'counter'}`, `${metric}{pid="${process.pid}"} ${value}`);
  }
  return `${lines.join('\n')}\n`;
}

function route(req, res, group, config) {
  if (req.url.length > MAX_URL_BYTES) return answer(res, 414, errorJson('request target too long'));
  let target;
  try {
    target = new URL(req.url, 'http://service.invalid');
  } catch {
    return answer(res, 400, errorJson('malformed request target'));
  }
  if (req.method !== 'GET') return answer(res, 405, errorJson('only GET is supported'));
  switch (target.pathname) {
    case '/fetch': {
      const url = queryParam(target.search, 'url');
      if (!url) return answer(res, 400, errorJson('missing or malformed url parameter'));
      if (!isHttpUrl(url)) return answer(res, 400, errorJson('url must be an absolute http or https URL'));
      return handleFetch(res, group, config, url);
    }
    case '/stats':
      return answer(res, 200, `${JSON.stringify({ pid: process.pid, ...group.stats() })}\n`);
    case '/metrics':
      return answer(res, 200, metrics(group.stats()), 'text/plain; version=0.0.4');
    default:
      return answer(res, 404, errorJson('no such path; try /fetch?url=...'));
  }
}

// Requests llhttp cannot parse get the service's JSON 400, not Node's bare one.
function onClientError(error, socket) {
  if (error.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
  const body = errorJson(`malformed request: ${error.code}`);
  socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n` +
             `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function runWorker(config) {
  const group = new Group({
    redis: config.redis,
    keyPrefix: config.prefix,
    resultTtlMs: config.resultTtlMs,
    lockTtlMs: config.lockTtlMs,
    producerTimeoutMs: config.upstreamTimeoutMs, // aborts ctx.signal, and so the fetch
    maxKeyBytes: MAX_URL_BYTES,
  });
  const server = http.createServer((req, res) => route(req, res, group, config));
  server.on('clientError', onClientError);
  server.on('error', (error) => {
    console.error(`fetch.js: listen on ${config.host}:${config.port}: ${error.message}`);
    process.exit(1);
  });
  // Graceful: no new connections, idle ones closed now, busy ones after their
  // response; then the group (its locks released) and the process.
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.close(() => group.close().then(() => process.exit(0)));
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), DRAIN_TIMEOUT_MS).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  server.listen(config.port, config.host);
}

const config = parseArgs(process.argv.slice(2));
if (typeof config === 'string') {
  console.error(`fetch.js: ${config}\n${USAGE}`);
  process.exit(2);
}
if (cluster.isPrimary) runPrimary(config);
else runWorker(config);
