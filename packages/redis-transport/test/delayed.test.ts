import { QEEventBus, type QEEventBusConfig, RETRY_ATTEMPT_KEY } from '@qe/core';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStreamsTransport, type RedisTransportOptions } from '../src/index.js';
import { deletePrefix, REDIS_URL, startFixture, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function redis(): Redis {
  const r = new Redis(REDIS_URL);
  cleanups.push(() => void r.disconnect());
  return r;
}

async function bus(nodeId: string, options: RedisTransportOptions, config: Partial<QEEventBusConfig> = {}) {
  const b = new QEEventBus({
    nodeId,
    transport: new RedisStreamsTransport({ url: REDIS_URL, blockMs: 100, delayedPollMs: 50, ...options }),
    shutdownTimeoutMs: 500,
    ...config,
  });
  b.on('error', () => {});
  await b.start();
  cleanups.push(() => b.stop().catch(() => {}));
  return b;
}

const pendingOf = async (r: Redis, stream: string, group: string) =>
  Number(((await r.xpending(stream, group)) as [number])[0]);

describe('durable delayed retries (the partition delayed set)', () => {
  it('a shared broadcast entry: the failing subscription is retried from Redis, nothing waits in the bus, other bindings are not bothered', async () => {
    const keyPrefix = uniquePrefix('dly-shared');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = redis();
    // the bus's own backoff: 600 ms with full jitter, so 300..600 ms, all of it "long"
    const a = await bus(
      `dly-a-${process.pid}`,
      { keyPrefix },
      { retryAttempts: 3, retryDelay: 600, maxRetryDelay: 600, durableRetryAboveMs: 100 },
    );
    const b = await bus(`dly-b-${process.pid}`, { keyPrefix });
    const failing: number[] = [];
    const other: number[] = [];
    const elsewhere: number[] = [];
    await a.subscribe('job.*', (_e, ctx) => {
      failing.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first call fails');
    }).ready;
    await a.subscribe('job.*', (_e, ctx) => void other.push(ctx.attempt)).ready;
    await b.subscribe('job.*', (_e, ctx) => void elsewhere.push(ctx.attempt)).ready;
    const t = a.transport as RedisStreamsTransport;
    const started = Date.now();
    await a.publish({ type: 'job.run', agentId: 'x', data: {} });
    await waitFor(async () => (await r.zcard(t.keys.delayed(0))) === 1, 'the scheduled retry in Redis');
    // the bus counts it when Redis's reply reaches it, which can be just after another client sees the member
    await waitFor(() => a.getDetailedMetrics().durableRetries === 1, 'the bus to count the stored retry');
    expect(a.getDetailedMetrics().retryTimers).toBe(0);
    // the shared entry itself is acknowledged: the retry is the only copy
    await waitFor(
      async () => (await pendingOf(r, t.keys.stream(0, 2), `bc:dly-a-${process.pid}:broadcast`)) === 0,
      'the shared entry acked',
    );
    await waitFor(() => failing.length === 2, 'the retried call');
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await sleep(300);
    expect(failing).toEqual([1, 2]);
    expect(other).toEqual([1]);
    expect(elsewhere).toEqual([1]);
    expect(await r.zcard(t.keys.delayed(0))).toBe(0);
    expect(t.counters).toMatchObject({ scheduled: 1 });
  });

  it('two identical events scheduled at once stay two retries', async () => {
    const keyPrefix = uniquePrefix('dly-twins');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = redis();
    const a = await bus(`dly-twins-${process.pid}`, { keyPrefix, delayedPollMs: 10_000 });
    const t = a.transport as RedisStreamsTransport;
    const event = {
      id: 'same-id',
      type: 'job.run',
      agentId: 'x',
      timestamp: Date.now(),
      priority: 1,
      data: {},
    } as const;
    const target = { binding: 'broadcast@nobody', subscriptionId: 'nobody:sub-1', attempt: 2 };
    await t.scheduleRetry(event, target, 0);
    await t.scheduleRetry(event, target, 0);
    expect(await r.zcard(t.keys.delayed(0))).toBe(2);
    expect(await t.promoteDue()).toBe(2);
    expect(await r.zcard(t.keys.delayed(0))).toBe(0);
    // into the stream of the event's priority, tagged for its target, with a publish time
    const rows = await r.xrange(t.keys.stream(0, 1), '-', '+');
    expect(rows).toHaveLength(2);
    const decoded = t.decode(Buffer.from(rows[0]![1][1]!));
    expect(decoded?.metadata).toMatchObject({ [RETRY_ATTEMPT_KEY]: 2, redriveBinding: 'broadcast@nobody' });
    expect(Math.abs(Number(rows[0]![1][3]) - Date.now())).toBeLessThan(5000);
  });

  it('an exclusive nack(long delay) is acked and scheduled: no member claims it early, one gets it after the delay', async () => {
    const keyPrefix = uniquePrefix('dly-nack');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = redis();
    const calls: { node: string; attempt: number; at: number }[] = [];
    const members = [];
    for (const n of ['m1', 'm2']) {
      // claimIdleMs far shorter than the delay: the old in-memory timer let recover() take it after 100 ms
      const m = await bus(`dly-${n}-${process.pid}`, { keyPrefix, claimIdleMs: 100 });
      await m.subscribe(
        'job.*',
        (_e, ctx) => {
          calls.push({ node: n, attempt: ctx.attempt, at: Date.now() });
          if (ctx.attempt === 1) ctx.delivery.nack(1500);
        },
        { group: 'workers' },
      ).ready;
      members.push(m);
    }
    const t = members[0]!.transport as RedisStreamsTransport;
    await members[0]!.publish({ type: 'job.run', agentId: 'x', data: {} });
    await waitFor(() => calls.length === 1, 'the first call');
    await waitFor(async () => (await r.zcard(t.keys.delayed(0))) === 1, 'the scheduled retry');
    expect(await pendingOf(r, t.keys.stream(0, 2), 'g:group:workers:job.*')).toBe(0);
    await sleep(1100);
    expect(calls).toHaveLength(1);
    await waitFor(() => calls.length === 2, 'the retry after the delay');
    expect(calls[1]!.attempt).toBe(2);
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(1400);
    await sleep(400);
    expect(calls).toHaveLength(2);
  });

  it('a scheduled retry survives SIGKILL of the process that scheduled it and runs on another member with its attempt', async () => {
    const keyPrefix = uniquePrefix('dly-crash');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = redis();
    const childCalls: number[] = [];
    let ready = false;
    const child = startFixture('retrier.ts', [REDIS_URL, keyPrefix, `dly-child-${process.pid}`], (line) => {
      if (line === 'ready') ready = true;
      else if (line.startsWith('called ')) childCalls.push(Number(line.slice(7)));
    });
    cleanups.push(() => void child.kill('SIGKILL'));
    await waitFor(() => ready, 'the child bus', 20_000);
    const producer = await bus(`dly-producer-${process.pid}`, { keyPrefix });
    const t = producer.transport as RedisStreamsTransport;
    await producer.publish({ type: 'retry.work', agentId: 'x', data: { n: 1 } });
    await waitFor(() => childCalls.length === 1, 'the failing call in the child');
    await waitFor(async () => (await r.zcard(t.keys.delayed(0))) === 1, 'the retry stored in Redis');
    child.kill('SIGKILL');
    await new Promise((res) => child.once('exit', res));
    // a new member of the same group, in this process, after the scheduler died
    const survivor = await bus(`dly-survivor-${process.pid}`, { keyPrefix });
    const seen: number[] = [];
    await survivor.subscribe('retry.*', (_e, ctx) => void seen.push(ctx.attempt), { group: 'g' }).ready;
    await waitFor(() => seen.length === 1, 'the retry handled by the survivor', 10_000);
    expect(seen).toEqual([2]);
    expect(childCalls).toEqual([1]);
    await sleep(300);
    expect(seen).toEqual([2]);
    expect(await r.zcard(t.keys.delayed(0))).toBe(0);
  });
});
