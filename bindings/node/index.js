// singleflight for Node.js: fleet-wide request coalescing on Node's own loop.
//
// The native addon (src/addon.cc) runs the C++ library's Group on the loop of
// the thread that creates it; this file gives it Node's conventions:
// Promises, AbortSignal, an Error subclass with a `code`, options checked at
// construction, and a process that exits when nothing is pending.
'use strict';

const path = require('node:path');

function loadAddon() {
  const file = path.join(__dirname, 'build', 'Release', 'singleflight.node');
  try {
    return require(file);
  } catch (error) {
    if (error && error.code === 'MODULE_NOT_FOUND') {
      throw new Error(
        `singleflight: the native addon is not built (${file}); run \`npm ci && npm run build\` in ${__dirname}`,
      );
    }
    throw error;
  }
}
const { NativeGroup, parseRedisUrl: nativeParseRedisUrl } = loadAddon();

// The C++ status codes (include/singleflight/status.h), by name.
const codes = Object.freeze({
  PRODUCER_ERROR: 'producer_error',
  TIMEOUT: 'timeout',
  CANCELLED: 'cancelled',
  UNAVAILABLE: 'unavailable',
  INVALID_ARGUMENT: 'invalid_argument',
  TOO_LARGE: 'too_large',
  CLOSED: 'closed',
});

class SingleflightError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'SingleflightError';
    this.code = code;
    if (options && options.source !== undefined) this.source = options.source;
  }
}

const MAX_U32 = 0xffffffff;

function describe(value) {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function isBytes(value) {
  return value instanceof Uint8Array; // Buffers included
}

function checkInteger(name, value, max = MAX_U32) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`singleflight: ${name} must be an integer from 0 to ${max} (got ${value})`);
  }
  return value;
}

function checkPort(name, value) {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new RangeError(`singleflight: ${name} must be a port, an integer from 1 to 65535 (got ${value})`);
  }
  return value;
}

// A Redis URL -> the native connection fields, read by the library's own
// Options::FromUrl (C++ and Node accept exactly the same URLs):
// "redis://[[user]:password@]host[:port][/db]", "unix:///path[?db=N]",
// "host:port", "rediss://...?tls_ca=FILE&tls_ca_dir=DIR&tls_cert=FILE&
// tls_key=FILE&tls_server_name=NAME&tls_verify=0" (TLS: a `tls` object),
// "redis+sentinel://[[user]:password@]h1[:p1],h2[:p2]/master[/db]
// ?sentinel_user=U&sentinel_password=P" (a `sentinel` object; rediss+sentinel
// for TLS).
function parseRedisUrl(text) {
  if (typeof text !== 'string') throw new TypeError('singleflight: a Redis URL must be a string');
  const parsed = nativeParseRedisUrl(text);
  if (typeof parsed === 'string') throw new SingleflightError(codes.INVALID_ARGUMENT, `singleflight: ${parsed}`);
  return parsed;
}

const REDIS_TIMEOUTS = ['connectTimeoutMs', 'commandTimeoutMs', 'reconnectMinMs', 'reconnectMaxMs', 'livenessTimeoutMs'];
const REDIS_FIELDS = ['host', 'port', 'unixSocket', 'username', 'password', 'db', 'tls', 'sentinel', 'maxUnwrittenBytes', ...REDIS_TIMEOUTS];
const TLS_STRINGS = ['caFile', 'caDir', 'certFile', 'keyFile', 'serverName'];
const TLS_FIELDS = [...TLS_STRINGS, 'verifyPeer'];
const SENTINEL_FIELDS = ['sentinels', 'masterName', 'username', 'password'];
const NUMBER_OPTIONS = ['lockTtlMs', 'resultTtlMs', 'errorTtlMs', 'waitTimeoutMs', 'producerTimeoutMs', 'fallbackIntervalMs'];
const SIZE_OPTIONS = ['maxKeyBytes', 'maxValueBytes', 'maxInflightKeys', 'maxWaitersPerFlight'];
const L1_FIELDS = { maxEntries: 'l1MaxEntries', maxBytes: 'l1MaxBytes', ttlMs: 'l1TtlMs' };
const KNOWN = new Set(['redis', 'keyPrefix', 'l1', 'whenRedisDown', 'raw', ...NUMBER_OPTIONS, ...SIZE_OPTIONS]);

