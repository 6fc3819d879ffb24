import {
  type AgentEvent,
  type ConsumeContext,
  type ConsumeFn,
  type Delivery,
  MemoryTransport,
  type Middleware,
  type MiddlewareHost,
  PermanentError,
  RetryLaterError,
} from '@qe/core';
import { sleep, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  backoffDelay,
  CIRCUIT_EVENTS,
  createBulkhead,
  createCircuitBreaker,
  createIdempotency,
  createRateLimiter,
  createRetryMiddleware,
  createTimeoutMiddleware,
  DeadLetterManager,
  MemoryTokenBuckets,
} from '../src/index.js';

// The middleware is the thing under test: it is called directly with a plain context.
const event: AgentEvent = { id: 'e1', type: 'task.run', agentId: 'a1', timestamp: 1, priority: 2, data: {} };
function ctx(over: Partial<ConsumeContext> = {}): ConsumeContext {
  const delivery: Delivery = {
    event,
    attempt: 1,
    publishedAt: 0,
    ack() {},
    nack() {},
    async deadLetter() {},
  };
  return {
    nodeId: 'n',
    subscriptionId: 's1',
    patterns: ['**'],
    group: null,
    attempt: 1,
    maxAttempts: 1,
    delivery,
    startedAt: performance.now(),
    exclusive: false,
    ...over,
  };
}
const host = (durable: boolean): MiddlewareHost => ({
  nodeId: 'n',
  transport: {
    name: 'x',
    capabilities: {
      durable,
      groups: true,
      ordering: true,
      replay: true,
      priorities: true,
      deadLetters: true,
      crossProcess: true,
    },
  },
  publish: async () => undefined,
  on: () => undefined,
});
const wrap = (m: Middleware, fn: ConsumeFn, durable = false, h = host(durable)) => {
  m.attach?.(h);
  return m.consume!(fn);
};

describe('backoff', () => {
  it('is full jitter under an exponential ceiling', () => {
    expect(backoffDelay(1, 100, 10_000, () => 0.999)).toBe(99);
    expect(backoffDelay(3, 100, 10_000, () => 0.999)).toBe(399);
    expect(backoffDelay(20, 100, 1000, () => 0.999)).toBe(999);
    expect(backoffDelay(2, 100, 1000, () => 0)).toBe(0);
  });
});

describe('retry middleware', () => {
  it('retries with delays inside the backoff ceiling, then throws PermanentError with the cause', async () => {
    const delays: number[] = [];
    let calls = 0;
    const fn = wrap(
      createRetryMiddleware({
        retryAttempts: 3,
        retryDelay: 8,
        maxRetryDelay: 100,
        onRetry: (i) => delays.push(i.delayMs),
      }),
      () => {
        calls++;
        throw new Error('down');
      },
    );
    const err = await Promise.resolve(fn(event, ctx())).catch((e) => e);
    expect(calls).toBe(4);
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as Error).cause).toMatchObject({ message: 'down' });
    expect(delays).toHaveLength(3);
    for (const [i, d] of delays.entries()) expect(d).toBeLessThan(8 * 2 ** i);
  });

  it('does not retry a PermanentError or what retryIf rejects', async () => {
    let calls = 0;
    const fn = wrap(
      createRetryMiddleware({ retryAttempts: 5, retryDelay: 1, retryIf: (e) => e.message !== 'bad input' }),
      () => {
        calls++;
        throw new Error('bad input');
      },
    );
    await expect(Promise.resolve(fn(event, ctx()))).rejects.toBeInstanceOf(PermanentError);
    expect(calls).toBe(1);
  });

  it('hands a long delay to a durable transport (nack) for a group delivery, postpones it otherwise', async () => {
    const nacks: (number | undefined)[] = [];
    const c = ctx({ group: 'g', exclusive: true });
    (c.delivery as { nack: (d?: number) => void }).nack = (d) => void nacks.push(d);
    const failing = () => {
      throw new Error('slow dependency');
    };
    const m = { retryAttempts: 2, retryDelay: 10_000, maxRetryDelay: 10_000, scheduleAboveMs: 0 };
    await wrap(createRetryMiddleware(m), failing, true)(event, c);
    expect(nacks).toHaveLength(1);
    await expect(
      Promise.resolve(wrap(createRetryMiddleware(m), failing, false)(event, ctx())),
    ).rejects.toBeInstanceOf(RetryLaterError);
  });

  it('counts scheduled retries itself, so a redelivery that keeps attempt 1 still ends after retryAttempts', async () => {
    const m = { retryAttempts: 2, retryDelay: 10_000, maxRetryDelay: 10_000, scheduleAboveMs: 0 };
    let calls = 0;
    const fn = wrap(createRetryMiddleware(m), () => {
      calls++;
      throw new Error('still failing');
    });
    const outcomes: unknown[] = [];
    // the same delivery comes back each time with attempt 1, as after a postponement
    for (let i = 0; i < 3; i++)
      outcomes.push(await Promise.resolve(fn(event, ctx())).catch((e: unknown) => e));
    expect(outcomes[0]).toBeInstanceOf(RetryLaterError);
    expect(outcomes[1]).toBeInstanceOf(RetryLaterError);
    expect(outcomes[2]).toBeInstanceOf(PermanentError);
    expect((outcomes[2] as PermanentError).details).toMatchObject({ attempts: 3 });
    expect(calls).toBe(3);
    // after the final failure the count is forgotten: a redriven copy starts over
    await expect(Promise.resolve(fn(event, ctx()))).rejects.toBeInstanceOf(RetryLaterError);
  });

  it('rejects bad options by name', () => {
    expect(() => createRetryMiddleware({ maxTrackedEvents: 0 })).toThrow(/maxTrackedEvents/);
    expect(() => createRetryMiddleware({ retryAttempts: -1 })).toThrow(/retryAttempts/);
  });
});

