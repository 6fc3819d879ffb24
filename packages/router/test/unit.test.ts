import { type AgentEvent, MemoryBroker, MemoryTransport, QEEventBus } from '@qe/core';
import { waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  createRoutingRules,
  createStrategy,
  hashBased,
  leastConnections,
  RoutedTransport,
  roundRobin,
  strategyFromConfig,
  weighted,
} from '../src/index.js';

const ev = (agentId: string): AgentEvent => ({
  id: agentId,
  type: 'w.x',
  agentId,
  timestamp: 0,
  priority: 2,
  data: null,
});
const members = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `m${i}`, inFlight: 0 }));

describe('strategies', () => {
  it('round_robin is even', () => {
    const s = roundRobin();
    const m = members(3);
    const counts = [0, 0, 0];
    for (let i = 0; i < 300; i++) counts[s.pick(ev('a'), m, 'g')]!++;
    expect(counts).toEqual([100, 100, 100]);
  });

  it('weighted is exact over a full cycle and interleaved; weights change at run time', () => {
    const s = weighted(
      new Map([
        ['m0', 3],
        ['m1', 2],
        ['m2', 1],
      ]),
    );
    const m = members(3);
    const seq = Array.from({ length: 6 }, () => s.pick(ev('a'), m, 'g'));
    expect(seq.filter((i) => i === 0)).toHaveLength(3);
    expect(seq.filter((i) => i === 1)).toHaveLength(2);
    expect(seq.slice(0, 2)).not.toEqual([0, 0]); // smooth: not three in a row for the heaviest
    s.setWeight('m2', 6);
    const counts = [0, 0, 0];
    for (let i = 0; i < 1100; i++) counts[s.pick(ev('a'), m, 'g')]!++;
    expect(counts[2]! / 1100).toBeCloseTo(6 / 11, 1);
    expect(() => s.setWeight('m0', -1)).toThrow(/weights.m0/);
  });

  it('least_connections picks the least loaded member', () => {
    const s = leastConnections();
    expect(
      s.pick(
        ev('a'),
        [
          { id: 'a', inFlight: 5 },
          { id: 'b', inFlight: 1 },
          { id: 'c', inFlight: 3 },
        ],
        'g',
      ),
    ).toBe(1);
  });

  it('hash_based keeps each key on one member and moves only the leaving member’s keys', () => {
    const s = hashBased();
    const ten = members(10);
    const keys = Array.from({ length: 5000 }, (_, i) => `agent-${i}`);
    const before = new Map(keys.map((k) => [k, ten[s.pick(ev(k), ten, 'g')]!.id]));
    for (const k of keys.slice(0, 100)) expect(ten[s.pick(ev(k), ten, 'g')]!.id).toBe(before.get(k));
    const nine = ten.filter((m) => m.id !== 'm4');
    let moved = 0;
    for (const k of keys) {
      const now = nine[s.pick(ev(k), nine, 'g')]!.id;
      if (now !== before.get(k)) {
        moved++;
        expect(before.get(k)).toBe('m4'); // only the leaver's keys move
      }
    }
    expect(moved / keys.length).toBeGreaterThan(0.05);
    expect(moved / keys.length).toBeLessThan(0.16); // about a tenth
  });

  it('strategyFromConfig reads spec 000’s loadBalancer config', () => {
    expect(strategyFromConfig(undefined).name).toBe('round_robin');
    const s = strategyFromConfig({
      strategy: 'weighted',
      weights: new Map([
        ['m0', 0],
        ['m1', 1],
      ]),
    });
    expect(s.pick(ev('a'), members(2), 'g')).toBe(1);
  });

  it('createStrategy knows spec 000’s names and refuses others', () => {
    for (const n of ['round_robin', 'least_connections', 'weighted', 'hash_based'] as const)
      expect(createStrategy(n).name).toBe(n);
    expect(() => createStrategy('random' as 'weighted')).toThrow(/loadBalancer.strategy/);
  });

  it('refuses loadBalancer and strategy settings it would ignore, naming them', () => {
    const setting = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as { code: string; setting: string; message: string };
      }
      throw new Error('expected a CONFIG error');
    };
    expect(
      setting(() => strategyFromConfig({ strategy: 'round_robin', healthCheckInterval: 5000 })),
    ).toMatchObject({
      code: 'CONFIG',
      setting: 'loadBalancer.healthCheckInterval',
      message: expect.stringMatching(/heartbeatMs/),
    });
    expect(
      setting(() => strategyFromConfig({ strategy: 'least_connections', maxConnections: 10 })),
    ).toMatchObject({
      setting: 'loadBalancer.maxConnections',
    });
    expect(
      setting(() => strategyFromConfig({ strategy: 'hash_based', weights: new Map([['a', 1]]) })),
    ).toMatchObject({ setting: 'loadBalancer.weights' });
    expect(setting(() => hashBased({ virtualNodes: 0 }))).toMatchObject({ setting: 'virtualNodes' });
    expect(setting(() => hashBased({ keyFn: () => 'k' } as never))).toMatchObject({ setting: 'keyFn' });
  });

  it('RoutedTransport refuses unknown and contradictory options, naming them', () => {
    const inner = new MemoryTransport();
    // never connects: the constructor only checks the options
    const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true });
    const setting = (o: Record<string, unknown>) => {
      try {
        new RoutedTransport({ inner, redis, ...o } as never);
      } catch (e) {
        return e as { code: string; setting: string };
      }
      throw new Error('expected a CONFIG error');
    };
    expect(setting({ memberTTL: 5000 })).toMatchObject({ code: 'CONFIG', setting: 'memberTTL' });
    expect(setting({ heartbeatMs: 1000, memberTtlMs: 500 })).toMatchObject({ setting: 'memberTtlMs' });
    expect(setting({ heartbeatMs: -1 })).toMatchObject({ setting: 'heartbeatMs' });
    expect(setting({ lanes: { keyFn: () => 'k' } })).toMatchObject({ setting: 'lanes.keyFn' });
    expect(setting({ strategy: 'round_robin' })).toMatchObject({ setting: 'strategy' });
  });

  it('plugs into the memory broker: a weighted group across buses in one process', async () => {
    const broker = new MemoryBroker({
      balancer: weighted(
        new Map([
          ['b1/group:g:w.*', 3],
          ['b2/group:g:w.*', 1],
        ]),
      ),
    });
    const counts: Record<string, number> = { b1: 0, b2: 0 };
    const buses = await Promise.all(
      ['b1', 'b2'].map(async (id) => {
        const b = new QEEventBus({ nodeId: id, transport: new MemoryTransport({ broker }) });
        await b.start();
        b.subscribe('w.*', () => void counts[id]!++, { group: 'g' });
        return b;
      }),
    );
    for (let i = 0; i < 400; i++) await buses[0]!.publish({ type: 'w.x', agentId: 'a', data: i });
    await waitFor(() => counts.b1! + counts.b2! === 400, 'all handled');
    expect(counts).toEqual({ b1: 300, b2: 100 });
    await Promise.all(buses.map((b) => b.stop()));
  });
});