function checkFields(what, object, known) {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new TypeError(`singleflight: ${what} must be an object (got ${describe(object)})`);
  }
  for (const name of Object.keys(object)) {
    if (!known.includes(name)) throw new TypeError(`singleflight: unknown ${what} option "${name}"`);
  }
}

function copyStrings(what, from, names, out) {
  for (const name of names) {
    if (from[name] === undefined) continue;
    if (typeof from[name] !== 'string') throw new TypeError(`singleflight: ${what}.${name} must be a string (got ${describe(from[name])})`);
    out[name] = from[name];
  }
}

// redis.tls: true (the system's CAs, full verification), false/undefined
// (plaintext), or an object of TLS_FIELDS -> the object the addon reads (its
// presence turns TLS on).
function tlsOptions(tls) {
  if (tls === undefined || tls === false) return undefined;
  if (tls === true) return {};
  if (tls === null || typeof tls !== 'object' || Array.isArray(tls)) {
    throw new TypeError(`singleflight: redis.tls must be true, false or an object (got ${describe(tls)})`);
  }
  checkFields('redis.tls', tls, TLS_FIELDS);
  const out = {};
  copyStrings('redis.tls', tls, TLS_STRINGS, out);
  if (tls.verifyPeer !== undefined) {
    if (typeof tls.verifyPeer !== 'boolean') throw new TypeError(`singleflight: redis.tls.verifyPeer must be a boolean (got ${describe(tls.verifyPeer)})`);
    out.verifyPeer = tls.verifyPeer;
  }
  if ((out.certFile === undefined) !== (out.keyFile === undefined)) {
    throw new TypeError('singleflight: redis.tls.certFile and redis.tls.keyFile go together (a client certificate and its key)');
  }
  return out;
}

function sentinelOptions(sentinel) {
  if (sentinel === undefined) return undefined;
  checkFields('redis.sentinel', sentinel, SENTINEL_FIELDS);
  if (typeof sentinel.masterName !== 'string' || sentinel.masterName === '') {
    throw new TypeError(`singleflight: redis.sentinel.masterName must be a non-empty string (got ${describe(sentinel.masterName)})`);
  }
  if (!Array.isArray(sentinel.sentinels) || sentinel.sentinels.length === 0) {
    throw new TypeError('singleflight: redis.sentinel.sentinels must be a non-empty array of { host, port }');
  }
  const out = { masterName: sentinel.masterName };
  out.sentinels = sentinel.sentinels.map((address, i) => {
    const what = `redis.sentinel.sentinels[${i}]`;
    checkFields(what, address, ['host', 'port']);
    if (typeof address.host !== 'string' || address.host === '') {
      throw new TypeError(`singleflight: ${what}.host must be a non-empty string (got ${describe(address.host)})`);
    }
    return { host: address.host, port: address.port === undefined ? 26379 : checkPort(`${what}.port`, address.port) };
  });
  copyStrings('redis.sentinel', sentinel, ['username', 'password'], out);
  return out;
}

