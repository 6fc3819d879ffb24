import { deferred, sleep, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type AgentEvent,
  ClosedError,
  ConfigError,
  createEvent,
  ErrorCodes,
  EventPriority,
  MemoryBroker,
  MemoryTransport,
  type Middleware,
  NotConnectedError,
  PermanentError,
  QEEventBus,
  type QEEventBusConfig,
  QueueFullError,
  RetryLaterError,
  ValidationError,
} from '../src/index.js';
import { settled } from './helpers.js';

const buses: QEEventBus[] = [];
async function makeBus(config: Partial<QEEventBusConfig> = {}) {
  const bus = new QEEventBus({ nodeId: `n${buses.length + 1}`, retryDelay: 5, maxRetryDelay: 20, ...config });
  buses.push(bus);
  await bus.start();
  return bus;
}
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

const ev = (type: string, data: unknown = {}, priority?: EventPriority) =>
  ({ type, agentId: 'agent-1', data, ...(priority === undefined ? {} : { priority }) }) as const;

describe('QEEventBus lifecycle and publishing', () => {
  it('refuses to publish before start and after stop, with typed errors', async () => {
    const bus = new QEEventBus({ nodeId: 'x' });
    await expect(bus.publish(ev('a.b'))).rejects.toBeInstanceOf(NotConnectedError);
    expect(bus.isConnected()).toBe(false);
    await bus.start();
    expect(bus.isConnected()).toBe(true);
    await bus.stop();
    expect(bus.isConnected()).toBe(false);
    await expect(bus.publish(ev('a.b'))).rejects.toBeInstanceOf(ClosedError);
  });

  it('validates config with the setting named', () => {
    expect(() => new QEEventBus({ nodeId: '' })).toThrow(ConfigError);
    expect(() => new QEEventBus({ nodeId: 'ok', backpressure: { onFull: 'maybe' as 'wait' } })).toThrow(
      /backpressure.onFull/,
    );
    expect(() => new QEEventBus({ nodeId: 'ok', retryAttempts: -1 })).toThrow(/retryAttempts/);
  });

  it('publish returns the completed, frozen event; invalid events are rejected before anything is sent', async () => {
    const bus = await makeBus();
    const seen: AgentEvent[] = [];
    bus.subscribe('**', (e) => void seen.push(e));
    const e = await bus.publish(ev('task.create', { x: 1 }));
    expect(e.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Object.isFrozen(e)).toBe(true);
    const err = await bus.publish({ type: 'Bad Type', agentId: 'a', data: 1 }).catch((x) => x);
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.field).toBe('type');
    await waitFor(() => seen.length === 1 && settled(bus), 'the one valid event handled');
    // the invalid one never reached the transport
    expect(bus.getDetailedMetrics().transport.published).toBe(1);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBe(e);
  });

  it('publishBatch is all or nothing', async () => {
    const bus = await makeBus();
    const seen: string[] = [];
    bus.subscribe('**', (e) => void seen.push(e.type));
    const err = await bus
      .publishBatch([ev('a.one'), ev('a.two'), { type: 'a.three', agentId: '', data: 1 }])
      .catch((x) => x);
    expect(err.code).toBe(ErrorCodes.VALIDATION);
    expect(err.field).toBe('events[2].agentId');
    const out = await bus.publishBatch([ev('a.one'), ev('a.two')]);
    expect(out).toHaveLength(2);
    await waitFor(() => seen.length === 2 && settled(bus), 'the valid batch handled');
    expect(bus.getDetailedMetrics().transport.published).toBe(2); // nothing of the rejected batch
    expect(seen).toEqual(['a.one', 'a.two']);
  });
});

