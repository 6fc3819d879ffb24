import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, quiescent, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
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

/** True once nothing is queued, running or waiting in a retry timer on `bus`. */
function settled(bus: QEEventBus): boolean {
  const m = bus.getDetailedMetrics();
  return m.inFlight === 0 && m.queueSize === 0 && m.retryTimers === 0;
}
/** The Redis transport's default delayed-set poll (a retry or redrive copy could still arrive within one). */
const DEFAULT_DELAYED_POLL_MS = 200;

async function redisBus(nodeId: string) {
  const keyPrefix = uniquePrefix('rel:bus');
  const bus = new QEEventBus({
    nodeId,
    retryAttempts: 0,
    transport: new RedisStreamsTransport({ url: URL_, keyPrefix }),
  });
  await bus.start();
  const r = new Redis(URL_);
  cleanups.push(async () => {
    await bus.stop();
    await deletePrefix(keyPrefix, URL_);
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
    await waitFor(() => settled(bus), 'the redriven call settled');
    await quiescent(() => calls.length, { forMs: 3 * DEFAULT_DELAYED_POLL_MS, what: 'the number of calls' });
    expect(calls).toHaveLength(4);
    expect(await dlq.depth()).toBe(0);
  });
});

describe('long retries of a shared broadcast entry are stored in Redis, not in the bus', () => {
  async function node(nodeId: string, keyPrefix: string) {
    // the attached retry middleware hands exclusive retries back with nack(delay): store those of 200 ms and more too
    const transport = new RedisStreamsTransport({
      url: URL_,
      keyPrefix,
      blockMs: 100,
      delayedPollMs: DELAYED_POLL_MS,
      scheduleNackAboveMs: 200,
    });
    const bus = new QEEventBus({ nodeId, retryAttempts: 0, transport, durableRetryAboveMs: 200 });
    bus.on('error', () => {});
    await bus.start();
    cleanups.push(() => bus.stop().catch(() => {}));
    return { bus, transport };
  }
  const DELAYED_POLL_MS = 50;
  const retry = () =>
    createRetryMiddleware({ retryAttempts: 2, retryDelay: 400, maxRetryDelay: 800, scheduleAboveMs: 200 });

  async function setup(tag: string) {
    const keyPrefix = uniquePrefix(`rel:dly-${tag}`);
    const r = new Redis(URL_);
    cleanups.push(async () => {
      await deletePrefix(keyPrefix, URL_);
      r.disconnect();
    });
    // full jitter made predictable: every retry waits 99% of its ceiling (396 ms, then 792 ms), all "long"
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.99);
    cleanups.push(() => random.mockRestore());
    return { keyPrefix, r };
  }

  it('only the failing subscription is called again, with attempt 2, and it dead-letters after exactly retryAttempts', async () => {
    const { keyPrefix, r } = await setup('shared');
    const { bus, transport } = await node('rel-dly', keyPrefix);
    const failing: { attempt: number; exclusive: boolean; at: number }[] = [];
    const other: number[] = [];
    await bus.subscribe(
      'job.*',
      (_e, ctx) => {
        failing.push({ attempt: ctx.attempt, exclusive: ctx.exclusive, at: Date.now() });
        throw new Error('downstream is down');
      },
      { middleware: [retry()] },
    ).ready;
    await bus.subscribe('job.*', (_e, ctx) => void other.push(ctx.attempt)).ready;
    const e = await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    const delayed = transport.keys.delayed(0);
    await waitFor(async () => (await r.zcard(delayed)) === 1, 'the retry stored in Redis');
    // the bus counts it when Redis's reply reaches it, which can be just after another client sees the member
    await waitFor(() => bus.getDetailedMetrics().durableRetries === 1, 'the bus to count the stored retry');
    expect(bus.getDetailedMetrics().retryTimers).toBe(0);
    expect(failing.map((f) => f.exclusive)).toEqual([false]);
    await waitFor(() => failing.length === 2, 'the first retry');
    expect(failing[1]!.attempt).toBe(2);
    expect(failing[1]!.at - failing[0]!.at).toBeGreaterThanOrEqual(390);
    // the retry reached this subscription alone: the middleware hands it back with nack(delay), stored again
    expect(failing[1]!.exclusive).toBe(true);
    await waitFor(async () => (await r.zcard(delayed)) === 1, 'the second retry stored in Redis');
    expect(bus.getDetailedMetrics().retryTimers).toBe(0);
    const dlq = DeadLetterManager.of(bus.deadLetters);
    await waitFor(async () => (await dlq.depth()) === 1, 'the dead letter', 5000);
    expect(failing.map((f) => f.attempt)).toEqual([1, 2, 3]);
    expect(failing[2]!.at - failing[1]!.at).toBeGreaterThanOrEqual(780);
    const [dl] = await dlq.list();
    expect(dl).toMatchObject({ reason: 'permanent', attempts: 3, event: { id: e.id } });
    // no retry stored in Redis nor waiting in a timer, nothing running: only the delayed poll could still
    // move a copy; three of its periods (and three read periods) of silence
    await waitFor(async () => (await r.zcard(delayed)) === 0 && settled(bus), 'no retry left anywhere');
    await quiescent(() => [failing.length, other.length], {
      forMs: 3 * Math.max(DELAYED_POLL_MS, 100),
      what: 'the calls of both subscriptions',
    });
    expect(other).toEqual([1]);
    expect(failing).toHaveLength(3);
    expect(await r.zcard(delayed)).toBe(0);
  });

  it('a crash of the bus holding the retry loses nothing: the restarted node retries that subscription only', async () => {
    const { keyPrefix, r } = await setup('crash');
    const first = await node('rel-dly-crash', keyPrefix);
    const calls: string[] = [];
    await first.bus.subscribe(
      'job.*',
      () => {
        calls.push('failing@1');
        throw new Error('downstream is down');
      },
      { middleware: [retry()] },
    ).ready;
    await first.bus.subscribe('job.*', () => void calls.push('other@1')).ready;
    await first.bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(async () => (await r.zcard(first.transport.keys.delayed(0))) === 1, 'the stored retry');
    // the shared entry is acked once both subscriptions settled: the retry is the only copy left
    const stream = first.transport.keys.stream(0, 2);
    await waitFor(
      async () => Number(((await r.xpending(stream, 'bc:rel-dly-crash:broadcast')) as [number])[0]) === 0,
      'the shared entry acked',
    );
    await first.transport.kill();
    // the same node restarted, its subscriptions made in the same order (so with the same ids)
    const again = await node('rel-dly-crash', keyPrefix);
    const attempts: number[] = [];
    await again.bus.subscribe(
      'job.*',
      (_e, ctx) => {
        attempts.push(ctx.attempt);
        calls.push('failing@2');
      },
      { middleware: [retry()] },
    ).ready;
    await again.bus.subscribe('job.*', () => void calls.push('other@2')).ready;
    await waitFor(() => attempts.length === 1, 'the retry after the crash', 5000);
    await waitFor(
      async () => (await r.zcard(again.transport.keys.delayed(0))) === 0 && settled(again.bus),
      'no retry left anywhere',
    );
    await quiescent(() => calls.length, {
      forMs: 3 * Math.max(DELAYED_POLL_MS, 100),
      what: 'the number of calls',
    });
    expect(attempts).toEqual([2]);
    expect(calls.sort()).toEqual(['failing@1', 'failing@2', 'other@1']);
  });
});
