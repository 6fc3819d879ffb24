import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  type ConsumeContext,
  type ConsumeFn,
  checkFunctionSetting,
  checkIntSetting,
  type Middleware,
  RetryLaterError,
} from '@qe/core';
import type { Redis } from 'ioredis';

/**
 * Where "seen" marks live. `claim` returns `new` (go ahead), `done` (a repeat:
 * drop it) or `busy` (another worker is handling it right now).
 */
export interface IdempotencyStore {
  claim(key: string, processingMs: number): Promise<'new' | 'done' | 'busy'>;
  complete(key: string, windowMs: number): Promise<void>;
  release(key: string): Promise<void>;
}

/** Marks in this process: a bounded LRU (oldest marks evicted first). */
export class MemoryIdempotencyStore implements IdempotencyStore {
  /** @internal read by the middleware's fast path */
  readonly marks = new Map<string, { state: 'p' | 'd'; until: number }>();
  constructor(private readonly maxKeys = 100_000) {}

  async claim(key: string, processingMs: number): Promise<'new' | 'done' | 'busy'> {
    return this.claimNow(key, processingMs);
  }
  async complete(key: string, windowMs: number): Promise<void> {
    this.completeNow(key, windowMs);
  }
  async release(key: string): Promise<void> {
    this.marks.delete(key);
  }
  /** `claim` without a promise, for the middleware's synchronous fast path. */
  claimNow(key: string, processingMs: number): 'new' | 'done' | 'busy' {
    const now = Date.now();
    const m = this.marks.get(key);
    if (m && m.until > now) return m.state === 'd' ? 'done' : 'busy';
    this.marks.delete(key);
    if (this.marks.size >= this.maxKeys) this.marks.delete(this.marks.keys().next().value as string);
    this.marks.set(key, { state: 'p', until: now + processingMs });
    return 'new';
  }
  /** `complete` without a promise: the key moves to the newest end of the LRU. */
  completeNow(key: string, windowMs: number): void {
    this.marks.delete(key);
    this.marks.set(key, { state: 'd', until: Date.now() + windowMs });
  }
  get size(): number {
    return this.marks.size;
  }
}

/** Marks in Redis (`SET NX PX`), shared by every process: effectively-once across consumers. */
export class RedisIdempotencyStore implements IdempotencyStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'qe:idem',
  ) {}

  async claim(key: string, processingMs: number): Promise<'new' | 'done' | 'busy'> {
    const k = `${this.prefix}:${key}`;
    const ok = await this.redis.set(k, 'p', 'PX', processingMs, 'NX');
    if (ok === 'OK') return 'new';
    const state = await this.redis.get(k);
    if (state === null) return this.claim(key, processingMs); // expired in between
    return state === 'd' ? 'done' : 'busy';
  }
  async complete(key: string, windowMs: number): Promise<void> {
    await this.redis.set(`${this.prefix}:${key}`, 'd', 'PX', windowMs);
  }
  async release(key: string): Promise<void> {
    await this.redis.del(`${this.prefix}:${key}`);
  }
}

export interface IdempotencyOptions {
  /** How long a handled key stays remembered, ms. Default 10 minutes. */
  windowMs?: number;
  /** What identifies a repeat. Default the event id. */
  key?: (event: AgentEvent) => string;
  /** Default: in memory. `RedisIdempotencyStore` works across processes. */
  store?: IdempotencyStore;
  /** A claim taken by a handler that never finishes expires after this, ms. Default 60,000. */
  processingMs?: number;
  /** When another worker is handling the same key: postpone by this much, ms. Default 200. */
  busyRetryMs?: number;
}

export interface IdempotencyStats {
  handled: number;
  duplicates: number;
  busy: number;
}

/**
 * Drops repeats of an event within a window, so at-least-once delivery gives
 * effectively-once handling. A key is marked done only after the handler
 * succeeded; a failure releases it, so the retry is not mistaken for a repeat.
 * While another worker holds the same key, the event is postponed.
 */
export function createIdempotency(
  options: IdempotencyOptions = {},
): Middleware & { stats(): IdempotencyStats } {
  assertKnownKeys(options, ['windowMs', 'key', 'store', 'processingMs', 'busyRetryMs']);
  const windowMs = options.windowMs ?? 600_000;
  const processingMs = options.processingMs ?? 60_000;
  if (!Number.isInteger(windowMs) || windowMs < 1)
    throw new ConfigError('windowMs', 'must be a positive integer');
  // a claim that expires at once (or never: PX refuses <= 0) would let a concurrent copy run too
  checkIntSetting('processingMs', options.processingMs, 1);
  checkIntSetting('busyRetryMs', options.busyRetryMs, 1);
  checkFunctionSetting('key', options.key);
  const st = options.store as Partial<IdempotencyStore> | undefined;
  if (st !== undefined && (typeof st?.claim !== 'function' || typeof st.complete !== 'function'))
    throw new ConfigError('store', 'must be an IdempotencyStore (claim, complete, release)');
  const busyRetryMs = options.busyRetryMs ?? 200;
  const store = options.store ?? new MemoryIdempotencyStore();
  const keyOf = options.key ?? ((e: AgentEvent) => e.id);
  const counters: IdempotencyStats = { handled: 0, duplicates: 0, busy: 0 };
  const memory = store instanceof MemoryIdempotencyStore ? store : null;
  // Same steps as the general path, without a promise per event when the
  // handler is synchronous (the bus keeps its fast path for those).
  const inMemory = (key: string, event: AgentEvent, ctx: ConsumeContext, next: ConsumeFn): unknown => {
    const m = memory as MemoryIdempotencyStore;
    const state = m.claimNow(key, processingMs);
    if (state === 'done') {
      counters.duplicates++;
      return undefined;
    }
    if (state === 'busy') {
      counters.busy++;
      throw new RetryLaterError(busyRetryMs, `${key} is being handled elsewhere`);
    }
    let r: unknown;
    try {
      r = next(event, ctx);
    } catch (err) {
      m.marks.delete(key);
      throw err;
    }
    if (r instanceof Promise)
      return r.then(
        (v) => {
          m.completeNow(key, windowMs);
          counters.handled++;
          return v;
        },
        (err: unknown) => {
          m.marks.delete(key);
          throw err;
        },
      );
    m.completeNow(key, windowMs);
    counters.handled++;
    return r;
  };
  return {
    name: 'idempotency',
    stats: () => ({ ...counters }),
    consume(next: ConsumeFn): ConsumeFn {
      if (memory)
        return (event, ctx) =>
          inMemory(`${ctx.group ?? ctx.subscriptionId}:${keyOf(event)}`, event, ctx, next);
      return async (event, ctx) => {
        const key = `${ctx.group ?? ctx.subscriptionId}:${keyOf(event)}`;
        const state = await store.claim(key, processingMs);
        if (state === 'done') {
          counters.duplicates++;
          return;
        }
        if (state === 'busy') {
          counters.busy++;
          throw new RetryLaterError(busyRetryMs, `${key} is being handled elsewhere`);
        }
        try {
          const r = await next(event, ctx);
          await store.complete(key, windowMs);
          counters.handled++;
          return r;
        } catch (err) {
          await store.release(key).catch(() => {});
          throw err;
        }
      };
    },
  };
}