describe('subscriptions', () => {
  it('broadcast reaches every subscription on every bus sharing a broker; groups get each event once', async () => {
    const broker = new MemoryBroker();
    const a = await makeBus({ transport: new MemoryTransport({ broker }) });
    const b = await makeBus({ transport: new MemoryTransport({ broker }) });
    const got: Record<string, number> = {};
    const count = (k: string) => () => void (got[k] = (got[k] ?? 0) + 1);
    a.subscribe('job.*', count('a-broadcast'));
    b.subscribe('job.*', count('b-broadcast'));
    a.subscribe('job.*', count('a-worker'), { group: 'workers' });
    b.subscribe('job.*', count('b-worker'), { group: 'workers' });
    for (let i = 0; i < 100; i++) await a.publish(ev('job.run', { i }));
    await waitFor(
      () => (got['a-worker'] ?? 0) + (got['b-worker'] ?? 0) === 100 && got['b-broadcast'] === 100,
    );
    expect(got['a-broadcast']).toBe(100);
    expect(got['a-worker']).toBe(50);
    expect(got['b-worker']).toBe(50);
  });

  it('supports several patterns, once, filter and minPriority', async () => {
    const bus = await makeBus();
    const multi: string[] = [];
    const once: string[] = [];
    const filtered: string[] = [];
    const urgent: string[] = [];
    bus.subscribe(['billing.*', 'payment.**'], (e) => void multi.push(e.type));
    const u = bus.subscribe('**', (e) => void once.push(e.type), { once: true });
    bus.subscribe('**', (e) => void filtered.push(e.type), {
      filter: (e) => (e.data as { keep?: boolean }).keep === true,
    });
    bus.subscribe('**', (e) => void urgent.push(e.type), { minPriority: EventPriority.HIGH });
    await bus.publish(ev('billing.charge', { keep: true }, EventPriority.CRITICAL));
    await bus.publish(ev('payment.card.ok'));
    await bus.publish(ev('other.thing', {}, EventPriority.HIGH));
    await bus.publish(ev('billing.x.y', {}, EventPriority.LOW));
    await waitFor(() => multi.length === 2 && urgent.length === 2 && settled(bus), 'all four settled');
    expect(multi).toEqual(['billing.charge', 'payment.card.ok']);
    expect(once).toEqual(['billing.charge']);
    expect(u()).toBe(false); // already gone
    expect(filtered).toEqual(['billing.charge']);
    expect(urgent).toEqual(['billing.charge', 'other.thing']);
  });

  it('rejects bad patterns and options with typed errors', async () => {
    const bus = await makeBus();
    expect(() => bus.subscribe('a..b', () => {})).toThrow(
      expect.objectContaining({ code: 'INVALID_PATTERN' }),
    );
    expect(() => bus.subscribe([], () => {})).toThrow(ValidationError);
    expect(() => bus.subscribe('a', () => {}, { maxConcurrency: 0 })).toThrow(/maxConcurrency/);
    expect(() => bus.subscribe('a', () => {}, { group: 'has space' })).toThrow(/group/);
    expect(() => bus.subscribe('a', 'nope' as unknown as () => void)).toThrow(/handler/);
  });

  it('unsubscribe returns true once, then false, and stops deliveries', async () => {
    const bus = await makeBus();
    const seen: number[] = [];
    const u = bus.subscribe('t.*', (e) => void seen.push((e.data as { i: number }).i));
    await bus.publish(ev('t.a', { i: 1 }));
    await waitFor(() => seen.length === 1);
    expect(bus.unsubscribe(u.id)).toBe(true);
    expect(bus.unsubscribe(u.id)).toBe(false);
    expect(u()).toBe(false);
    await bus.publish(ev('t.a', { i: 2 }));
    // the publish handed its deliveries over before it resolved: once settled, nothing more can come
    await waitFor(() => settled(bus), 'the bus to settle');
    expect(seen).toEqual([1]);
  });

  it('pause holds events and resume delivers them in order, losing none', async () => {
    const bus = await makeBus();
    const seen: number[] = [];
    const u = bus.subscribe('t.*', (e) => void seen.push((e.data as { i: number }).i));
    expect(bus.pause(u.id)).toBe(true);
    for (let i = 0; i < 20; i++) await bus.publish(ev('t.a', { i }));
    // all twenty are here, parked for the paused subscription
    await waitFor(() => bus.getDetailedMetrics().queueSize === 20, 'twenty parked events');
    expect(seen).toEqual([]);
    expect(bus.resume(u.id)).toBe(true);
    await waitFor(() => seen.length === 20);
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(bus.pause('nope')).toBe(false);
  });

  it('delivers one publisher’s events of one priority in publish order', async () => {
    const bus = await makeBus();
    const seen: number[] = [];
    bus.subscribe('seq.*', async (e) => {
      if ((e.data as { i: number }).i % 7 === 0) await sleep(1);
      seen.push((e.data as { i: number }).i);
    });
    const n = 300;
    await Promise.all(Array.from({ length: n }, (_, i) => bus.publish(ev('seq.x', { i }))));
    await waitFor(() => seen.length === n);
    expect(seen).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('a CRITICAL event overtakes a BULK backlog, and BULK still progresses', async () => {
    const bus = await makeBus({ backpressure: { maxQueueSize: 50_000 } });
    const order: string[] = [];
    bus.subscribe('work.*', async (e) => {
      order.push(e.type);
      await sleep(0);
    });
    const pubs: Promise<unknown>[] = [];
    for (let i = 0; i < 2000; i++) pubs.push(bus.publish(ev('work.bulk', { i }, EventPriority.BULK)));
    pubs.push(bus.publish(ev('work.critical', {}, EventPriority.CRITICAL)));
    await Promise.all(pubs);
    await waitFor(() => order.includes('work.critical'));
    const pos = order.indexOf('work.critical');
    expect(pos).toBeLessThan(10);
    // mixed load: NORMAL keeps coming, BULK still gets its share
    for (let i = 0; i < 200; i++) void bus.publish(ev('work.normal', { i }, EventPriority.NORMAL));
    await waitFor(() => order.filter((t) => t === 'work.normal').length === 200, 'normal drained', 10_000);
    const bulkDuringNormal = order.slice(pos + 1).filter((t) => t === 'work.bulk').length;
    expect(bulkDuringNormal).toBeGreaterThan(0);
  });

  it('keeps matching right with 2,000 subscriptions across two buses', async () => {
    const broker = new MemoryBroker();
    const a = await makeBus({ transport: new MemoryTransport({ broker }) });
    const b = await makeBus({ transport: new MemoryTransport({ broker }) });
    const hits = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const bus = i % 2 === 0 ? a : b;
      bus.subscribe(`svc${i}.*`, (e) => void hits.set(e.type, (hits.get(e.type) ?? 0) + 1));
    }
    let wild = 0;
    b.subscribe('**', () => void wild++);
    // no await of `ready`: on the memory transport a subscription is live as soon as subscribe returns
    for (let i = 0; i < 2000; i += 97) await a.publish(ev(`svc${i}.ping`));
    await waitFor(() => hits.size === 21 && wild === 21);
    for (const [, n] of hits) expect(n).toBe(1);
  });

  it('runs up to maxConcurrency handlers at once', async () => {
    const bus = await makeBus();
    let running = 0;
    let peak = 0;
    let done = 0;
    bus.subscribe(
      'c.*',
      async () => {
        peak = Math.max(peak, ++running);
        await sleep(10);
        running--;
        done++;
      },
      { maxConcurrency: 4 },
    );
    for (let i = 0; i < 20; i++) await bus.publish(ev('c.x'));
    await waitFor(() => done === 20);
    expect(peak).toBe(4);
  });
});

describe('retries, timeouts and dead letters', () => {
  it('retries with backoff, then dead-letters with the error, attempts and subscription', async () => {
    const bus = await makeBus({ retryAttempts: 2, retryDelay: 10 });
    const attempts: { at: number; attempt: number }[] = [];
    const dead: unknown[] = [];
    const errors: Error[] = [];
    bus.on('deadLetter', (d) => dead.push(d));
    bus.on('error', (e) => errors.push(e));
    const u = bus.subscribe('poison.*', (_e, ctx) => {
      attempts.push({ at: Date.now(), attempt: ctx.attempt });
      throw new Error('boom');
    });
    const e = await bus.publish(ev('poison.pill', { payload: 'keep me' }));
    await waitFor(() => dead.length === 1);
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2, 3]);
    // backoff: the second gap is not shorter than half the first delay ceiling
    expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(4);
    expect(attempts[2]!.at - attempts[1]!.at).toBeGreaterThanOrEqual(9);
    const [dl] = await bus.deadLetters!.list();
    expect(dl).toMatchObject({
      reason: 'max_attempts',
      attempts: 3,
      subscriptionId: u.id,
      error: { message: 'boom', name: 'Error' },
      event: { id: e.id, data: { payload: 'keep me' } },
    });
    expect(dl!.error!.stack).toContain('boom');
    expect(errors[0]).toMatchObject({ code: 'HANDLER' });
    expect(bus.getMetrics().errorCount).toBe(1);
  });

  it('PermanentError skips retries; redrive delivers the dead letter once more to that subscription only', async () => {
    const bus = await makeBus({ retryAttempts: 5 });
    let calls = 0;
    let fail = true;
    const other: string[] = [];
    bus.subscribe('order.*', (e) => void other.push(e.id));
    bus.subscribe('order.*', () => {
      calls++;
      if (fail) throw new PermanentError('bad order');
    });
    await bus.publish(ev('order.placed'));
    await waitFor(() => calls === 1 && other.length === 1);
    await waitFor(() => bus.getDetailedMetrics().deadLettered === 1);
    expect(await bus.deadLetters!.count()).toBe(1);
    fail = false;
    expect(await bus.deadLetters!.redrive()).toBe(1);
    await waitFor(() => calls === 2 && settled(bus), 'the redriven call settled');
    expect(calls).toBe(2);
    expect(other).toHaveLength(1); // the subscriber that succeeded is not bothered again
    expect(await bus.deadLetters!.count()).toBe(0);
  });

  it('a redrive reaches only the binding that dead-lettered, on any node', async () => {
    const broker = new MemoryBroker();
    const a = await makeBus({ transport: new MemoryTransport({ broker }), retryAttempts: 0 });
    const b = await makeBus({ transport: new MemoryTransport({ broker }), retryAttempts: 0 });
    const seen: string[] = [];
    let fail = true;
    a.subscribe('r.*', () => void seen.push('a-broadcast'));
    a.subscribe('r.*', () => void seen.push('a-group'), { group: 'g' });
    b.subscribe('r.*', () => {
      seen.push('b-broadcast');
      if (fail) throw new Error('b fails');
    });
    await a.publish(ev('r.x'));
    await waitFor(() => seen.length === 3);
    const [dl] = await b.deadLetters!.list();
    expect(dl!.binding).toBe(`broadcast@${b.nodeId}`);
    fail = false;
    seen.length = 0;
    expect(await a.deadLetters!.redrive()).toBe(1);
    await waitFor(() => seen.length === 1 && settled(a) && settled(b), 'the redrive settled on both nodes');
    expect(seen).toEqual(['b-broadcast']);
  });

  it('a dead letter counts the attempts a retry middleware reports (details.attempts)', async () => {
    const bus = await makeBus({ retryAttempts: 0 });
    bus.subscribe('mw.*', () => {
      throw new PermanentError('gave up after 4 attempts', { details: { attempts: 4 } });
    });
    await bus.publish(ev('mw.x'));
    await waitFor(() => bus.getDetailedMetrics().deadLettered === 1);
    const [dl] = await bus.deadLetters!.list();
    expect(dl!.attempts).toBe(4);
  });

  it('times out slow handlers with TIMEOUT and retries them', async () => {
    const bus = await makeBus({ retryAttempts: 1 });
    const attempts: number[] = [];
    const dead: { error?: { code?: string } }[] = [];
    bus.on('deadLetter', (d) => dead.push(d));
    bus.subscribe(
      'slow.*',
      async (_e, ctx) => {
        attempts.push(ctx.attempt);
        await sleep(200); // simulated slow work, ten times the timeout
      },
      { timeout: 20 },
    );
    await bus.publish(ev('slow.op'));
    await waitFor(() => dead.length === 1);
    expect(attempts).toEqual([1, 2]);
    expect(dead[0]!.error!.code).toBe('TIMEOUT');
  });

  it('RetryLaterError postpones without using an attempt', async () => {
    const bus = await makeBus({ retryAttempts: 0 });
    let calls = 0;
    bus.subscribe('later.*', () => {
      if (++calls < 3) throw new RetryLaterError(5, 'circuit open');
    });
    await bus.publish(ev('later.x'));
    await waitFor(() => calls === 3 && settled(bus), 'the third call settled');
    expect(calls).toBe(3);
    expect(bus.getDetailedMetrics().deadLettered).toBe(0);
  });

  it('a throwing filter or a handler throwing a string does not crash the bus', async () => {
    const bus = await makeBus({ retryAttempts: 0 });
    const errors: Error[] = [];
    bus.on('error', (e) => errors.push(e));
    const ok: string[] = [];
    bus.subscribe('x.*', () => {}, {
      filter: () => {
        throw new Error('bad filter');
      },
    });
    bus.subscribe('x.*', () => {
      throw 'a string';
    });
    bus.subscribe('x.*', (e) => void ok.push(e.type));
    await bus.publish(ev('x.y'));
    await waitFor(() => ok.length === 1 && errors.length === 2);
    expect(errors.map((e) => (e as { code?: string }).code).sort()).toEqual(['HANDLER', 'HANDLER']);
  });
});

