import {
  type AgentEvent,
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
}

/**
 * Token-bucket rate limiting, on publish (a publisher over its limit waits or
 * gets `RATE_LIMITED`) and on consume (an event over the limit is postponed
 * without using an attempt, or fails). With `RedisTokenBuckets` every process
 * draws from the same buckets, so together they stay within the limit.
 */
export function createRateLimiter(options: RateLimitOptions): Middleware {
  if (!Number.isInteger(options?.windowMs) || options.windowMs < 1)
    throw new ConfigError('windowMs', 'must be a positive integer');
  if (!Number.isInteger(options.maxEvents) || options.maxEvents < 1)
    throw new ConfigError('maxEvents', 'must be a positive integer');
  const mode = options.mode ?? 'wait';
  if (mode !== 'wait' && mode !== 'fail') throw new ConfigError('mode', "must be 'wait' or 'fail'");
  const store = options.store ?? new MemoryTokenBuckets();
  const capacity = options.maxEvents;
  const rate = options.maxEvents / options.windowMs;
  const k = options.key ?? 'agentId';
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

  return {
    name: 'rate-limit',
    publish(next: PublishFn): PublishFn {
      return async (events, ctx) => {
        for (const e of events)
          await admit(e, (ms) => {
            if (mode === 'fail') throw limited(keyOf(e), ms);
            return sleep(ms);
          });
        return next(events, ctx);
      };
    },
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        await admit(event, (ms) => {
          if (mode === 'fail') throw limited(keyOf(event), ms);
          throw new RetryLaterError(ms, `rate limit for ${keyOf(event)}`);
        });
        return next(event, ctx);
      };
    },
  };
}
