import { type AgentEvent, type Logger, MemoryTransport, QEEventBus } from '@qe/core';
import { deletePrefix, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RoutedTransport } from '../src/index.js';

/**
 * Issue 14, item 2: nothing routed to a group is dropped. Buses in this
 * process, each with its own RoutedTransport and Redis client, on real Redis.
 */
const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function prefix(): string {
  const p = uniquePrefix('router-dl');
  cleanups.push(() => deletePrefix(p, URL_));
  return p;
}

interface Line {
  level: string;
  message: string;
  fields?: Record<string, unknown>;
}

async function node(p: string, nodeId: string, o: { memberTtlMs?: number; shutdownTimeoutMs?: number } = {}) {
  const redis = new Redis(URL_);
  const t = new RoutedTransport({
    inner: new MemoryTransport(),
    redis,
    prefix: p,
    heartbeatMs: 200,
    memberTtlMs: o.memberTtlMs ?? 1000,
  });
  const lines: Line[] = [];
  const logger: Logger = {
    debug: () => {},
    info: (message, fields) => void lines.push({ level: 'info', message, ...(fields ? { fields } : {}) }),
    warn: (message, fields) => void lines.push({ level: 'warn', message, ...(fields ? { fields } : {}) }),
    error: (message, fields) => void lines.push({ level: 'error', message, ...(fields ? { fields } : {}) }),
  };
  const bus = new QEEventBus({
    nodeId,
    transport: t,
    logger,
    ...(o.shutdownTimeoutMs === undefined ? {} : { shutdownTimeoutMs: o.shutdownTimeoutMs }),
  });
  await bus.start();
  cleanups.push(async () => {
    await bus.stop();
    redis.disconnect();
  });
  return { bus, t, redis, lines };
}

const GROUP_KEY = 'group:g:work.*';
const work = (i: number) => ({ type: 'work.item', agentId: `a${i}`, data: { i } });

describe('RoutedTransport drops nothing routed to a group', () => {
  it('an event published right after a member of a new group is ready reaches it', async () => {
    const p = prefix();
    const pub = await node(p, 'pub'); // its view of the registry has no group yet
    const m = await node(p, 'm1');
    const handled: AgentEvent[] = [];
    await m.bus.subscribe('work.*', (e) => void handled.push(e), { group: 'g' }).ready;
    // ready promises "events published from now on reach it", whatever the publisher saw before
    await pub.bus.publish(work(1));
    await waitFor(() => handled.length === 1, 'the event at the new member', 5000);
    expect(pub.t.counters.routed).toBe(1);
  });

  it('a group with no live member keeps its events in Redis, counted and logged, until a member joins', async () => {
    const p = prefix();
    const pub = await node(p, 'pub');
    const first = await node(p, 'first');
    await first.bus.subscribe('work.*', () => {}, { group: 'g' }).ready;
    // another group that keeps its member: one publish routes to it and holds for 'g'
    const other = await node(p, 'other');
    let byOther = 0;
    await other.bus.subscribe('work.*', () => void byOther++, { group: 'other' }).ready;
    await first.bus.stop();
    // wait until the publisher sees the group without a live member
    await waitFor(
      async () => {
        const h = await pub.t.healthCheck();
        const groups = h.details?.groups as Record<string, unknown[]> | undefined;
        return groups?.[GROUP_KEY] !== undefined && groups[GROUP_KEY]!.length === 0;
      },
      'the publisher to see no live member',
      5000,
    );
    await pub.bus.publishBatch([0, 1, 2, 3, 4].map(work));
    expect(pub.t.counters.held).toBe(5);
    expect(pub.t.counters.routed).toBe(5);
    await waitFor(() => byOther === 5, 'the other group’s copies');
    expect(await pub.redis.xlen(pub.t.key('pending', GROUP_KEY))).toBe(5);
    expect(pub.lines.filter((l) => l.level === 'warn' && /holding events/.test(l.message))).toHaveLength(1);

    const late = await node(p, 'late');
    const handled: number[] = [];
    await late.bus.subscribe('work.*', (e) => void handled.push((e.data as { i: number }).i), { group: 'g' })
      .ready;
    await waitFor(() => handled.length === 5, 'the held events at the member that joined', 5000);
    expect(handled.sort()).toEqual([0, 1, 2, 3, 4]);
    expect(late.t.counters.released).toBe(5);
    expect(await pub.redis.xlen(pub.t.key('pending', GROUP_KEY))).toBe(0);
  });

  it('bus.stop() leaves the group at once and hands the member’s share to the others', async () => {
    const p = prefix();
    // a TTL far beyond the test: only a clean leave can hand the share over in time
    const pub = await node(p, 'pub', { memberTtlMs: 60_000 });
    const a = await node(p, 'a', { memberTtlMs: 60_000 });
    const b = await node(p, 'b', { memberTtlMs: 60_000, shutdownTimeoutMs: 300 });
    const byA = new Set<number>();
    let byB = 0;
    await a.bus.subscribe('work.*', (e) => void byA.add((e.data as { i: number }).i), { group: 'g' }).ready;
    const ub = b.bus.subscribe('work.*', () => void byB++, { group: 'g' });
    await ub.ready;
    b.bus.pause(ub); // b handles nothing: its share waits in its inbox (or paused in its bus)
    await pub.t.refresh();
    for (let i = 0; i < 10; i++) await pub.bus.publish(work(i));
    await waitFor(() => byA.size === 5, 'a’s half', 5000);
    await b.bus.stop();
    expect(await pub.redis.zscore(pub.t.key('members', GROUP_KEY), 'b')).toBeNull();
    await waitFor(() => byA.size === 10, 'b’s half, handed over to a', 5000);
    expect(byB).toBe(0);
    expect(b.t.counters.handedOver).toBe(5);
    expect(await pub.redis.exists(pub.t.key('inbox', GROUP_KEY, 'b'))).toBe(0);
  });

  it('an inbox entry that cannot be decoded is counted and logged, not skipped quietly', async () => {
    const p = prefix();
    const m = await node(p, 'm');
    const handled: number[] = [];
    await m.bus.subscribe('work.*', (e) => void handled.push((e.data as { i: number }).i), { group: 'g' })
      .ready;
    await m.redis.xadd(m.t.key('inbox', GROUP_KEY, 'm'), '*', 'e', 'not an event', 't', '0', 'a', '1');
    await m.bus.publish(work(7));
    await waitFor(
      () => handled.length === 1 && m.t.counters.undecodable === 1,
      'the good event and the count',
    );
    expect(m.lines.filter((l) => l.level === 'error' && /cannot be decoded/.test(l.message))).toHaveLength(1);
  });
});