// The user's options -> the flat object NativeGroup reads (redis.tls and
// redis.sentinel stay nested). Types and ranges
// are checked here, so a typo or a wrong type throws at construction.
function nativeOptions(options) {
  if (options === undefined) options = {};
  if (options === null || typeof options !== 'object') throw new TypeError('singleflight: options must be an object');
  for (const name of Object.keys(options)) {
    if (!KNOWN.has(name)) throw new TypeError(`singleflight: unknown option "${name}"`);
  }
  const out = {};
  let redis = options.redis;
  if (typeof redis === 'string') redis = parseRedisUrl(redis);
  if (redis !== undefined && redis !== null) {
    if (typeof redis !== 'object') throw new TypeError('singleflight: redis must be a URL string or an object');
    for (const name of Object.keys(redis)) {
      if (!REDIS_FIELDS.includes(name)) throw new TypeError(`singleflight: unknown redis option "${name}"`);
    }
    copyStrings('redis', redis, ['host', 'unixSocket', 'username', 'password'], out);
    if (redis.port !== undefined) out.port = checkPort('redis.port', redis.port);
    if (redis.db !== undefined) out.db = checkInteger('redis.db', redis.db, 0x7fffffff);
    for (const name of REDIS_TIMEOUTS) {
      if (redis[name] !== undefined) out[name] = checkInteger(`redis.${name}`, redis[name]);
    }
    if (redis.maxUnwrittenBytes !== undefined) {
      out.maxUnwrittenBytes = checkInteger('redis.maxUnwrittenBytes', redis.maxUnwrittenBytes, Number.MAX_SAFE_INTEGER);
    }
    const tls = tlsOptions(redis.tls);
    if (tls) out.tls = tls;
    const sentinel = sentinelOptions(redis.sentinel);
    if (sentinel) out.sentinel = sentinel;
  }
  if (options.keyPrefix !== undefined) {
    if (typeof options.keyPrefix !== 'string') throw new TypeError('singleflight: keyPrefix must be a string');
    out.keyPrefix = options.keyPrefix;
  }
  for (const name of NUMBER_OPTIONS) {
    if (options[name] !== undefined) out[name] = checkInteger(name, options[name]);
  }
  for (const name of SIZE_OPTIONS) {
    if (options[name] !== undefined) out[name] = checkInteger(name, options[name], Number.MAX_SAFE_INTEGER);
  }
  if (options.l1 !== undefined) {
    const l1 = options.l1 === false ? { maxEntries: 0 } : options.l1;
    if (l1 === null || typeof l1 !== 'object') throw new TypeError('singleflight: l1 must be an object or false');
    for (const [name, field] of Object.entries(L1_FIELDS)) {
      if (l1[name] !== undefined) out[field] = checkInteger(`l1.${name}`, l1[name], name === 'ttlMs' ? MAX_U32 : Number.MAX_SAFE_INTEGER);
    }
    for (const name of Object.keys(l1)) {
      if (!(name in L1_FIELDS)) throw new TypeError(`singleflight: unknown l1 option "${name}"`);
    }
  }
  if (options.whenRedisDown !== undefined) {
    if (options.whenRedisDown !== 'localOnly' && options.whenRedisDown !== 'failFast') {
      throw new TypeError('singleflight: whenRedisDown must be "localOnly" or "failFast"');
    }
    out.whenRedisDown = options.whenRedisDown;
  }
  if (options.raw !== undefined) out.raw = Boolean(options.raw);
  return out;
}

function errorMessage(error) {
  if (error instanceof Error) return error.message;
  try {
    return String(error);
  } catch {
    return 'producer failed';
  }
}

const noop = () => {};

class Group {
  constructor(options) {
    const flat = nativeOptions(options);
    this._native = new NativeGroup(flat);
    this._outstanding = 0; // calls waiting + producers running
    this._keepAlive = null; // a ref'd timer while _outstanding > 0
    this._productions = new Map(); // running producers: AbortController -> finish
    this._closing = null;
  }

  // Resolves to the shared value: a string or a Buffer, as the leader's
  // producer returned it (or always a Buffer with { raw: true }).
  async do(key, fn, options) {
    return (await this.doWithInfo(key, fn, options)).value;
  }

