import type { ChildProcess } from 'node:child_process';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, quiescent, startFixture, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createCircuitBreaker,
  createRetryMiddleware,
  DeadLetterManager,
  RedisTokenBuckets,
} from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const children: ChildProcess[] = [];
const prefixes: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const p of prefixes.splice(0)) await deletePrefix(p, URL_);
});
const prefix = () => {
  const p = uniquePrefix('rel');
  prefixes.push(p);
  return p;
};

/** The worker fixture; `go` starts a rate-limit worker, so stdin is a pipe. */
function worker(args: string[]) {
  const lines: string[] = [];
  const proc = startFixture(new URL('./fixtures/worker.ts', import.meta.url), args, {
    stdin: 'pipe',
    onLine: (l) => lines.push(l),
  });
  children.push(proc);
  return { proc, lines };
}

/** The transports' defaults that decide when an entry could still come back: the delayed-set poll. */
const DELAYED_POLL_MS = 200;

/** True once nothing is queued, running or waiting in a retry timer on `bus`. */
const settled = (bus: QEEventBus) => {
  const m = bus.getDetailedMetrics();
  return m.inFlight === 0 && m.queueSize === 0 && m.retryTimers === 0;
};

/** True once every consumer group on every stream under `keyPrefix` has read and acked everything. */
async function groupsDrained(keyPrefix: string): Promise<boolean> {
  const r = new Redis(URL_);
  try {
    let cursor = '0';
    let groups = 0;
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000, 'TYPE', 'stream');
      cursor = next;
      for (const key of keys) {
        const info = (await r.xinfo('GROUPS', key)) as unknown[][];
        for (const g of info) {
          const f = new Map<string, unknown>();
          for (let i = 0; i < g.length; i += 2) f.set(String(g[i]), g[i + 1]);
          groups++;
          if (Number(f.get('pending')) !== 0 || Number(f.get('lag') ?? 0) !== 0) return false;
        }
      }
    } while (cursor !== '0');
    return groups > 0;
  } finally {
    r.disconnect();
  }
}

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});
async function redisBus(p: string) {
  const bus = new QEEventBus({
    nodeId: `rel-redis-${stops.length}`,
    retryAttempts: 0,
    transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${p}:bus`, blockMs: 50 }),
  });
  await bus.start();
  stops.unshift(() => bus.stop());
  return bus;
}

describe('reliability composed on a bus over the Redis Streams transport', () => {
  for (const scheduled of [false, true])
    it(`a poison event ends in the DLQ after exactly the configured attempts at the backoff schedule (${
      scheduled ? 'retries as scheduled redeliveries' : 'retries in process'
    }); redrive delivers it once`, async () => {
      const bus = await redisBus(prefix());
      const calls: number[] = [];
      const planned: { delayMs: number; scheduled: boolean }[] = [];
      let poisoned = true;
      await bus.subscribe(
        'order.*',
        () => {
          calls.push(performance.now());
          if (poisoned) throw new Error('poison');
        },
        {
          group: 'billing',
          middleware: [
            createRetryMiddleware({
              retryAttempts: 3,
              retryDelay: 40,
              maxRetryDelay: 400,
              scheduleAboveMs: scheduled ? 0 : 10_000,
              onRetry: (i) => planned.push({ delayMs: i.delayMs, scheduled: i.scheduled }),
            }),
          ],
        },
      ).ready;
      const e = await bus.publish({ type: 'order.placed', agentId: 'shop', data: { sku: 'x', n: 7 } });
      const dlq = DeadLetterManager.of(bus.deadLetters);
      await waitFor(async () => (await dlq.depth()) === 1, 'the dead letter', 15_000);
      expect(calls).toHaveLength(4);
      expect(planned.map((p) => p.scheduled)).toEqual([scheduled, scheduled, scheduled]);
      planned.forEach((p, i) => {
        expect(p.delayMs).toBeLessThan(40 * 2 ** i);
        expect(calls[i + 1]! - calls[i]!).toBeGreaterThanOrEqual(p.delayMs - 1);
      });
      const [dl] = await dlq.list({ pattern: 'order.*' });
      expect(dl).toMatchObject({
        reason: 'permanent',
        subscriptionId: expect.any(String),
        group: 'billing',
        event: { id: e.id, type: 'order.placed', data: { sku: 'x', n: 7 } },
        error: {
          name: 'PermanentError',
          message: expect.stringContaining('failed after 4 attempts: poison'),
        },
      });
      expect(dl!.error!.stack).toContain('PermanentError');
      poisoned = false;
      expect(await dlq.redrive({ pattern: 'order.*' })).toBe(1);
      await waitFor(() => calls.length === 5, 'the redriven call', 10_000);
      await waitFor(() => settled(bus), 'the redriven call settled');
      expect(await dlq.depth()).toBe(0);
      // nothing runs or waits in a timer; a second copy could only come from the delayed poll: three of its periods
      await quiescent(() => calls.length, { forMs: 3 * DELAYED_POLL_MS, what: 'the number of calls' });
      expect(calls).toHaveLength(5);
      expect(await dlq.depth()).toBe(0);
    });

  it('a breaker opens after the threshold, fails fast, half-opens after the timeout and closes on success, losing nothing', async () => {
    const bus = await redisBus(prefix());
    const states: string[] = [];
    /** The handler's call count when the circuit entered each state (the first time). */
    const callsAt: Record<string, number> = {};
    let healthy = false;
    let calls = 0;
    const breaker = createCircuitBreaker({
      failureThreshold: 3,
      recoveryTimeout: 200,
      monitoringPeriod: 10_000,
      onStateChange: (_k, s) => {
        states.push(s);
        callsAt[s] ??= calls;
        // the downstream recovers while the circuit is open, so the half-open trial succeeds however late
        // the test gets to run
        if (s === 'open') healthy = true;
      },
    });
    const handled = new Set<number>();
    await bus.subscribe(
      'pay.*',
      (e) => {
        calls++;
        if (!healthy) throw new Error('payment service down');
        handled.add((e.data as { i: number }).i);
      },
      // three attempts each: without the breaker's postponement, events would be dead-lettered
      { group: 'pay', retryAttempts: 2, retryDelay: 5, maxConcurrency: 4, middleware: [breaker] },
    ).ready;
    for (let i = 0; i < 12; i++) await bus.publish({ type: 'pay.charge', agentId: 'a', data: { i } });
    await waitFor(() => states.includes('open'), 'the circuit to open', 10_000);
    await waitFor(() => handled.size === 12, 'every event handled', 15_000);
    expect(states.slice(0, 3)).toEqual(['open', 'half_open', 'closed']);
    // open: fails fast, the handler is not called at all until the reset timeout half-opens it
    expect(callsAt.open).toBeGreaterThanOrEqual(3);
    expect(callsAt.half_open).toBe(callsAt.open);
    expect(await bus.deadLetters!.count()).toBe(0);
    expect(breaker.stats()[0]).toMatchObject({ state: 'closed', opened: 1, closed: 1 });
  });
});

describe('reliability across processes (Redis)', () => {
  it('two processes sharing a Redis rate limit together stay within it', async () => {
    const p = prefix();
    const a = worker(['ratelimit', URL_, p, '100']);
    const b = worker(['ratelimit', URL_, p, '100']);
    await waitFor(() => a.lines.includes('ready') && b.lines.includes('ready'), 'both workers', 20_000);
    const start = Date.now();
    a.proc.stdin!.write('go\n');
    b.proc.stdin!.write('go\n');
    const admitted = () => [...a.lines, ...b.lines].filter((l) => l.startsWith('admitted '));
    await waitFor(() => admitted().length === 200, '200 admitted events', 30_000);
    const times = admitted()
      .map((l) => Number(l.slice(9)) - start)
      .sort((x, y) => x - y);
    // a bucket of 50 refilled at 50/s: by time t at most 50 + 50 * t/1000 (+1 for clock granularity)
    for (const [i, t] of times.entries())
      expect(i + 1).toBeLessThanOrEqual(50 + Math.floor((50 * (t + 20)) / 1000) + 1);
    expect(times[199]!).toBeGreaterThanOrEqual(2800);
    // both drew from the one bucket
    expect(a.lines.filter((l) => l.startsWith('admitted')).length).toBe(100);
    expect(b.lines.filter((l) => l.startsWith('admitted')).length).toBe(100);
  });

  it('the token bucket script refuses bad arguments loudly instead of letting everything through', async () => {
    const r = new Redis(URL_);
    try {
      const buckets = new RedisTokenBuckets(r, prefix());
      await expect(buckets.take('k', 10, Number.NaN, 1)).rejects.toThrow();
    } finally {
      r.disconnect();
    }
  });

  it('duplicates published five times are handled once across two consumer processes', async () => {
    const p = prefix();
    const a = worker(['idem', URL_, p, 'consumer-a']);
    const b = worker(['idem', URL_, p, 'consumer-b']);
    await waitFor(() => a.lines.includes('ready') && b.lines.includes('ready'), 'both consumers', 20_000);
    const producer = new QEEventBus({
      nodeId: 'idem-producer',
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${p}:bus` }),
    });
    await producer.start();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const e = await producer.publish({ type: 'dup.order', agentId: `shop-${i}`, data: { i } });
        ids.push(e.id);
        for (let k = 0; k < 4; k++) await producer.publish({ ...e });
      }
      const handled = () =>
        [...a.lines, ...b.lines].filter((l) => l.startsWith('handled ')).map((l) => l.slice(8));
      await waitFor(() => new Set(handled()).size === 20, 'every distinct event handled', 20_000);
      // every copy (100 entries) read and acked by the group: no duplicate can still be on its way
      await waitFor(() => groupsDrained(`${p}:bus`), 'the group to ack every copy', 20_000);
      // then three read periods of the workers (blockMs 100) for a handler line still being printed
      await quiescent(() => handled().length, { forMs: 3 * 100, what: 'the handled lines' });
      expect(handled().sort()).toEqual([...ids].sort());
      // the copies were shared by the two processes (which one handles a given id is the scheduler's
      // business; that both received copies is what makes the idempotency cross-process)
      const received = (w: { lines: string[] }) => w.lines.filter((l) => l.startsWith('received ')).length;
      expect(received(a) + received(b)).toBeGreaterThanOrEqual(100); // a copy met while its twin is running is retried later
      expect(received(a) > 0 && received(b) > 0).toBe(true);
    } finally {
      await producer.stop();
    }
  });
});