describe('backpressure', () => {
  it('onFull: fail rejects with QUEUE_FULL and loses nothing already accepted', async () => {
    const bus = await makeBus({ backpressure: { maxQueueSize: 5, onFull: 'fail' } });
    const gate = deferred();
    const seen: number[] = [];
    bus.subscribe('bp.*', async (e) => {
      await gate.promise;
      seen.push((e.data as { i: number }).i);
    });
    for (let i = 0; i < 5; i++) await bus.publish(ev('bp.x', { i }));
    const err = await bus.publish(ev('bp.x', { i: 99 })).catch((x) => x);
    expect(err).toBeInstanceOf(QueueFullError);
    expect(err.code).toBe('QUEUE_FULL');
    gate.resolve();
    await waitFor(() => seen.length === 5);
    expect(seen).toEqual([0, 1, 2, 3, 4]);
  });

  it('onFull: wait makes publish wait for room', async () => {
    const bus = await makeBus({ backpressure: { maxQueueSize: 3 } });
    const gate = deferred();
    let handled = 0;
    bus.subscribe('bp.*', async () => {
      await gate.promise;
      handled++;
    });
    for (let i = 0; i < 3; i++) await bus.publish(ev('bp.x'));
    let fourth = false;
    const p = bus.publish(ev('bp.x')).then(() => (fourth = true));
    // the publish is parked among the bus's waiting publishers (a private field, read here as the signal)
    await waitFor(
      () => (bus as unknown as { waiters: unknown[] }).waiters.length === 1,
      'the fourth publish to wait for room',
    );
    expect(fourth).toBe(false);
    gate.resolve();
    await p;
    await waitFor(() => handled === 4);
  });

  it('sheds only configured low priorities while full, and counts them', async () => {
    const bus = await makeBus({ backpressure: { maxQueueSize: 2, shedPriority: EventPriority.LOW } });
    const gate = deferred();
    const seen: string[] = [];
    bus.subscribe('s.*', async (e) => {
      await gate.promise;
      seen.push(e.type);
    });
    await bus.publish(ev('s.one'));
    await bus.publish(ev('s.two'));
    await bus.publish(ev('s.low', {}, EventPriority.LOW));
    await bus.publish(ev('s.bulk', {}, EventPriority.BULK));
    const m = bus.getDetailedMetrics();
    expect(m.shed).toBe(2);
    expect(m.shedByPriority).toMatchObject({ low: 1, bulk: 1 });
    gate.resolve();
    await waitFor(() => seen.length === 2);
    expect(seen).toEqual(['s.one', 's.two']);
  });
});