describe('timeout and bulkhead', () => {
  it('fails a slow call with TIMEOUT and lets a fast one through', async () => {
    const slow = wrap(
      createTimeoutMiddleware({ timeoutMs: 20 }),
      () => sleep(200), // simulated slow work
    );
    await expect(Promise.resolve(slow(event, ctx()))).rejects.toMatchObject({ code: 'TIMEOUT' });
    const fast = wrap(createTimeoutMiddleware({ timeoutMs: 200 }), async () => 'ok');
    await expect(Promise.resolve(fast(event, ctx()))).resolves.toBe('ok');
    expect(() => createTimeoutMiddleware({ timeoutMs: 0 })).toThrow(/timeoutMs/);
  });

  it('rejects bad bulkhead options by name', () => {
    expect(() => createBulkhead({ maxConcurrent: 0 })).toThrow(/maxConcurrent/);
    expect(() => createBulkhead({ maxConcurrent: 1, overflow: 'drop' as 'shed' })).toThrow(/overflow/);
    expect(() => createBulkhead({ maxConcurrent: 1, shedPriority: 7 as 4 })).toThrow(/shedPriority/);
  });

  it('caps concurrency, queues up to maxQueue, then applies the overflow policy and counts', async () => {
    for (const overflow of ['fail', 'shed', 'wait'] as const) {
      const b = createBulkhead({ maxConcurrent: 2, maxQueue: 1, overflow });
      let running = 0;
      let peak = 0;
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const fn = wrap(b, async () => {
        peak = Math.max(peak, ++running);
        await gate;
        running--;
      });
      const calls = [0, 1, 2].map(() => Promise.resolve(fn(event, ctx())));
      await waitFor(() => running === 2 && b.stats().queued === 1, 'two calls running and one queued');
      const fourth = await Promise.resolve(fn(event, ctx())).then(
        () => 'resolved',
        (e: { code?: string }) => e.code,
      );
      expect(b.stats()).toMatchObject({ running: 2, queued: 1 });
      if (overflow === 'fail') expect(fourth).toBe('QUEUE_FULL');
      if (overflow === 'shed') {
        // a NORMAL event is not shed under the default shedPriority (LOW): it waits
        expect(fourth).toBe('RETRY_LATER');
        const bulk = await Promise.resolve(fn({ ...event, priority: 4 }, ctx())).then(
          () => 'resolved',
          (e: { code?: string }) => e.code,
        );
        expect([bulk, b.stats().shed, b.stats().postponed]).toEqual(['resolved', 1, 1]);
      }
      if (overflow === 'wait') expect([fourth, b.stats().postponed]).toEqual(['RETRY_LATER', 1]);
      if (overflow === 'fail') expect(b.stats().rejected).toBe(1);
      release();
      await Promise.all(calls);
      expect(peak).toBe(2);
      expect(b.stats()).toMatchObject({ running: 0, queued: 0 });
    }
  });
});

