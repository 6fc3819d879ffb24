import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  type ConsumeFn,
  type Middleware,
  type PublishFn,
  RateLimitedError,
  RetryLaterError,
} from '@qe/core';
import type { Redis } from 'ioredis';
import { sleep } from './backoff.js';

/** What a token bucket answers: allowed now, or how long until a token is there. */
export interface TakeResult {
  allowed: boolean;
  retryAfterMs: number;
}

/** A store of token buckets. Both implementations are atomic per key. */
export interface TokenBucketStore {
  take(key: string, capacity: number, refillPerMs: number, cost: number): Promise<TakeResult>;
}

/** Buckets in this process. Bounded: buckets untouched for `idleMs` are dropped. */
export class MemoryTokenBuckets implements TokenBucketStore {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly maxKeys = 100_000) {}

  async take(key: string, capacity: number, refillPerMs: number, cost: number): Promise<TakeResult> {
    const now = Date.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: capacity, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(capacity, b.tokens + (now - b.at) * refillPerMs);
    b.at = now;
    if (b.tokens >= cost) {
      b.tokens -= cost;
      return { allowed: true, retryAfterMs: 0 };
    }
    return { allowed: false, retryAfterMs: Math.ceil((cost - b.tokens) / refillPerMs) };
  }
}

/**
 * tokenBucket-1: takes `cost` tokens from a bucket if it has them, atomically.
 * KEYS[1] the bucket (a hash: tokens, at)
 * ARGV[1] capacity; ARGV[2] refill per ms; ARGV[3] cost; ARGV[4] TTL of an idle bucket (ms)
 * Reply: { allowed (1/0), retry-after ms }. Time is Redis's own (TIME), so clocks of the callers do not matter.
 */
export const TOKEN_BUCKET_1 = `
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + (now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return { allowed, wait }
`;

/** Buckets shared by every process using the same Redis and prefix. */
export class RedisTokenBuckets implements TokenBucketStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'qe:ratelimit',
  ) {
    if (!(redis as unknown as { qeTokenBucket?: unknown }).qeTokenBucket)
      redis.defineCommand('qeTokenBucket', { numberOfKeys: 1, lua: TOKEN_BUCKET_1 });
  }

  async take(key: string, capacity: number, refillPerMs: number, cost: number): Promise<TakeResult> {
    const ttl = Math.ceil(capacity / refillPerMs) + 1000;
    const [allowed, wait] = (await (
      this.redis as unknown as {
        qeTokenBucket(
          k: string,
          cap: number,
          rate: number,
          cost: number,
          ttl: number,
        ): Promise<[number, number]>;
      }
    ).qeTokenBucket(`${this.prefix}:${key}`, capacity, refillPerMs, cost, ttl)) as [number, number];
    return { allowed: allowed === 1, retryAfterMs: Number(wait) };
  }
}

export interface RateLimitOptions {
  /** Window of spec 000's config, ms. */
  windowMs: number;
  /** Events per window (the bucket's capacity; it refills at maxEvents/windowMs). */
  maxEvents: number;
  /** What one bucket is for: `agentId` (default), `swarmId`, `type`, `global`, or a function. */
  key?: 'agentId' | 'swarmId' | 'type' | 'global' | ((event: AgentEvent) => string);
  /** Over the limit: wait for a token (default) or fail with `RATE_LIMITED` and a retry-after. */
  mode?: 'wait' | 'fail';
  /** Default: buckets in this process. `RedisTokenBuckets` shares them across processes. */
  store?: TokenBucketStore;
  /**
   * Where events are charged: `both` (default), `publish` or `consume`. With
   * `both`, an event this limiter charged when it was published (or when one
   * subscription consumed it) is not charged again when it is consumed: one
   * event costs one token. That memory is per limiter instance; processes
   * sharing `RedisTokenBuckets` should charge on one side only.
   */
  on?: 'both' | 'publish' | 'consume';
  /** Event ids remembered as paid (oldest forgotten first). Default 100,000. */
  maxTrackedEvents?: number;
}

const RATE_LIMIT_KEYS = ['windowMs', 'maxEvents', 'key', 'mode', 'store', 'on', 'maxTrackedEvents'] as const;
const BUCKET_KEYS = ['agentId', 'swarmId', 'type', 'global'] as const;