describe('batches, middleware, stop and metrics', () => {
  it('subscribeBatch delivers by size and by timeout', async () => {
    const bus = await makeBus();
    const batches: number[] = [];
    bus.subscribeBatch('b.*', (events) => void batches.push(events.length), {
      batchSize: 10,
      batchTimeoutMs: 30,
    });
    await bus.publishBatch(Array.from({ length: 25 }, (_, i) => ev('b.x', { i })));
    await waitFor(() => batches.reduce((a, b) => a + b, 0) === 25);
    expect(batches.slice(0, 2)).toEqual([10, 10]);
    expect(batches[2]).toBe(5);
  });

  it('middleware wraps publish and consume, onion style', async () => {
    const trail: string[] = [];
    const mw = (name: string): Middleware => ({
      name,
      publish: (next) => async (events, ctx) => {
        trail.push(`${name}:pub>`);
        await next(events, ctx);
        trail.push(`${name}:pub<`);
      },
      consume: (next) => async (event, ctx) => {
        trail.push(`${name}:con>`);
        await next(event, ctx);
        trail.push(`${name}:con<`);
      },
    });
    const bus = await makeBus({ middleware: [mw('outer')] });
    bus.use(mw('inner'));
    let handled = false;
    bus.subscribe('m.*', () => {
      trail.push('handler');
      handled = true;
    });
    await bus.publish(ev('m.x'));
    await waitFor(() => handled && trail.length === 9);
    expect(trail.filter((t) => t.includes(':pub'))).toEqual([
      'outer:pub>',
      'inner:pub>',
      'inner:pub<',
      'outer:pub<',
    ]);
    expect(trail.filter((t) => !t.includes(':pub'))).toEqual([
      'outer:con>',
      'inner:con>',
      'handler',
      'inner:con<',
      'outer:con<',
    ]);
  });

  it('stop drains in-flight handlers before closing', async () => {
    const bus = await makeBus();
    let finished = 0;
    bus.subscribe(
      'd.*',
      async () => {
        await sleep(30);
        finished++;
      },
      { maxConcurrency: 10 },
    );
    for (let i = 0; i < 10; i++) await bus.publish(ev('d.x'));
    await bus.stop();
    expect(finished).toBe(10);
    expect(bus.isConnected()).toBe(false);
  });

  it('getMetrics returns exactly the spec 000 shape with latencies from a histogram', async () => {
    const bus = await makeBus();
    let n = 0;
    bus.subscribe('x.*', () => void n++);
    for (let i = 0; i < 200; i++) await bus.publish(ev('x.y'));
    await waitFor(() => n === 200);
    const m = bus.getMetrics();
    expect(Object.keys(m).sort()).toEqual(
      [
        'eventsProcessed',
        'eventsPerSecond',
        'averageLatency',
        'maxLatency',
        'minLatency',
        'p95Latency',
        'p99Latency',
        'errorCount',
        'errorRate',
        'queueSize',
        'memoryUsage',
        'activeConnections',
        'throughput',
        'timestamp',
      ].sort(),
    );
    expect(m.eventsProcessed).toBe(200);
    expect(m.minLatency).toBeLessThanOrEqual(m.p95Latency);
    expect(m.p95Latency).toBeLessThanOrEqual(m.p99Latency);
    expect(m.p99Latency).toBeLessThanOrEqual(m.maxLatency);
    expect(m.memoryUsage).toBeGreaterThan(0);
    const d = bus.getDetailedMetrics();
    expect(d.handlerStats[0]).toMatchObject({ processed: 200, failed: 0 });
    expect(d.queueSizes).toEqual({ critical: 0, high: 0, normal: 0, low: 0, bulk: 0 });
    const h = await bus.healthCheck();
    expect(h.status).toBe('healthy');
  });

  it('getRecentEvents filters by pattern, limit and since (oldest first)', async () => {
    const bus = await makeBus();
    for (let i = 0; i < 5; i++) await bus.publish(ev('user.login', { i }));
    await bus.publish(ev('billing.charge'));
    const recent = await bus.getRecentEvents({ pattern: 'user.*', limit: 3 });
    expect(recent.map((e) => (e.data as { i: number }).i)).toEqual([2, 3, 4]);
    expect(await bus.getRecentEvents({ since: Date.now() + 1000 })).toEqual([]);
    await expect(bus.getRecentEvents({ pattern: 'bad..p' })).rejects.toMatchObject({
      code: 'INVALID_PATTERN',
    });
  });

  it('history and replay by correlation id: one transaction, in publish order, limit counts matches', async () => {
    const bus = await makeBus();
    for (let i = 0; i < 6; i++)
      await bus.publish(
        createEvent('order.step')
          .agentId('saga')
          .correlationId(i % 2 === 0 ? 'tx-even' : 'tx-odd')
          .data({ i })
          .build(),
      );
    await bus.publish(ev('order.step', { i: 99 })); // no correlation id at all
    const even = await bus.getRecentEvents({ correlationId: 'tx-even' });
    expect(even.map((e) => (e.data as { i: number }).i)).toEqual([0, 2, 4]);
    const lastTwo = await bus.getRecentEvents({ correlationId: 'tx-odd', limit: 2, pattern: 'order.*' });
    expect(lastTwo.map((e) => (e.data as { i: number }).i)).toEqual([3, 5]);
    const replayed: number[] = [];
    const n = await bus.replay({ correlationId: 'tx-odd', limit: 2 }, (e) => {
      replayed.push((e.data as { i: number }).i);
    });
    expect([n, replayed]).toEqual([2, [1, 3]]);
    await expect(bus.getRecentEvents({ correlationId: '' })).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(bus.replay({ correlationId: 7 as never }, () => {})).rejects.toMatchObject({
      code: 'VALIDATION',
    });
  });

  it('createEvent output publishes as-is', async () => {
    const bus = await makeBus();
    const seen: AgentEvent[] = [];
    bus.subscribe('agent.**', (e) => void seen.push(e));
    const e = createEvent('agent.task.complete').agentId('a').data({ ok: true }).build();
    await bus.publish(e);
    await waitFor(() => seen.length === 1);
    expect(seen[0]).toBe(e);
  });
});

describe('a transport that cannot open a subscription', () => {
  it("rejects the subscription's ready with a TRANSPORT error that says subscribe, and reports it", async () => {
    class Refusing extends MemoryTransport {
      override consume(): never {
        throw new Error('NOGROUP no such key');
      }
    }
    const bus = await makeBus({ transport: new Refusing() });
    const errors: Error[] = [];
    bus.on('error', (e) => void errors.push(e as Error));
    const err = await bus.subscribe('a.*', () => {}).ready.catch((e: unknown) => e as Error);
    expect(err).toMatchObject({ code: 'TRANSPORT' });
    expect((err as Error).message).toBe('transport memory failed to subscribe: NOGROUP no such key');
    expect(errors.map((e) => e.message)).toEqual([(err as Error).message]);
  });
});
