import { ConfigError, type SerializationName, type SerializerOptions } from '@qe/core';
import type { ClusterOptions, RedisOptions } from 'ioredis';

/** Spec 000's `RedisConfig`, plus what production use needs. */
export interface RedisTransportOptions {
  /** `streams` (default): at-least-once, groups, history. `pubsub`: at-most-once, lowest latency. Used by `createRedisTransport`. */
  mode?: 'streams' | 'pubsub';
  /** `redis://[user:password@]host:port/db` or `rediss://` for TLS. Overrides host/port/db/password. */
  url?: string;
  host?: string;
  port?: number;
  db?: number;
  username?: string;
  password?: string;
  /** Prefix of every key. Default `qe`. */
  keyPrefix?: string;
  /** Retention in seconds: entries older than this are trimmed (MINID). Default: none (see `maxLen`). */
  ttl?: number;
  /** Retention by length per stream (approximate, MAXLEN ~). Default 100,000. */
  maxLen?: number;
  /**
   * Entries beyond `maxLen` (or older than `ttl`) a stream keeps while some
   * consumer group has not read them yet, so a slow or stopped group does not
   * lose events to trimming. Past `maxLen + retainUnread` entries the oldest are
   * trimmed anyway and counted (`stats().trimmedUnread`, health degraded).
   * Default: `maxLen`.
   */
  retainUnread?: number;
  /** Codec for frames written; any codec is read. Default `json`. */
  serialization?: SerializationName | SerializerOptions;
  /** TLS options (also implied by `rediss://`). */
  tls?: RedisOptions['tls'];
  /** Redis Sentinel: the sentinels and the name of the master they watch. When set, host/port are ignored. */
  sentinel?: { sentinels: { host: string; port: number }[]; name: string };
  /** Redis Cluster: seed nodes. When set, host/port are ignored. */
  cluster?: { nodes: { host: string; port: number }[]; options?: ClusterOptions };
  /** Stream partitions (by hash of `agentId`); each partition's keys share one hash slot. Default 1, or 6 on a cluster. */
  partitions?: number;
  /** Entries a dead consumer held are claimed by a live one after this idle time. Default 30,000 ms. */
  claimIdleMs?: number;
  /** Deliveries after which an entry is dead-lettered without calling handlers. Default 10. */
  maxDeliveries?: number;
  /**
   * `delivery.nack(delay)` with a delay at least this long is stored in the
   * partition's delayed set and the entry acknowledged (one script), so the
   * retry survives a crash, waits in no timer and is not claimed early by
   * another member. Shorter delays keep the entry pending and claim it back
   * after the delay. Default 1,000 ms.
   */
  scheduleNackAboveMs?: number;
  /** How often each transport moves due scheduled retries into the streams. Default 200 ms. */
  delayedPollMs?: number;
  /** Entries per XREADGROUP per stream. Default 500. */
  readCount?: number;
  /** XREADGROUP BLOCK time. Default 1,000 ms. */
  blockMs?: number;
  /** Publishes waiting for Redis before `publish` waits or fails (per `onFull`). Default 20,000 events. */
  maxPendingPublishes?: number;
  /**
   * How long `publish` waits for Redis to confirm the write before it rejects
   * with a `TimeoutError` (code `TIMEOUT`). `details.stored` says what is known:
   * `none` (nothing was sent: it never will be), `unknown` (sent, no answer:
   * Redis may still apply it; each chunk of up to 256 events is one atomic
   * script, never half-written) or `partial` (some chunks of a batch were
   * confirmed). A publish first waiting for room (`maxPendingPublishes`) waits
   * at most this long for it too. Default 5,000 ms.
   */
  publishTimeoutMs?: number;
  /**
   * How long `close()` without a timeout of its own flushes acks and publishes
   * before it drops the connections (`bus.stop()` passes what is left of its
   * `shutdownTimeoutMs` instead). Default 5,000 ms.
   */
  closeTimeoutMs?: number;
  /**
   * Replicated acknowledgements: after each publish script, `WAIT wait timeoutMs`
   * on the node that took the write, so `publish` resolves only once `wait`
   * replicas confirmed it. When fewer confirm within `timeoutMs` (default
   * 1,000), the publish rejects with `TimeoutError` (`details.stored:
   * 'unreplicated'`: on the master, not confirmed on enough replicas), and the
   * events are counted (`stats().unreplicated`), logged and reported by
   * `healthCheck()`. Default: off (a publish resolves on the master's reply;
   * Redis replicates asynchronously, so a failover can lose it).
   */
  replicas?: { wait: number; timeoutMs?: number };
  /**
   * Bound of each health probe (`healthCheck()` and, on a Cluster, the probe
   * of every partition's node run every second): a partition whose node does
   * not answer within it is reported unavailable. Default 1,000 ms.
   */
  probeTimeoutMs?: number;
  /** ioredis auto-pipelining (helps PUBLISH throughput, raises p99; measure). Default false. */
  enableAutoPipelining?: boolean;
  /** Extra ioredis options. */
  redisOptions?: RedisOptions;
}