  // Resolves to { value, source, shared, degraded }: source is where the
  // value came from ("led", "joined", "pubsub", "redis", "l1", "fallback").
  doWithInfo(key, fn, options = {}) {
    return new Promise((resolve, reject) => {
      if (typeof key !== 'string' && !isBytes(key)) {
        throw new TypeError(`singleflight: key must be a string or a Buffer (got ${describe(key)})`);
      }
      if (typeof fn !== 'function') throw new TypeError('singleflight: the producer must be a function');
      if (options === null || typeof options !== 'object') throw new TypeError('singleflight: options must be an object');
      const timeoutMs = options.timeoutMs === undefined ? 0 : checkInteger('timeoutMs', options.timeoutMs);
      const { signal } = options;
      if (signal !== undefined && !(signal instanceof AbortSignal)) {
        throw new TypeError('singleflight: signal must be an AbortSignal');
      }
      if (signal && signal.aborted) {
        reject(new SingleflightError(codes.CANCELLED, 'singleflight: aborted before the call', { cause: signal.reason }));
        return;
      }
      let onAbort = null;
      const onResult = (code, message, value, source, shared, degraded) => {
        if (signal && onAbort) signal.removeEventListener('abort', onAbort);
        this._release();
        if (code === 'ok') {
          resolve({ value, source, shared, degraded });
        } else {
          const cause = code === codes.CANCELLED && signal && signal.aborted ? signal.reason : undefined;
          reject(new SingleflightError(code, message, { source, cause }));
        }
      };
      const answer = this._native.do(key, this._producer(key, fn), timeoutMs, onResult);
      if (typeof answer !== 'number') {
        reject(new SingleflightError(answer.code, answer.message));
        return;
      }
      this._retain();
      if (signal) {
        onAbort = () => this._native.cancel(answer);
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  // fn's signature; concurrent calls whose key(...args) is equal share one
  // execution fleet-wide. options.key is required: only the caller knows
  // which arguments make two calls the same.
  wrap(fn, options) {
    if (typeof fn !== 'function') throw new TypeError('singleflight: wrap(fn, options): fn must be a function');
    if (!options || typeof options.key !== 'function') {
      throw new TypeError('singleflight: wrap(fn, { key: (...args) => string }) needs a key function');
    }
    const { key, timeoutMs } = options;
    const group = this;
    return function wrapped(...args) {
      return group.do(key(...args), () => fn.apply(this, args), { timeoutMs });
    };
  }

  // Drops the key in this process, in Redis and in every process's L1.
  forget(key) {
    if (typeof key !== 'string' && !isBytes(key)) throw new TypeError('singleflight: key must be a string or a Buffer');
    this._native.forget(key);
  }

  stats() {
    return this._native.stats();
  }

  // Pending calls reject with code "closed", running producers' signals
  // abort, the locks this process holds are released; resolves when every
  // handle of the group is closed. Idempotent.
  close() {
    if (!this._closing) {
      // A producer that never settles must not keep the process alive once
      // its group is closed (its late outcome would be ignored anyway).
      // (Finished after the native close, which ignores their outcome, so that
      // their callers are answered "closed".)
      const running = [...this._productions];
      for (const [controller] of running) {
        controller.abort(new SingleflightError(codes.CLOSED, 'singleflight: the group was closed'));
      }
      this._retain();
      this._closing = new Promise((resolve) => {
        this._native.close(() => {
          this._release();
          resolve();
        });
      });
      for (const [, finish] of running) finish('singleflight: the group was closed');
    }
    return this._closing;
  }

  // The native producer: runs fn once for this process's flight of `key`, and
  // reports its outcome through settle (a message for a failure).
  _producer(key, fn) {
    return (_keyBytes, settle) => {
      const controller = new AbortController();
      this._retain();
      // The production stops keeping the process alive when it settles or
      // when the library gives it up (producerTimeoutMs, close): a producer
      // that never settles must not hold the process forever. A late outcome
      // still reaches the library, which ignores it.
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this._productions.delete(controller);
        this._release();
      };
      let finished = false;
      const finish = (message, value) => {
        if (finished) return;
        finished = true;
        release();
        if (message === null && !(typeof value === 'string' || isBytes(value))) {
          message = `producer returned ${describe(value)}; return a string or a Buffer`;
        }
        settle(message, value);
      };
      this._productions.set(controller, finish);
      // Returned to the addon: run if the library gives the production up
      // (Done::OnAbandon), before its callers are answered.
      const abandoned = () => {
        if (!controller.signal.aborted) {
          controller.abort(new SingleflightError(codes.TIMEOUT, 'singleflight: the producer ran past producerTimeoutMs'));
        }
        release();
      };
      let out;
      try {
        out = fn({ key, signal: controller.signal });
      } catch (error) {
        finish(errorMessage(error));
        return abandoned;
      }
      if (out !== null && typeof out === 'object' && typeof out.then === 'function') {
        out.then((value) => finish(null, value), (error) => finish(errorMessage(error)));
      } else {
        finish(null, out);
      }
      return abandoned;
    };
  }

  _retain() {
    if (this._outstanding++ === 0) this._keepAlive = setInterval(noop, 0x7fffffff);
  }

  _release() {
    if (--this._outstanding === 0) {
      clearInterval(this._keepAlive);
      this._keepAlive = null;
    }
  }
}

module.exports = { Group, SingleflightError, codes, parseRedisUrl };
