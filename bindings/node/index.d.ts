// Types for the singleflight Node package (index.js).

/** The C++ status codes (include/singleflight/status.h), by name. */
export type ErrorCode =
  | 'producer_error'
  | 'timeout'
  | 'cancelled'
  | 'unavailable'
  | 'invalid_argument'
  | 'too_large'
  | 'closed';

export const codes: Readonly<{
  PRODUCER_ERROR: 'producer_error';
  TIMEOUT: 'timeout';
  CANCELLED: 'cancelled';
  UNAVAILABLE: 'unavailable';
  INVALID_ARGUMENT: 'invalid_argument';
  TOO_LARGE: 'too_large';
  CLOSED: 'closed';
}>;

/** Where a caller's value came from. */
export type Source = 'led' | 'joined' | 'pubsub' | 'redis' | 'l1' | 'fallback' | 'none';

export class SingleflightError extends Error {
  readonly name: 'SingleflightError';
  readonly code: ErrorCode;
  /** How far the call got before it failed, when known. */
  readonly source?: Source;
}

/** A value as the producer returns it: a string or bytes. */
export type Value = string | Buffer;

/** TLS to Redis (`rediss://`), with the OpenSSL inside `node`. The server's chain and name are verified by default. */
export interface TlsOptions {
  /** Trusted CAs, a PEM bundle and/or a hashed directory; both omitted: the system's default store. */
  caFile?: string;
  caDir?: string;
  /** A client certificate (PEM chain) and its key, for mutual TLS; both or neither. */
  certFile?: string;
  keyFile?: string;
  /** The name sent as SNI and checked against the certificate; omitted: the host. */
  serverName?: string;
  /** `false` skips every check of the server's certificate: for tests only (a warning is printed once per process). */
  verifyPeer?: boolean;
}

/** Redis behind Sentinel: the master is asked of the sentinels, in order, on every connect; a failover is followed. */
export interface SentinelOptions {
  /** `port` defaults to 26379. */
  sentinels: Array<{ host: string; port?: number }>;
  /** The name the sentinels monitor the master under. */
  masterName: string;
  /** AUTH on the sentinels (may differ from the master's `username`/`password`). */
  username?: string;
  password?: string;
}

export interface RedisOptions {
  host?: string;
  port?: number;
  unixSocket?: string;
  username?: string;
  password?: string;
  db?: number;
  /** `true`: TLS with the system's CAs; an object: TLS with these settings. The sentinels are reached over TLS too. */
  tls?: boolean | TlsOptions;
  /** When given, `host` and `port` are ignored: the sentinels say where the master is. */
  sentinel?: SentinelOptions;
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
  /** A connection silent this long while a reply is awaited is rebuilt (0: 3 × `commandTimeoutMs`). */
  livenessTimeoutMs?: number;
  /** Bytes of commands not yet written past which a command fails at once with `unavailable`. */
  maxUnwrittenBytes?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
}

/** What `parseRedisUrl` returns: the fields the URL sets (`tls` is an object when TLS is on). */
export interface ParsedRedisUrl extends RedisOptions {
  tls?: TlsOptions;
}

export interface GroupOptions {
  /**
   * `redis://[user[:password]@]host[:port][/db]`, `unix:///path?db=N`, `host:port`,
   * `rediss://…?tls_ca=&tls_ca_dir=&tls_cert=&tls_key=&tls_server_name=&tls_verify=0`,
   * `redis+sentinel://[user[:password]@]h1[:p1],h2[:p2]/master[/db]?sentinel_user=&sentinel_password=`
   * (`rediss+sentinel://` for TLS), or fields. Omitted: local only.
   */
  redis?: string | RedisOptions;
  keyPrefix?: string;
  lockTtlMs?: number;
  resultTtlMs?: number;
  errorTtlMs?: number;
  /** A caller's deadline when `do` gets no `timeoutMs`. */
  waitTimeoutMs?: number;
  /** How long a producer may run; then `ctx.signal` aborts and its flight fails with `timeout`. */
  producerTimeoutMs?: number;
  fallbackIntervalMs?: number;
  maxKeyBytes?: number;
  maxValueBytes?: number;
  maxInflightKeys?: number;
  maxWaitersPerFlight?: number;
  /** The in-process cache in front of Redis; `false` turns it off. */
  l1?: false | { maxEntries?: number; maxBytes?: number; ttlMs?: number };
  /** When Redis is unreachable: run the producer per process (`localOnly`, the default) or fail (`failFast`). */
  whenRedisDown?: 'localOnly' | 'failFast';
  /** Store the bytes as they are and always return a Buffer (for keys shared with C++ `Group::Do`). */
  raw?: boolean;
}

export interface ProducerContext {
  readonly key: string | Buffer;
  /** Aborts when the group closes or the producer runs past `producerTimeoutMs`. */
  readonly signal: AbortSignal;
}

export type Producer<T extends Value = Value> = (ctx: ProducerContext) => T | Promise<T>;

export interface CallOptions {
  /** This caller's deadline; 0 or omitted: the group's `waitTimeoutMs`. */
  timeoutMs?: number;
  /** Cancels this caller's wait (code `cancelled`); the flight goes on for the others. */
  signal?: AbortSignal;
}

export interface Outcome<T extends Value = Value> {
  value: T;
  source: Source;
  /** Whether the value was shared with another caller (in this or another process). */
  shared: boolean;
  /** The flight ran local-only because Redis was unreachable. */
  degraded: boolean;
}

/** Counters since the group was created (camelCased `singleflight::Stats`). */
export interface Stats {
  calls: number; rejected: number; l1Hits: number; joins: number; redisHits: number;
  leads: number; pubsubWakes: number; fallbackChecks: number; fallbackHits: number;
  takeovers: number; timeouts: number; cancels: number; producerErrors: number;
  producerTimeouts: number; doneIgnored: number; tooLarge: number; malformedDropped: number;
  reconnects: number; degradedCalls: number; redisErrors: number; checks: number;
  completionRetries: number; invalidations: number; leasesLost: number; leasesReleased: number;
  leasesAbandoned: number; foreignDropped: number; unknownOutcomes: number;
  errorRepliesRetryable: number; errorRepliesFatal: number; undecodableResults: number;
  subscriberReconnects: number; subscriberErrors: number; inflight: number;
}

export class Group {
  constructor(options?: GroupOptions);
  /** The shared value: the type the leader's producer returned (a Buffer with `raw`). */
  do<T extends Value = Value>(key: string | Buffer, fn: Producer<T>, options?: CallOptions): Promise<T>;
  doWithInfo<T extends Value = Value>(key: string | Buffer, fn: Producer<T>, options?: CallOptions): Promise<Outcome<T>>;
  /** `fn`'s signature; concurrent calls with an equal `key(...args)` share one execution fleet-wide. */
  wrap<A extends unknown[], T extends Value>(
    fn: (...args: A) => T | Promise<T>,
    options: { key: (...args: A) => string; timeoutMs?: number },
  ): (...args: A) => Promise<T>;
  /** Drops the key in this process, in Redis and in every process's L1. */
  forget(key: string | Buffer): void;
  stats(): Stats;
  /** Rejects pending calls with `closed`, aborts running producers, releases held locks. Idempotent. */
  close(): Promise<void>;
}

export function parseRedisUrl(url: string): ParsedRedisUrl;