describe('rate limiter and idempotency (in memory)', () => {
  it('a token bucket allows maxEvents per window then says when to come back', async () => {
    const buckets = new MemoryTokenBuckets();
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await buckets.take('k', 5, 5 / 1000, 1));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    expect(results[5]!.retryAfterMs).toBeGreaterThan(0);
    expect(results[5]!.retryAfterMs).toBeLessThanOrEqual(200);
  });

  it('fail mode throws RATE_LIMITED with a retry-after; wait mode postpones the event', async () => {
    // two events of one agent (a redelivery of the same event would not pay again)
    const second = { ...event, id: `${event.id}-2` };
    const failing = wrap(createRateLimiter({ windowMs: 60_000, maxEvents: 1, mode: 'fail' }), () => 'ok');
    expect(await failing(event, ctx())).toBe('ok');
    await expect(Promise.resolve(failing(second, ctx()))).rejects.toMatchObject({
      code: 'RATE_LIMITED',
      retryAfterMs: expect.any(Number),
    });
    const waiting = wrap(createRateLimiter({ windowMs: 60_000, maxEvents: 1 }), () => 'ok');
    expect(await waiting(event, ctx())).toBe('ok');
    await expect(Promise.resolve(waiting(second, ctx()))).rejects.toBeInstanceOf(RetryLaterError);
  });

  it('refuses settings it would otherwise ignore or get wrong, naming them', () => {
    const setting = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as { code: string; setting: string };
      }
      throw new Error('expected a CONFIG error');
    };
    const cases: [() => unknown, string][] = [
      [() => createRateLimiter({ windowMs: 1000, maxEvents: 5, key: 'agentID' as 'agentId' }), 'key'],
      [() => createRateLimiter({ windowMs: 1000, maxEvents: 5, perKey: true } as never), 'perKey'],
      [() => createIdempotency({ processingMs: -1 }), 'processingMs'],
      [() => createIdempotency({ busyRetryMs: 0 }), 'busyRetryMs'],
      [() => createCircuitBreaker({ errorThresholdPercentage: 150 }), 'errorThresholdPercentage'],
      [() => createCircuitBreaker({ enabled: true } as never), 'enabled'],
      [() => createBulkhead({ maxConcurrent: 1, retryLaterMs: -5 }), 'retryLaterMs'],
      [() => createRetryMiddleware({ retryAttempt: 3 } as never), 'retryAttempt'],
      [() => createTimeoutMiddleware({ timeoutMs: 10, timeout: 5 } as never), 'timeout'],
    ];
    for (const [fn, name] of cases) expect(setting(fn)).toMatchObject({ code: 'CONFIG', setting: name });
    // a misspelt list option would list everything
    const dlq = new DeadLetterManager(new MemoryTransport().deadLetters);
    expect(() => dlq.list({ patern: 'a.*' } as never)).toThrow(expect.objectContaining({ field: 'patern' }));
  });

  it('idempotency handles a key once, lets a failed attempt be retried, postpones a concurrent one', async () => {
    const idem = createIdempotency({ windowMs: 60_000 });
    let calls = 0;
    let fail = true;
    const fn = wrap(idem, async () => {
      calls++;
      if (fail) throw new Error('first try fails');
    });
    await expect(Promise.resolve(fn(event, ctx()))).rejects.toThrow('first try fails');
    fail = false;
    await fn(event, ctx());
    await fn(event, ctx());
    await fn(event, ctx());
    expect(calls).toBe(2);
    expect(idem.stats()).toMatchObject({ handled: 1, duplicates: 2 });
    // a synchronous handler stays synchronous through the in-memory store
    let syncCalls = 0;
    const sync = wrap(createIdempotency(), () => {
      syncCalls++;
      return 'ok';
    });
    expect(sync(event, ctx())).toBe('ok');
    expect(sync(event, ctx())).toBeUndefined();
    expect(syncCalls).toBe(1);
    let release: (() => void) | undefined;
    const slow = wrap(createIdempotency(), () => new Promise<void>((r) => (release = r)));
    const first = Promise.resolve(slow(event, ctx()));
    await waitFor(() => release !== undefined, 'the first call to be running');
    // a synchronous throw is a failure as much as a rejection (ConsumeFn's contract)
    await expect((async () => slow(event, ctx()))()).rejects.toBeInstanceOf(RetryLaterError);
    release!();
    await first;
  });
});

