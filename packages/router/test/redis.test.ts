import type { ChildProcess } from 'node:child_process';
import { type GroupMember, MemoryTransport, QEEventBus, RetryLaterError } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, sleep, startFixture, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { createStrategy, RoutedTransport, type Strategy, type StrategyName, weighted } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Member {
  id: string;
  proc: ChildProcess;
  handled: { id: string; key: string; seq: number }[];
  ready: boolean;
}

function prefix(): string {
  const p = uniquePrefix('router');
  cleanups.push(() => deletePrefix(p, URL_));
  return p;
}

function member(p: string, id: string, strategy: StrategyName, delayMs = 0): Member {
  const m: Member = { id, proc: undefined as unknown as ChildProcess, handled: [], ready: false };
  m.proc = startFixture(
    new URL('./fixtures/member.ts', import.meta.url),
    [URL_, p, id, strategy, String(delayMs)],
    {
      onLine: (line) => {
        if (line === 'ready') m.ready = true;
        else if (line.startsWith('handled ')) {
          const [, eid, key, seq] = line.split(' ');
          m.handled.push({ id: eid!, key: key!, seq: Number(seq) });
        }
      },
    },
  );
  cleanups.push(() => void m.proc.kill('SIGKILL'));
  return m;
}

/** The members of group `g` the publisher's transport sees after a fresh read of the registry. */
async function liveMembers(t: RoutedTransport): Promise<string[]> {
  await t.refresh();
  const groups = (await t.healthCheck()).details?.groups as Record<string, GroupMember[]> | undefined;
  return (groups?.['group:g:work.*'] ?? []).map((m) => m.id);
}

async function publisher(p: string, strategy: Strategy) {
  const redis = new Redis(URL_);
  const t = new RoutedTransport({
    inner: new MemoryTransport(),
    redis,
    prefix: p,
    strategy,
    heartbeatMs: 300,
    memberTtlMs: 1500,
  });
  const bus = new QEEventBus({ nodeId: `pub-${Math.random().toString(36).slice(2, 6)}`, transport: t });
  await bus.start();
  cleanups.push(async () => {
    await bus.stop();
    redis.disconnect();
  });
  return { bus, t };
}

async function publishMany(bus: QEEventBus, n: number, key: (i: number) => string, pace = 0) {
  for (let i = 0; i < n; i += 500) {
    await bus.publishBatch(
      Array.from({ length: Math.min(500, n - i) }, (_, k) => ({
        type: 'work.item',
        agentId: key(i + k),
        data: { seq: i + k },
      })),
    );
    if (pace > 0) await sleep(pace); // pacing the load
  }
}

const total = (ms: Member[]) => ms.reduce((n, m) => n + m.handled.length, 0);

