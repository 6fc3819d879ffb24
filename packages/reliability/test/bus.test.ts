import { type AgentEvent, EventPriority, QEEventBus } from '@qe/core';
import { quiescent, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CIRCUIT_EVENTS,
  createCircuitBreaker,
  createIdempotency,
  createRateLimiter,
  createRetryMiddleware,
  DeadLetterManager,
} from '../src/index.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});
/** True once nothing is queued, running or waiting in a retry timer on `b`. */
function settled(b: QEEventBus): boolean {
  const m = b.getDetailedMetrics();
  return m.inFlight === 0 && m.queueSize === 0 && m.retryTimers === 0;
}
async function bus() {
  const b = new QEEventBus({ nodeId: `rel-${buses.length}`, retryAttempts: 0 });
  buses.push(b);
  await b.start();
  return b;
}

describe('reliability on a bus (memory transport)', () => {
  it('a poison event ends in the DLQ after exactly the configured attempts, at the backoff schedule; redrive delivers it once', async () => {
    const b = await bus();
    const calls: number[] = [];
    const planned: number[] = [];
    let poisoned = true;
    const sub = b.subscribe(
      'order.*',
      () => {
        calls.push(performance.now());
        if (poisoned) throw new Error('poison');
      },
      {
        middleware: [
          createRetryMiddleware({
            retryAttempts: 3,
            retryDelay: 20,
            maxRetryDelay: 200,
            onRetry: (i) => planned.push(i.delayMs),
          }),
        ],
      },
    );
    const e = await b.publish({ type: 'order.placed', agentId: 'shop', data: { sku: 'x' } });
    const dlq = DeadLetterManager.of(b.deadLetters);
    await waitFor(async () => (await dlq.depth()) === 1, 'the dead letter');
    expect(calls).toHaveLength(4);
    planned.forEach((d, i) => {
      expect(d).toBeLessThan(20 * 2 ** i);
      expect(calls[i + 1]! - calls[i]!).toBeGreaterThanOrEqual(d - 1);
    });
    const [dl] = await dlq.list();
    expect(dl).toMatchObject({
      reason: 'permanent',
      subscriptionId: sub.id,
      pattern: 'order.*',
      event: { id: e.id, type: 'order.placed', agentId: 'shop', data: { sku: 'x' } },
      error: { name: 'PermanentError', message: 'failed after 4 attempts: poison' },
    });
    expect(dl!.error!.stack).toContain('PermanentError');
    expect(await dlq.inspect(dl!.id)).toMatchObject({ id: dl!.id });
    await expect(dlq.inspect('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    poisoned = false;
    expect(await dlq.redrive({ id: dl!.id })).toBe(1);
    await waitFor(() => calls.length === 5, 'the redriven call');
    await waitFor(() => settled(b), 'the redriven call settled');
    // nothing runs or waits in a retry timer; a second call would be a retry, due within maxRetryDelay (200 ms)
    await quiescent(() => calls.length, { forMs: 3 * 200, what: 'the number of calls' });
    expect(calls).toHaveLength(5);
    expect(await dlq.depth()).toBe(0);
    await expect(dlq.redrive({ pattern: 'bad..pattern' })).rejects.toMatchObject({ code: 'INVALID_PATTERN' });
  });

  it('a breaker opens after the threshold, fails fast, half-opens after the timeout and closes on success, losing nothing', async () => {
    const b = await bus();
    const states: string[] = [];
    /** The handler's call count when the circuit entered each state (the first time). */
    const callsAt: Record<string, number> = {};
    let healthy = false;
    let calls = 0;
    const circuitEvents: AgentEvent[] = [];
    b.subscribe('system.circuit.*', (e) => void circuitEvents.push(e));
    const breaker = createCircuitBreaker({
      failureThreshold: 3,
      recoveryTimeout: 150,
      monitoringPeriod: 10_000,
      errorThresholdPercentage: 50,
      onStateChange: (_k, s) => {
        states.push(s);
        callsAt[s] ??= calls;
        // the downstream recovers while the circuit is open, so the trial succeeds however late the test runs
        if (s === 'open') healthy = true;
      },
    });
    b.use(breaker);
    const handled = new Set<number>();
    b.subscribe(
      'pay.*',
      (e) => {
        calls++;
        if (!healthy) throw new Error('payment service down');
        handled.add((e.data as { i: number }).i);
      },
      { retryAttempts: 1000, retryDelay: 5, maxRetryDelay: 20, maxConcurrency: 5 },
    );
    for (let i = 0; i < 10; i++) await b.publish({ type: 'pay.charge', agentId: 'a', data: { i } });
    await waitFor(() => states.includes('open'), 'the circuit to open');
    await waitFor(() => states.includes('half_open') && states.includes('closed'), 'half-open then closed');
    // open: fails fast, the handler is not called at all until the reset timeout half-opens it
    expect(callsAt.open).toBeGreaterThanOrEqual(3);
    expect(callsAt.half_open).toBe(callsAt.open);
    await waitFor(() => handled.size === 10, 'every event handled', 10_000);
    expect(await b.deadLetters!.count()).toBe(0);
    await waitFor(() => circuitEvents.length >= 3, 'state change events');
    expect(circuitEvents.map((e) => e.type)).toEqual(
      expect.arrayContaining([CIRCUIT_EVENTS.open, CIRCUIT_EVENTS.half_open, CIRCUIT_EVENTS.closed]),
    );
    expect(circuitEvents[0]!.priority).toBe(EventPriority.HIGH);
    expect(breaker.stats()[0]).toMatchObject({ state: 'closed' });
  });

  it('idempotency on a bus: an event published five times is handled once', async () => {
    const b = await bus();
    let handled = 0;
    b.subscribe('dup.*', () => void handled++, { middleware: [createIdempotency()] });
    const e = await b.publish({ type: 'dup.x', agentId: 'a', data: {} });
    for (let i = 0; i < 4; i++) await b.publish({ ...e });
    // all five copies delivered to the subscription and settled: the four duplicates were seen and skipped
    await waitFor(() => b.getDetailedMetrics().delivered === 5 && settled(b), 'all five copies settled');
    expect(handled).toBe(1);
  });

  it('a breaker given to one subscription is attached: it publishes its state changes, and unsubscribe shuts it down', async () => {
    const b = await bus();
    const circuitEvents: AgentEvent[] = [];
    b.subscribe('system.circuit.*', (e) => void circuitEvents.push(e));
    const breaker = createCircuitBreaker({
      failureThreshold: 2,
      recoveryTimeout: 200,
      monitoringPeriod: 10_000,
    });
    let calls = 0;
    const unsubscribe = b.subscribe(
      'svc.*',
      () => {
        if (++calls <= 2) throw new Error('down'); // two failures open it; the trial after 200 ms succeeds
      },
      { middleware: [breaker], retryAttempts: 5, retryDelay: 1, maxRetryDelay: 1 },
    );
    await b.publish({ type: 'svc.call', agentId: 'a', data: {} });
    await waitFor(() => circuitEvents.length === 1, 'the open event of a per-subscription breaker');
    expect(circuitEvents[0]).toMatchObject({ type: CIRCUIT_EVENTS.open, agentId: b.nodeId });
    expect(breaker.stats()).toHaveLength(1);
    expect(b.unsubscribe(unsubscribe)).toBe(true);
    expect(breaker.stats()).toEqual([]); // detached: its opossum breakers are shut down
  });

  it('a rate limiter on a bus that publishes and consumes charges each event once: maxEvents 5 admits 5', async () => {
    const b = await bus();
    b.use(createRateLimiter({ windowMs: 3_600_000, maxEvents: 5, mode: 'fail' }));
    const handled: number[][] = [[], []];
    for (const list of handled) b.subscribe('quota.*', (e) => void list.push((e.data as { i: number }).i));
    for (let i = 0; i < 5; i++) {
      await b.publish({ type: 'quota.use', agentId: 'tenant-1', data: { i } });
      // each event reaches both subscriptions before the next is published, so a consume charge would show
      await waitFor(
        () => handled.every((l) => l.length === i + 1),
        `event ${i} handled by both subscriptions`,
      );
    }
    expect(handled).toEqual([
      [0, 1, 2, 3, 4],
      [0, 1, 2, 3, 4],
    ]);
    expect(await b.deadLetters!.count()).toBe(0);
    await expect(b.publish({ type: 'quota.use', agentId: 'tenant-1', data: { i: 5 } })).rejects.toMatchObject(
      {
        code: 'RATE_LIMITED',
      },
    );
  });
});
