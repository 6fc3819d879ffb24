import { until, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import {
  type AgentEvent,
  MemoryTransport,
  QEEventBus,
  type QEEventBusConfig,
  RETRY_ATTEMPT_KEY,
  RetryLaterError,
  type RetryTarget,
  retryEventFor,
  TransportError,
} from '../src/index.js';
import { settled } from './helpers.js';

/**
 * A memory transport that can schedule retries, standing in for a durable
 * backend: it records each call and republishes the tagged event after the
 * delay (the memory transport itself has no `scheduleRetry`).
 */
class SchedulingTransport extends MemoryTransport {
  readonly calls: { event: AgentEvent; target: RetryTarget; delayMs: number }[] = [];
  fail = false;
  async scheduleRetry(event: AgentEvent, target: RetryTarget, delayMs: number): Promise<void> {
    this.calls.push({ event, target, delayMs });
    if (this.fail) throw new Error('backend unavailable');
    // a retry due after the bus stopped is dropped, as the memory transport's at-most-once allows
    setTimeout(() => this.publish([retryEventFor(event, target)]).catch(() => {}), delayMs);
  }
}

const buses: QEEventBus[] = [];
async function makeBus(transport: SchedulingTransport, config: Partial<QEEventBusConfig> = {}) {
  const bus = new QEEventBus({ nodeId: 'dr', transport, retryDelay: 40, maxRetryDelay: 40, ...config });
  buses.push(bus);
  await bus.start();
  return bus;
}
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

describe('durable retries through Transport.scheduleRetry', () => {
  it('a shared delivery: only the failing subscription is retried, through the transport, with its attempt', async () => {
    const transport = new SchedulingTransport();
    const bus = await makeBus(transport, { durableRetryAboveMs: 10 });
    const failing: number[] = [];
    const other: number[] = [];
    const a = bus.subscribe('job.*', (_e, ctx) => {
      failing.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first call fails');
    });
    bus.subscribe('job.*', (_e, ctx) => void other.push(ctx.attempt));
    await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => transport.calls.length === 1, 'the scheduled retry');
    expect(transport.calls[0]!.target).toEqual({ binding: 'broadcast@dr', subscriptionId: a.id, attempt: 2 });
    expect(transport.calls[0]!.delayMs).toBeGreaterThanOrEqual(10);
    // nothing waits in the bus: the shared delivery is settled, no retry timer
    expect(bus.getDetailedMetrics()).toMatchObject({ retryTimers: 0, durableRetries: 1, queueSize: 0 });
    await waitFor(() => failing.length === 2 && settled(bus), 'the retried call settled');
    expect(transport.calls).toHaveLength(1); // no further retry was scheduled, so no further call can come
    expect(failing).toEqual([1, 2]);
    expect(other).toEqual([1]);
  });

  it('the carried attempt counts: a subscription dead-letters after exactly its attempts', async () => {
    const transport = new SchedulingTransport();
    const bus = await makeBus(transport, { durableRetryAboveMs: 10, retryAttempts: 2 });
    const attempts: number[] = [];
    bus.subscribe('job.*', (_e, ctx) => {
      attempts.push(ctx.attempt);
      throw new Error('always');
    });
    bus.subscribe('job.*', () => {});
    let dead = 0;
    bus.on('deadLetter', () => void dead++);
    const e = await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => dead === 1, 'the dead letter');
    // the store add follows the event
    const [dl] = await until(
      () => transport.deadLetters.list(),
      (l) => l.length === 1,
      'the dead letter in the store',
    );
    expect(attempts).toEqual([1, 2, 3]);
    expect(dl).toMatchObject({ reason: 'max_attempts', attempts: 3, event: { id: e.id } });
    expect(transport.calls.map((c) => c.target.attempt)).toEqual([2, 3]);
    // a redrive starts a fresh round: the carried attempt is not kept
    await transport.deadLetters.redrive();
    await waitFor(() => attempts.length === 4, 'the redriven call');
    expect(attempts[3]).toBe(1);
  });

  it('a RetryLaterError reporting details.attempts is scheduled as the next attempt', async () => {
    const transport = new SchedulingTransport();
    const bus = await makeBus(transport, { durableRetryAboveMs: 10 });
    const seen: { attempt: number; carried: unknown }[] = [];
    bus.subscribe('job.*', (e, ctx) => {
      seen.push({ attempt: ctx.attempt, carried: e.metadata?.[RETRY_ATTEMPT_KEY] });
      if (seen.length === 1) throw new RetryLaterError(20, 'later', { details: { attempts: 3 } });
    });
    bus.subscribe('job.*', () => {});
    await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => seen.length === 2, 'the retried call');
    expect(transport.calls[0]!.target.attempt).toBe(4);
    expect(seen[1]).toEqual({ attempt: 4, carried: 4 });
  });

  it('when the transport cannot store the retry, the bus reports it and retries from memory', async () => {
    const transport = new SchedulingTransport();
    transport.fail = true;
    const bus = await makeBus(transport, { durableRetryAboveMs: 10 });
    const errors: Error[] = [];
    bus.on('error', (err: Error) => errors.push(err));
    const attempts: number[] = [];
    bus.subscribe('job.*', (_e, ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first call fails');
    });
    bus.subscribe('job.*', () => {});
    await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => transport.calls.length === 1, 'the attempt to schedule');
    await waitFor(() => bus.getDetailedMetrics().retryTimers === 1, 'the fallback timer');
    await waitFor(() => attempts.length === 2, 'the retried call');
    expect(attempts).toEqual([1, 2]);
    expect(errors.some((e) => e instanceof TransportError && /retrying from memory/.test(e.message))).toBe(
      true,
    );
    expect(bus.getDetailedMetrics()).toMatchObject({ durableRetries: 0, queueSize: 0 });
  });

  it('a once subscription retries from a timer: a stored retry could not find it after its first event', async () => {
    const transport = new SchedulingTransport();
    const bus = await makeBus(transport, { durableRetryAboveMs: 10 });
    const attempts: number[] = [];
    const others: number[] = [];
    bus.subscribe(
      'job.*',
      (_e, ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt === 1) throw new Error('first call fails');
      },
      { once: true },
    );
    bus.subscribe('job.*', (_e, ctx) => void others.push(ctx.attempt));
    await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => attempts.length === 2, 'the retried call');
    expect(transport.calls).toHaveLength(0);
    expect(others).toEqual([1]);
  });

  it('short delays stay in a timer; a transport without scheduleRetry always uses one', async () => {
    const transport = new SchedulingTransport();
    const bus = await makeBus(transport, { durableRetryAboveMs: 1000 });
    const attempts: number[] = [];
    bus.subscribe('job.*', (_e, ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first call fails');
    });
    await bus.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => attempts.length === 2, 'the retried call');
    expect(transport.calls).toHaveLength(0);

    const plain = new QEEventBus({
      nodeId: 'plain',
      retryDelay: 40,
      maxRetryDelay: 40,
      durableRetryAboveMs: 0,
    });
    buses.push(plain);
    await plain.start();
    const plainAttempts: number[] = [];
    plain.subscribe('job.*', (_e, ctx) => {
      plainAttempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first call fails');
    });
    await plain.publish({ type: 'job.run', agentId: 'a', data: {} });
    await waitFor(() => plain.getDetailedMetrics().retryTimers === 1, 'the in-memory retry');
    await waitFor(() => plainAttempts.length === 2, 'the retried call');
  });

  it('in-memory retry timers are counted while they wait; stop() clears those that outlast its drain', async () => {
    // time is the subject: fake timers that still advance with the clock (so the bus runs as usual), and a jump
    // past every retry's due time at the end instead of a sleep
    vi.useFakeTimers({
      shouldAdvanceTime: true,
      toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'],
    });
    onTestFinished(() => void vi.useRealTimers());
    // retries due after stop's drain window: stop gives up waiting and must clear their timers
    const bus = new QEEventBus({
      nodeId: 'timers',
      retryDelay: 1200,
      maxRetryDelay: 1200,
      durableRetryAboveMs: 60_000,
      shutdownTimeoutMs: 100,
    });
    await bus.start();
    let calls = 0;
    bus.subscribe('job.*', () => {
      calls++;
      throw new Error('always fails');
    });
    for (let i = 0; i < 5; i++) await bus.publish({ type: 'job.run', agentId: `a${i}`, data: { i } });
    await waitFor(() => bus.getDetailedMetrics().retryTimers === 5, 'five waiting retries');
    expect(calls).toBe(5);
    await bus.stop();
    expect(bus.getDetailedMetrics().retryTimers).toBe(0);
    await vi.advanceTimersByTimeAsync(3 * 1200);
    expect(calls).toBe(5); // none of the cleared retries ran (they were due 600-1200 ms after the failures)
  });
});
