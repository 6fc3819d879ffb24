import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createBulkhead,
  createCircuitBreaker,
  createIdempotency,
  createRateLimiter,
  createRetryMiddleware,
  createTimeoutMiddleware,
  DeadLetterManager,
  RedisIdempotencyStore,
  RedisTokenBuckets,
} from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function redisBus(nodeId: string) {
  const keyPrefix = `qe-test:rel:bus:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const bus = new QEEventBus({
    nodeId,
    retryAttempts: 0,
    transport: new RedisStreamsTransport({ url: URL_, keyPrefix }),
  });
  await bus.start();
  const r = new Redis(URL_);
  cleanups.push(async () => {
    await bus.stop();
    const keys = await r.keys(`${keyPrefix}*`);
    if (keys.length) await r.del(...keys);
    r.disconnect();
  });
  return { bus, redis: r, keyPrefix };
}

describe('every middleware composed on a bus over the Redis transport', () => {
  it('retry → timeout → breaker → bulkhead → idempotency → rate limit: a poison event dead-letters after the configured attempts and redrives once', async () => {
    const { bus, redis, keyPrefix } = await redisBus('rel-redis');
    const calls: number[] = [];
    let poisoned = true;
    await bus.subscribe(
      'order.*',
      async () => {
        calls.push(Date.now());
        if (poisoned) throw new Error('poison');
      },
      {
        group: 'orders',
        middleware: [
          createIdempotency({ store: new RedisIdempotencyStore(redis, `${keyPrefix}:idem`) }),
          createRateLimiter({
            windowMs: 1000,
            maxEvents: 100,
            store: new RedisTokenBuckets(redis, `${keyPrefix}:rl`),
          }),
          createCircuitBreaker({ failureThreshold: 50, recoveryTimeout: 1000 }),
          createRetryMiddleware({ retryAttempts: 2, retryDelay: 10, maxRetryDelay: 40 }),
          createTimeoutMiddleware({ timeoutMs: 1000 }),
          createBulkhead({ maxConcurrent: 4, maxQueue: 10 }),
        ],
      },
    ).ready;
    const e = await bus.publish({ type: 'order.placed', agentId: 'shop', data: { sku: 'x' } });
    const dlq = DeadLetterManager.of(bus.deadLetters);
    await waitFor(async () => (await dlq.depth()) === 1, 'the dead letter in the Redis stream');
    expect(calls).toHaveLength(3);
    const [dl] = await dlq.list();
    expect(dl).toMatchObject({ reason: 'permanent', event: { id: e.id, data: { sku: 'x' } } });
    poisoned = false;
    expect(await dlq.redrive({ id: dl!.id })).toBe(1);
    await waitFor(() => calls.length === 4, 'the redriven call');
    await new Promise((r) => setTimeout(r, 200));
    expect(calls).toHaveLength(4);
    expect(await dlq.depth()).toBe(0);
  });
});