/**
 * Token-bucket rate limiting, on publish (a publisher over its limit waits or
 * gets `RATE_LIMITED`) and on consume (an event over the limit is postponed
 * without using an attempt, or fails). One event costs one token: an event
 * this limiter charged on publish, or for one subscription, passes its other
 * subscriptions and its redeliveries free. With `RedisTokenBuckets` every
 * process draws from the same buckets, so together they stay within the limit.
 */
export function createRateLimiter(options: RateLimitOptions): Middleware {
  assertKnownKeys(options ?? {}, RATE_LIMIT_KEYS);
  if (!Number.isInteger(options?.windowMs) || options.windowMs < 1)
    throw new ConfigError('windowMs', 'must be a positive integer');
  if (!Number.isInteger(options.maxEvents) || options.maxEvents < 1)
    throw new ConfigError('maxEvents', 'must be a positive integer');
  const mode = options.mode ?? 'wait';
  if (mode !== 'wait' && mode !== 'fail') throw new ConfigError('mode', "must be 'wait' or 'fail'");
  const k = options.key ?? 'agentId';
  if (typeof k !== 'function' && !(BUCKET_KEYS as readonly string[]).includes(k))
    throw new ConfigError(
      'key',
      `must be ${BUCKET_KEYS.join(', ')} or a function, got ${JSON.stringify(k)} (a misspelt key would put every event in one bucket)`,
    );
  if (options.store !== undefined && typeof (options.store as Partial<TokenBucketStore>)?.take !== 'function')
    throw new ConfigError('store', 'must be a TokenBucketStore (take)');
  const on = options.on ?? 'both';
  if (on !== 'both' && on !== 'publish' && on !== 'consume')
    throw new ConfigError('on', "must be 'both', 'publish' or 'consume'");
  const maxTracked = options.maxTrackedEvents ?? 100_000;
  if (!Number.isInteger(maxTracked) || maxTracked < 1)
    throw new ConfigError('maxTrackedEvents', 'must be a positive integer');
  const store = options.store ?? new MemoryTokenBuckets();
  const capacity = options.maxEvents;
  const rate = options.maxEvents / options.windowMs;
  // ids of events this limiter already charged, so a bus that publishes and consumes an event pays once
  const paid = new Set<string>();
  const markPaid = (id: string) => {
    if (paid.has(id)) return;
    if (paid.size >= maxTracked) paid.delete(paid.values().next().value as string);
    paid.add(id);
  };
  const keyOf = (e: AgentEvent): string =>
    typeof k === 'function'
      ? k(e)
      : k === 'global'
        ? 'global'
        : k === 'type'
          ? e.type
          : String(e[k] ?? 'none');

  const admit = async (e: AgentEvent, onLimited: (retryAfterMs: number) => never | Promise<void>) => {
    for (;;) {
      const r = await store.take(keyOf(e), capacity, rate, 1);
      if (r.allowed) return;
      await onLimited(r.retryAfterMs);
    }
  };
  const limited = (key: string, retryAfterMs: number) =>
    new RateLimitedError(
      `rate limit for ${key} exceeded (${options.maxEvents} per ${options.windowMs} ms)`,
      retryAfterMs,
    );

  const publish = (next: PublishFn): PublishFn => {
    return async (events, ctx) => {
      // every publish pays, even of an id seen before: republishing must not get around the limit
      for (const e of events) {
        await admit(e, (ms) => {
          if (mode === 'fail') throw limited(keyOf(e), ms);
          return sleep(ms);
        });
        if (on === 'both') markPaid(e.id);
      }
      return next(events, ctx);
    };
  };
  const consume = (next: ConsumeFn): ConsumeFn => {
    return async (event, ctx) => {
      if (paid.has(event.id)) return next(event, ctx); // paid on publish, or by another subscription
      await admit(event, (ms) => {
        if (mode === 'fail') throw limited(keyOf(event), ms);
        throw new RetryLaterError(ms, `rate limit for ${keyOf(event)}`);
      });
      markPaid(event.id);
      return next(event, ctx);
    };
  };
  return {
    name: 'rate-limit',
    ...(on === 'consume' ? {} : { publish }),
    ...(on === 'publish' ? {} : { consume }),
  };
}