describe('routing across processes on Redis', () => {
  it('weighted 3:2:1 holds within a few percent over 30,000 events', async () => {
    const p = prefix();
    const ms = [member(p, 'w-a', 'weighted'), member(p, 'w-b', 'weighted'), member(p, 'w-c', 'weighted')];
    await waitFor(() => ms.every((m) => m.ready), 'members', 30_000);
    const { bus, t } = await publisher(
      p,
      weighted(
        new Map([
          ['w-a', 3],
          ['w-b', 2],
          ['w-c', 1],
        ]),
      ),
    );
    await t.refresh();
    await publishMany(bus, 30_000, (i) => `a${i % 50}`);
    await waitFor(() => total(ms) === 30_000, 'all 30,000 handled', 60_000);
    const share = ms.map((m) => m.handled.length / 30_000);
    expect(share[0]).toBeCloseTo(3 / 6, 1);
    expect(Math.abs(share[0]! - 3 / 6)).toBeLessThan(0.03);
    expect(Math.abs(share[1]! - 2 / 6)).toBeLessThan(0.03);
    expect(Math.abs(share[2]! - 1 / 6)).toBeLessThan(0.03);
  }, 90_000);

  it('round_robin is even; least_connections sends fewer events to a slow member', async () => {
    const p = prefix();
    const rr = [
      member(p, 'r-a', 'round_robin'),
      member(p, 'r-b', 'round_robin'),
      member(p, 'r-c', 'round_robin'),
    ];
    await waitFor(() => rr.every((m) => m.ready), 'members', 30_000);
    const { bus, t } = await publisher(p, createStrategy('round_robin'));
    await t.refresh();
    await publishMany(bus, 3000, (i) => `k${i}`);
    await waitFor(() => total(rr) === 3000, 'round robin deliveries', 30_000);
    for (const m of rr) expect(m.handled.length).toBe(1000);

    const q = prefix();
    const lc = [
      member(q, 'l-fast1', 'least_connections'),
      member(q, 'l-fast2', 'least_connections'),
      member(q, 'l-slow', 'least_connections', 30),
    ];
    await waitFor(() => lc.every((m) => m.ready), 'members', 30_000);
    const pub2 = await publisher(q, createStrategy('least_connections'));
    await pub2.t.refresh();
    for (let i = 0; i < 30; i++) {
      await pub2.bus.publishBatch(
        Array.from({ length: 20 }, (_, k) => ({
          type: 'work.item',
          agentId: `x${k}`,
          data: { seq: i * 20 + k },
        })),
      );
      await sleep(60); // pacing: waves the slow member cannot keep up with
    }
    await waitFor(() => total(lc) === 600, 'least-connections deliveries', 60_000);
    const [f1, f2, slow] = lc.map((m) => m.handled.length);
    expect(slow).toBeLessThan(f1!);
    expect(slow).toBeLessThan(f2!);
  }, 120_000);

  it('hash_based keeps each key on one member; killing one of ten moves only its keys', async () => {
    const p = prefix();
    const ms = Array.from({ length: 10 }, (_, i) => member(p, `h-${i}`, 'hash_based'));
    await waitFor(() => ms.every((m) => m.ready), 'ten members', 60_000);
    const { bus, t } = await publisher(p, createStrategy('hash_based'));
    await t.refresh();
    await publishMany(bus, 2000, (i) => `agent-${i % 400}`);
    await waitFor(() => total(ms) === 2000, 'first round', 30_000);
    const owner = new Map<string, string>();
    for (const m of ms)
      for (const h of m.handled) {
        expect(owner.get(h.key) ?? m.id).toBe(m.id); // one member per key
        owner.set(h.key, m.id);
      }
    const victim = ms[3]!;
    expect(await liveMembers(t)).toContain(victim.id);
    victim.proc.kill('SIGKILL');
    // its registration expires after the member TTL (1500 ms): wait until the publisher no longer sees it
    await waitFor(
      async () => !(await liveMembers(t)).includes(victim.id),
      'the killed member to expire',
      15_000,
    );
    expect(await liveMembers(t)).toHaveLength(9);
    for (const m of ms) m.handled.length = 0;
    await publishMany(bus, 2000, (i) => `agent-${i % 400}`);
    const alive = ms.filter((m) => m !== victim);
    await waitFor(() => total(alive) === 2000, 'second round', 30_000);
    for (const m of alive)
      for (const h of m.handled)
        if (owner.get(h.key) !== victim.id) expect(h.key + m.id).toBe(h.key + owner.get(h.key)); // others keep their keys
  }, 120_000);

  it('a member killed while holding events: every one is handled by another member', async () => {
    const p = prefix();
    const holder = member(p, 'k-holder', 'round_robin', 60_000); // takes a minute per event: it will die holding them
    const survivor = member(p, 'k-survivor', 'round_robin');
    await waitFor(() => holder.ready && survivor.ready, 'members', 30_000);
    const { bus, t } = await publisher(p, createStrategy('round_robin'));
    await t.refresh();
    await publishMany(bus, 40, (i) => `z${i}`);
    await waitFor(() => survivor.handled.length === 20, 'the survivor’s half', 20_000);
    holder.proc.kill('SIGKILL');
    await waitFor(() => survivor.handled.length === 40, 'the holder’s half, moved to the survivor', 20_000);
    expect(new Set(survivor.handled.map((h) => h.seq)).size).toBe(40);
  }, 60_000);

  it('per-key order holds under hash_based with 100 keys and 4 members', async () => {
    const p = prefix();
    const ms = Array.from({ length: 4 }, (_, i) => member(p, `o-${i}`, 'hash_based', 2));
    await waitFor(() => ms.every((m) => m.ready), 'members', 30_000);
    const { bus, t } = await publisher(p, createStrategy('hash_based'));
    await t.refresh();
    await publishMany(bus, 3000, (i) => `key-${i % 100}`);
    await waitFor(() => total(ms) === 3000, 'all handled', 60_000);
    for (const m of ms) {
      const last = new Map<string, number>();
      for (const h of m.handled) {
        expect(h.seq).toBeGreaterThan(last.get(h.key) ?? -1);
        last.set(h.key, h.seq);
      }
    }
    expect(ms.filter((m) => m.handled.length > 0).length).toBe(4);
  }, 90_000);

  it('lanes keep per-key order and one event per key at a time, and idle lanes are swept', async () => {
    const p = prefix();
    const redis = new Redis(URL_);
    const t = new RoutedTransport({ inner: new MemoryTransport(), redis, prefix: p, lanes: {} });
    const bus = new QEEventBus({ nodeId: 'lanes', transport: t });
    await bus.start();
    cleanups.push(async () => {
      await bus.stop();
      redis.disconnect();
    });
    const seen = new Map<string, number[]>();
    const active = new Map<string, number>();
    let overlaps = 0;
    let handled = 0;
    await bus.subscribe(
      'lane.*',
      async (e) => {
        const key = e.agentId!;
        if ((active.get(key) ?? 0) > 0) overlaps++;
        active.set(key, (active.get(key) ?? 0) + 1);
        if (key.startsWith('slow')) await sleep(5); // simulated work
        seen.set(key, [...(seen.get(key) ?? []), (e.data as { seq: number }).seq]);
        active.set(key, active.get(key)! - 1);
        handled++;
      },
      { group: 'g', maxConcurrency: 16 },
    ).ready;
    // 3 slow keys with 60 events each, interleaved with 3,000 keys seen once: the sweeps run while slow lanes are busy
    const events = [];
    for (let i = 0; i < 3000; i++) {
      events.push({ type: 'lane.once', agentId: `once-${i}`, data: { seq: 0 } });
      if (i % 50 === 0)
        for (const k of ['slow-a', 'slow-b', 'slow-c'])
          events.push({ type: 'lane.slow', agentId: k, data: { seq: i / 50 } });
    }
    for (let i = 0; i < events.length; i += 200) await bus.publishBatch(events.slice(i, i + 200));
    await waitFor(() => handled === events.length, 'every event handled', 30_000);
    expect(overlaps).toBe(0);
    for (const k of ['slow-a', 'slow-b', 'slow-c'])
      expect(seen.get(k)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    // without sweeps it would keep a lane per key ever seen (3,003)
    expect((t.stats().router as { lanes: number }).lanes).toBeLessThanOrEqual(2100);
  });

  it('a long retry of a shared broadcast delivery is stored by the inner Redis transport, not a timer', async () => {
    const p = prefix();
    const redis = new Redis(URL_);
    const inner = new RedisStreamsTransport({ url: URL_, keyPrefix: p, delayedPollMs: 50 });
    const t = new RoutedTransport({ inner, redis, prefix: `${p}:router` });
    const bus = new QEEventBus({ nodeId: 'routed-retry', transport: t });
    await bus.start();
    cleanups.push(async () => {
      await bus.stop();
      redis.disconnect();
    });
    expect(typeof t.scheduleRetry).toBe('function');
    const flaky: number[] = [];
    let steady = 0;
    await bus.subscribe('retry.*', (_e, ctx) => {
      flaky.push(ctx.attempt);
      // as a retry middleware does: it made one call, so the stored retry is attempt 2
      if (ctx.attempt === 1) throw new RetryLaterError(1500, 'downstream busy', { details: { attempts: 1 } });
    }).ready;
    await bus.subscribe('retry.*', () => void steady++).ready;
    await bus.publish({ type: 'retry.me', agentId: 'a', data: {} });
    await waitFor(() => flaky.length === 1 && steady === 1, 'first deliveries');
    await waitFor(async () => (await redis.zcard(inner.keys.delayed(0))) === 1, 'the retry stored in Redis');
    expect(bus.getDetailedMetrics().retryTimers).toBe(0);
    await waitFor(() => flaky.length === 2, 'the retry', 10_000);
    expect(flaky).toEqual([1, 2]);
    expect(steady).toBe(1);
    expect(await redis.zcard(inner.keys.delayed(0))).toBe(0);
  });
});

describe('a member restarting while another member reaps its previous life', () => {
  it('always joins: its inbox is neither reaped after its first beat nor missing when it reads its pending list', async () => {
    const p = prefix();
    const redis = new Redis(URL_);
    cleanups.push(() => redis.disconnect());
    const mk = (nodeId: string) => {
      const conn = new Redis(URL_);
      const t = new RoutedTransport({
        inner: new MemoryTransport(),
        redis: conn,
        prefix: p,
        heartbeatMs: 10,
        memberTtlMs: 40,
      });
      const bus = new QEEventBus({ nodeId, transport: t });
      return {
        bus,
        t,
        close: async () => {
          await bus.stop().catch(() => {});
          conn.disconnect();
        },
      };
    };
    // A reaps every 10 ms
    const a = mk('A');
    cleanups.push(() => a.close());
    await a.bus.start();
    await a.bus.subscribe('work.*', () => {}, { group: 'g' }).ready;
    const members = a.t.key('members', 'group:g:work.*');
    const failures: string[] = [];
    for (let i = 0; i < 40; i++) {
      // B's previous life: listed with a beat long past, an inbox holding an entry
      await redis.zadd(members, 0, 'B');
      const b = mk('B');
      try {
        await b.bus.start();
        await b.bus.subscribe('work.*', () => {}, { group: 'g' }).ready;
      } catch (e) {
        failures.push(`round ${i}: ${(e as Error).message}`);
      } finally {
        await b.close();
      }
    }
    expect(failures).toEqual([]);
  }, 120_000);
});