export interface ResolvedOptions {
  redis: RedisOptions;
  cluster: { nodes: { host: string; port: number }[]; options: ClusterOptions } | undefined;
  keyPrefix: string;
  ttlMs: number | undefined;
  maxLen: number;
  retainUnread: number;
  serialization: SerializationName | SerializerOptions;
  partitions: number;
  claimIdleMs: number;
  maxDeliveries: number;
  scheduleNackAboveMs: number;
  delayedPollMs: number;
  readCount: number;
  blockMs: number;
  maxPendingPublishes: number;
  publishTimeoutMs: number;
  closeTimeoutMs: number;
  replicas: { wait: number; timeoutMs: number } | undefined;
  probeTimeoutMs: number;
}

function posInt(setting: string, v: unknown, min = 1): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new ConfigError(setting, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

function resolveReplicas(r: RedisTransportOptions['replicas']): ResolvedOptions['replicas'] {
  if (r === undefined) return undefined;
  if (r === null || typeof r !== 'object') throw new ConfigError('replicas', 'must be { wait, timeoutMs? }');
  const wait = posInt('replicas.wait', r.wait, 0);
  if (wait === undefined)
    throw new ConfigError('replicas.wait', 'the number of replicas to wait for is required');
  if (wait === 0) return undefined;
  return { wait, timeoutMs: posInt('replicas.timeoutMs', r.timeoutMs) ?? 1000 };
}

/** Validates options (a `ConfigError` names the bad setting) and fills defaults. */
export function resolveOptions(o: RedisTransportOptions = {}): ResolvedOptions {
  if (o === null || typeof o !== 'object') throw new ConfigError('options', 'must be an object');
  const redis: RedisOptions = {
    host: o.host ?? '127.0.0.1',
    port: posInt('port', o.port) ?? 6379,
    db: posInt('db', o.db, 0) ?? 0,
    lazyConnect: true,
    enableAutoPipelining: o.enableAutoPipelining ?? false,
    maxRetriesPerRequest: 20,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    ...(o.username === undefined ? {} : { username: o.username }),
    ...(o.password === undefined ? {} : { password: o.password }),
    ...(o.tls === undefined ? {} : { tls: o.tls }),
  };
  if (o.url !== undefined) {
    let u: URL;
    try {
      u = new URL(o.url);
    } catch {
      throw new ConfigError('url', `not a URL: ${JSON.stringify(o.url)}`);
    }
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
      throw new ConfigError('url', `protocol must be redis: or rediss:, got ${u.protocol}`);
    redis.host = u.hostname || '127.0.0.1';
    redis.port = u.port ? Number(u.port) : 6379;
    if (u.username) redis.username = decodeURIComponent(u.username);
    if (u.password) redis.password = decodeURIComponent(u.password);
    const db = u.pathname.replace(/^\//, '');
    if (db) {
      if (!/^\d+$/.test(db))
        throw new ConfigError('url', `database must be a number, got ${JSON.stringify(db)}`);
      redis.db = Number(db);
    }
    if (u.protocol === 'rediss:') redis.tls = { ...(o.tls ?? {}), servername: u.hostname };
  }
  if (o.sentinel !== undefined) {
    if (!Array.isArray(o.sentinel.sentinels) || o.sentinel.sentinels.length === 0)
      throw new ConfigError('sentinel.sentinels', 'must be a non-empty array of { host, port }');
    if (typeof o.sentinel.name !== 'string' || o.sentinel.name.length === 0)
      throw new ConfigError('sentinel.name', 'the name of the monitored master is required');
    if (o.cluster !== undefined)
      throw new ConfigError('sentinel', 'use either sentinel or cluster, not both');
    redis.sentinels = o.sentinel.sentinels;
    redis.name = o.sentinel.name;
  }
  // the transport's own commands (publish script, reads, acks) are sent below ioredis's key
  // prefixing, so an ioredis keyPrefix would split one stream into two key spaces
  if (o.redisOptions?.keyPrefix !== undefined)
    throw new ConfigError('redisOptions.keyPrefix', "use the transport's keyPrefix option instead");
  if (
    o.cluster?.options?.keyPrefix !== undefined ||
    o.cluster?.options?.redisOptions?.keyPrefix !== undefined
  )
    throw new ConfigError('cluster.options.keyPrefix', "use the transport's keyPrefix option instead");
  Object.assign(redis, o.redisOptions);
  const keyPrefix = o.keyPrefix ?? 'qe';
  if (typeof keyPrefix !== 'string' || keyPrefix.length === 0 || /[{}\s]/.test(keyPrefix))
    throw new ConfigError('keyPrefix', 'must be a non-empty string without braces or spaces');
  if (o.cluster !== undefined && (!Array.isArray(o.cluster.nodes) || o.cluster.nodes.length === 0))
    throw new ConfigError('cluster.nodes', 'must be a non-empty array of { host, port }');
  const cluster = o.cluster
    ? {
        nodes: o.cluster.nodes,
        options: {
          lazyConnect: true,
          enableAutoPipelining: o.enableAutoPipelining ?? false,
          clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
          // failover: a dead master's commands must fail over to the promoted replica, not
          // wait in that node's offline queue through every reconnect attempt
          retryDelayOnFailover: 200,
          retryDelayOnClusterDown: 200,
          maxRedirections: 64,
          slotsRefreshInterval: 2000,
          ...o.cluster.options,
          redisOptions: {
            ...(redis.password === undefined ? {} : { password: redis.password }),
            ...(redis.username === undefined ? {} : { username: redis.username }),
            ...(redis.tls === undefined ? {} : { tls: redis.tls }),
            maxRetriesPerRequest: 2,
            enableOfflineQueue: false,
            ...o.cluster.options?.redisOptions,
          },
        },
      }
    : undefined;
  const ttl = o.ttl === undefined ? undefined : posInt('ttl', o.ttl);
  const maxLen = posInt('maxLen', o.maxLen) ?? 100_000;
  return {
    redis,
    cluster,
    keyPrefix,
    ttlMs: ttl === undefined ? undefined : ttl * 1000,
    maxLen,
    retainUnread: posInt('retainUnread', o.retainUnread, 0) ?? maxLen,
    serialization: o.serialization ?? 'json',
    partitions: posInt('partitions', o.partitions) ?? (cluster ? 6 : 1),
    claimIdleMs: posInt('claimIdleMs', o.claimIdleMs, 10) ?? 30_000,
    maxDeliveries: posInt('maxDeliveries', o.maxDeliveries) ?? 10,
    scheduleNackAboveMs: posInt('scheduleNackAboveMs', o.scheduleNackAboveMs, 0) ?? 1000,
    delayedPollMs: posInt('delayedPollMs', o.delayedPollMs, 10) ?? 200,
    readCount: posInt('readCount', o.readCount) ?? 500,
    blockMs: posInt('blockMs', o.blockMs, 10) ?? 1000,
    maxPendingPublishes: posInt('maxPendingPublishes', o.maxPendingPublishes) ?? 20_000,
    publishTimeoutMs: posInt('publishTimeoutMs', o.publishTimeoutMs) ?? 5000,
    closeTimeoutMs: posInt('closeTimeoutMs', o.closeTimeoutMs, 0) ?? 5000,
    replicas: resolveReplicas(o.replicas),
    probeTimeoutMs: posInt('probeTimeoutMs', o.probeTimeoutMs, 10) ?? 1000,
  };
}