describe('routing rules (spec 004)', () => {
  it('redirect, re-prioritise, tee and drop, in order; removable; counted', async () => {
    const rules = createRoutingRules();
    const bus = new QEEventBus({ nodeId: 'rules', middleware: [rules] });
    await bus.start();
    const seen: AgentEvent[] = [];
    bus.subscribe('**', (e) => void seen.push(e));
    rules.addRoutingRule({ pattern: 'legacy.*', action: { redirect: 'task.create' } });
    rules.addRoutingRule({
      pattern: 'task.*',
      when: (e) => (e.data as { vip?: boolean }).vip === true,
      action: { priority: 0 },
    });
    const audit = rules.addRoutingRule({ pattern: 'payment.**', action: { tee: 'audit.payment' } });
    rules.addRoutingRule({ id: 'no-debug', pattern: 'debug.**', action: { drop: true } });
    await bus.publish({ type: 'legacy.job', agentId: 'a', data: { vip: true } });
    await bus.publish({ type: 'payment.card', agentId: 'a', data: {} });
    await bus.publish({ type: 'debug.noise', agentId: 'a', data: {} });
    await waitFor(() => seen.length === 3, 'three deliveries');
    expect(seen.map((e) => [e.type, e.priority])).toEqual([
      ['task.create', 0],
      ['audit.payment', 2],
      ['payment.card', 2],
    ]);
    expect(seen[1]!.metadata?.causationId).toBe(seen[2]!.id);
    expect(rules.stats()).toMatchObject({
      dropped: 1,
      rules: [{ matched: 1 }, { matched: 1 }, { matched: 1 }, { id: 'no-debug', matched: 1 }],
    });
    expect(rules.removeRoutingRule(audit)).toBe(true);
    expect(rules.removeRoutingRule(audit)).toBe(false);
    expect(() => rules.addRoutingRule({ pattern: 'x.*', action: { redirect: 'Not A Type' } })).toThrow(
      /not an event type/,
    );
    // an action is looked at whole: { drop: false } must not drop, two actions must not half-apply
    expect(() => rules.addRoutingRule({ pattern: 'x.*', action: { drop: false } as never })).toThrow(
      expect.objectContaining({ code: 'CONFIG', setting: 'rule.action.drop' }),
    );
    expect(() =>
      rules.addRoutingRule({ pattern: 'x.*', action: { redirect: 'a.b', tee: 'c.d' } as never }),
    ).toThrow(expect.objectContaining({ setting: 'rule.action' }));
    expect(() =>
      rules.addRoutingRule({ pattern: 'x.*', action: { drop: true }, where: () => true } as never),
    ).toThrow(expect.objectContaining({ setting: 'rule.where' }));
    await bus.stop();
  });
});