describe('circuit breaker (alone)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('opens after the threshold, postpones without calling, half-opens, lets one trial through, closes', async () => {
    // time is the subject here (the reset timeout): fake timers, so a busy machine cannot stretch it
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const published: { type: string; data: unknown }[] = [];
    const h: MiddlewareHost = {
      ...host(false),
      publish: async (e) => void published.push({ type: e.type, data: e.data }),
    };
    const breaker = createCircuitBreaker({
      failureThreshold: 2,
      recoveryTimeout: 80,
      monitoringPeriod: 10_000,
    });
    let calls = 0;
    let healthy = false;
    let release: () => void = () => {};
    const fn = wrap(
      breaker,
      async () => {
        calls++;
        if (!healthy) throw new Error('down');
        await new Promise<void>((r) => (release = r));
      },
      false,
      h,
    );
    await expect(fn(event, ctx())).rejects.toThrow('down');
    await expect(fn(event, ctx())).rejects.toThrow('down');
    expect(breaker.state('s1')).toBe('open');
    // open: fails fast with RETRY_LATER (the event waits), the handler is not called
    const early = await Promise.resolve(fn(event, ctx())).catch((e: unknown) => e);
    expect(early).toBeInstanceOf(RetryLaterError);
    expect((early as RetryLaterError).delayMs).toBeGreaterThan(0);
    expect((early as RetryLaterError).delayMs).toBeLessThanOrEqual(80);
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(79);
    expect(breaker.state('s1')).toBe('open'); // not a moment before the reset timeout
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(breaker.state('s1')).toBe('half_open');
    vi.useRealTimers();
    healthy = true;
    const trial = fn(event, ctx());
    // while the one trial call is in flight, others wait too instead of failing
    const concurrent = await Promise.resolve(fn(event, ctx())).catch((e: unknown) => e);
    expect(concurrent).toBeInstanceOf(RetryLaterError);
    expect(calls).toBe(3);
    release();
    await trial;
    expect(breaker.state('s1')).toBe('closed');
    expect(breaker.stats()[0]).toMatchObject({ opened: 1, halfOpened: 1, closed: 1, rejects: 2 });
    await waitFor(() => published.length === 3, 'three state-change events');
    expect(published.map((p) => p.type)).toEqual([
      CIRCUIT_EVENTS.open,
      CIRCUIT_EVENTS.half_open,
      CIRCUIT_EVENTS.closed,
    ]);
    expect(published[0]!.data).toEqual({ key: 's1', state: 'open' });
  });

  it('keeps one breaker per key, so one failing downstream does not stop another', async () => {
    const breaker = createCircuitBreaker({
      failureThreshold: 1,
      recoveryTimeout: 10_000,
      key: (e) => String((e.data as { svc: string }).svc),
    });
    const fn = wrap(breaker, (e) => {
      if ((e.data as { svc: string }).svc === 'bad') throw new Error('bad downstream');
    });
    const bad = { ...event, data: { svc: 'bad' } };
    const good = { ...event, data: { svc: 'good' } };
    await expect(fn(bad, ctx())).rejects.toThrow('bad downstream');
    await expect(Promise.resolve(fn(bad, ctx()))).rejects.toBeInstanceOf(RetryLaterError);
    await expect(Promise.resolve(fn(good, ctx()))).resolves.toBeUndefined();
    expect(breaker.state('bad')).toBe('open');
    expect(breaker.state('good')).toBe('closed');
  });

  it('rejects bad options by name', () => {
    expect(() => createCircuitBreaker({ failureThreshold: 0 })).toThrow(/failureThreshold/);
    expect(() => createCircuitBreaker({ recoveryTimeout: 1.5 })).toThrow(/recoveryTimeout/);
  });
});
