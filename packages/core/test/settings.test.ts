import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type AgentEvent,
  ConfigError,
  ErrorCodes,
  MemoryBroker,
  MemoryTransport,
  type Middleware,
  QEEventBus,
  type QEEventBusConfig,
  ValidationError,
} from '../src/index.js';

const buses: QEEventBus[] = [];
async function makeBus(config: Partial<QEEventBusConfig> = {}) {
  const bus = new QEEventBus({ nodeId: `s${buses.length + 1}`, ...config });
  buses.push(bus);
  await bus.start();
  return bus;
}
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

function thrown(fn: () => unknown): ConfigError & ValidationError {
  try {
    fn();
  } catch (e) {
    return e as ConfigError & ValidationError;
  }
  throw new Error('expected a throw');
}

describe('settings that used to be ignored (issue 14, item 7)', () => {
  it('spec 000’s redis key is a CONFIG error naming it and @qe/redis-transport', () => {
    const cfg = { nodeId: 'n', redis: { host: '127.0.0.1', port: 6379 } } as unknown as QEEventBusConfig;
    const err = thrown(() => new QEEventBus(cfg));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.setting).toBe('redis');
    expect(err.message).toMatch(/@qe\/redis-transport/);
  });

  it('an unknown or misspelt key is a CONFIG error naming it, top level and nested', () => {
    const top = thrown(() => new QEEventBus({ nodeId: 'n', retryAtempts: 2 } as unknown as QEEventBusConfig));
    expect(top).toMatchObject({ code: 'CONFIG', setting: 'retryAtempts' });
    const nested = thrown(
      () => new QEEventBus({ nodeId: 'n', backpressure: { maxQueue: 5 } } as unknown as QEEventBusConfig),
    );
    expect(nested).toMatchObject({ code: 'CONFIG', setting: 'backpressure.maxQueue' });
    expect(
      thrown(() => new QEEventBus({ nodeId: 'n', freezeEvents: 'no' as unknown as boolean })),
    ).toMatchObject({ setting: 'freezeEvents' });
  });

  it('loadBalancer is refused with a CONFIG error pointing at @qe/router, not validated and ignored', () => {
    const cfg = {
      nodeId: 'n',
      loadBalancer: { strategy: 'least_connections' },
    } as unknown as QEEventBusConfig;
    const err = thrown(() => new QEEventBus(cfg));
    expect(err).toMatchObject({ code: 'CONFIG', setting: 'loadBalancer' });
    expect(err.message).toMatch(/@qe\/router/);
  });

  it('unsubscribe(fn) with the function subscribe returned removes it and returns true', async () => {
    const bus = await makeBus();
    const seen: number[] = [];
    let other = 0;
    const u = bus.subscribe('t.*', (e) => void seen.push((e.data as { i: number }).i));
    bus.subscribe('t.*', () => void other++);
    await bus.publish({ type: 't.a', agentId: 'a', data: { i: 1 } });
    await waitFor(() => seen.length === 1 && other === 1);
    expect(bus.unsubscribe(u)).toBe(true);
    expect(bus.unsubscribe(u)).toBe(false);
    expect(bus.getSubscriberStats().subscribers.map((s) => s.id)).not.toContain(u.id);
    await bus.publish({ type: 't.a', agentId: 'a', data: { i: 2 } });
    // the other subscription got the second event: the removed one, dispatched in the same round, did not
    await waitFor(() => other === 2);
    expect(seen).toEqual([1]);
  });

  it('extra top-level event keys are refused with VALIDATION naming the key, with or without an id', async () => {
    const bus = await makeBus();
    const withoutId = await bus
      .publish({ type: 'x.y', agentId: 'a', data: 1, tenant: 't1' } as unknown as AgentEvent)
      .catch((e) => e);
    expect(withoutId).toBeInstanceOf(ValidationError);
    expect(withoutId.field).toBe('tenant');
    const full = {
      id: 'e-1',
      type: 'x.y',
      agentId: 'a',
      timestamp: Date.now(),
      priority: 2,
      data: 1,
      tenant: 't1',
    } as unknown as AgentEvent;
    const withId = await bus.publish(full).catch((e) => e);
    expect(withId).toBeInstanceOf(ValidationError);
    expect(withId.field).toBe('tenant');
    const batch = await bus
      .publishBatch([
        { type: 'x.y', agentId: 'a', data: 1 },
        { ...full, id: 'e-2' },
      ])
      .catch((e) => e);
    expect(batch.field).toBe('events[1].tenant');
  });

  it('unknown subscription options and middleware that cannot act on a subscription are refused', async () => {
    const bus = await makeBus();
    expect(thrown(() => bus.subscribe('a.*', () => {}, { grup: 'g' } as never))).toMatchObject({
      code: 'VALIDATION',
      field: 'grup',
    });
    const publishOnly: Middleware = { name: 'pub-only', publish: (next) => next };
    expect(thrown(() => bus.subscribe('a.*', () => {}, { middleware: [publishOnly] }))).toMatchObject({
      field: 'middleware[0]',
    });
    const consumeOnly: Middleware = { name: 'con-only', consume: (next) => next };
    expect(thrown(() => bus.subscribeBatch('a.*', () => {}, { middleware: [consumeOnly] }))).toMatchObject({
      field: 'middleware[0]',
    });
    expect(thrown(() => bus.subscribe('a.*', () => {}, { startFrom: 'latest' as 'new' }))).toMatchObject({
      field: 'startFrom',
    });
    // a second subscription of the same binding cannot choose another starting point: it would be ignored
    bus.subscribe('b.*', () => {});
    expect(thrown(() => bus.subscribe('c.*', () => {}, { startFrom: 'earliest' }))).toMatchObject({
      field: 'startFrom',
    });
    bus.subscribe('d.*', () => {}, { startFrom: 'new' });
  });

  it('the memory transport refuses settings it would ignore: broker options next to a shared broker, unknown keys', () => {
    const broker = new MemoryBroker();
    expect(thrown(() => new MemoryTransport({ broker, historySize: 50 }))).toMatchObject({
      code: 'CONFIG',
      setting: 'historySize',
    });
    expect(thrown(() => new MemoryTransport({ historysize: 50 } as never))).toMatchObject({
      setting: 'historysize',
    });
    expect(thrown(() => new MemoryBroker({ historySize: -1 }))).toMatchObject({ setting: 'historySize' });
  });

  it('history and replay queries refuse unknown keys instead of returning everything', async () => {
    const bus = await makeBus();
    await expect(bus.getRecentEvents({ type: 'a.b' } as never)).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'type',
    });
    await expect(bus.replay({ since: 0 } as never, () => {})).rejects.toMatchObject({ field: 'since' });
  });
});
