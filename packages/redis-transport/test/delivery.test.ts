import { QEEventBus } from '@qe/core';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStreamsTransport, type RedisTransportOptions } from '../src/index.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startBus(nodeId: string, options: RedisTransportOptions, shutdownTimeoutMs = 10_000) {
  const bus = new QEEventBus({
    nodeId,
    transport: new RedisStreamsTransport({ url: REDIS_URL, ...options }),
    shutdownTimeoutMs,
  });
  bus.on('error', () => {});
  await bus.start();
  cleanups.push(() => bus.stop().catch(() => {}));
  return bus;
}

function redis(): Redis {
  const r = new Redis(REDIS_URL);
  cleanups.push(() => r.disconnect());
  return r;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('redis streams delivery', () => {
  it('two members of a group with maxConcurrency 1 and slow handlers share a burst (each reads only its free slots)', async () => {
    const keyPrefix = uniquePrefix('fair');
    cleanups.push(() => deletePrefix(keyPrefix));
    const a = await startBus('fair-a', { keyPrefix });
    const b = await startBus('fair-b', { keyPrefix });
    const r = redis();
    const counts = { a: 0, b: 0 };
    const handled = new Set<number>();
    let maxHeld = 0;
    const stream = (a.transport as RedisStreamsTransport).keys.stream(0, 2);
    const handler = (who: 'a' | 'b') => async (e: { data: unknown }) => {
      await sleep(20);
      counts[who]++;
      handled.add((e.data as { i: number }).i);
    };
    await a.subscribe('fair.*', handler('a'), { group: 'workers', maxConcurrency: 1 }).ready;
    await b.subscribe('fair.*', handler('b'), { group: 'workers', maxConcurrency: 1 }).ready;
    // one burst: a single publish-script call appends all 40 entries
    await a.publishBatch(
      Array.from({ length: 40 }, (_, i) => ({ type: 'fair.job', agentId: 'p', data: { i } })),
    );
    await waitFor(
      async () => {
        // what each member holds (read, not acked): never a whole burst
        const summary = (await r.xpending(stream, 'g:group:workers:fair.*')) as [
          number,
          unknown,
          unknown,
          [string, string][] | null,
        ];
        for (const [, n] of summary[3] ?? []) maxHeld = Math.max(maxHeld, Number(n));
        return handled.size === 40;
      },
      'all 40 events handled',
      20_000,
    );
    console.log(
      `[fairness] 40 events, 20 ms handlers, maxConcurrency 1: member a ${counts.a}, member b ${counts.b}; most held by one member ${maxHeld}`,
    );
    expect(counts.a + counts.b).toBe(40);
    expect(Math.min(counts.a, counts.b)).toBeGreaterThanOrEqual(10);
    expect(maxHeld).toBeLessThanOrEqual(5); // its free slot, at most one per priority stream
  });

  it('a member that crashes mid-burst holds only what it could run: the idle member handles the rest at once', async () => {
    const keyPrefix = uniquePrefix('fairdead');
    cleanups.push(() => deletePrefix(keyPrefix));
    // claimIdleMs far away: what the crashed member holds waits for it; everything else must not
    const a = await startBus('fairdead-a', { keyPrefix, claimIdleMs: 600_000 }, 500);
    const b = await startBus('fairdead-b', { keyPrefix, claimIdleMs: 600_000 }, 500);
    const r = redis();
    let aCalls = 0;
    const byB = new Set<number>();
    await a.subscribe(
      'fd.*',
      async () => {
        aCalls++;
        await (a.transport as RedisStreamsTransport).kill(); // crash: nothing acked, connections gone
        return new Promise(() => {});
      },
      { group: 'workers', maxConcurrency: 1 },
    ).ready;
    await b.subscribe('fd.*', async (e) => void byB.add((e.data as { i: number }).i), {
      group: 'workers',
      maxConcurrency: 1,
    }).ready;
    await b.publishBatch(
      Array.from({ length: 40 }, (_, i) => ({ type: 'fd.job', agentId: 'p', data: { i } })),
    );
    await waitFor(() => aCalls === 1, 'the first member to take one and crash');
    const stream = (b.transport as RedisStreamsTransport).keys.stream(0, 2);
    const heldByA = async () => {
      const summary = (await r.xpending(stream, 'g:group:workers:fd.*')) as [
        number,
        unknown,
        unknown,
        [string, string][] | null,
      ];
      return Number((summary[3] ?? []).find(([c]) => c === 'fairdead-a')?.[1] ?? 0);
    };
    const held = await heldByA();
    expect(held).toBeGreaterThanOrEqual(1);
    expect(held).toBeLessThanOrEqual(5); // its one slot, at most one entry per priority stream
    await waitFor(
      () => byB.size === 40 - held,
      `the other member to handle the ${40 - held} events not held`,
      15_000,
    );
  }, 30_000);

  it('stop() flushes the acks of every handled event before it closes: none of them stays pending', async () => {
    const keyPrefix = uniquePrefix('stopack');
    cleanups.push(() => deletePrefix(keyPrefix));
    const bus = await startBus('stopack', { keyPrefix });
    const handledIds: string[] = [];
    let started = 0;
    await bus.subscribe(
      'stop.*',
      async (_e, ctx) => {
        started++;
        await sleep(5);
        handledIds.push(ctx.delivery.transportId!);
      },
      { group: 'g', maxConcurrency: 8 },
    ).ready;
    await bus.publishBatch(
      Array.from({ length: 300 }, (_, i) => ({ type: 'stop.x', agentId: 'p', data: { i } })),
    );
    await waitFor(() => started >= 40, 'handlers running');
    await bus.stop(); // handlers in flight and queued finish during stop
    expect(handledIds.length).toBeGreaterThan(0);
    const r = redis();
    const stream = (bus.transport as RedisStreamsTransport).keys.stream(0, 2);
    const pending = new Set(
      ((await r.xpending(stream, 'g:group:g:stop.*', '-', '+', 10_000)) as [string][]).map(([id]) => id),
    );
    const handledPending = handledIds.filter((id) => pending.has(id));
    expect(handledPending).toEqual([]);
  });

  it('a node restarted with the same id takes back all its own pending entries, past the first 1,000', async () => {
    const keyPrefix = uniquePrefix('ownpel');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = redis();
    const t = new RedisStreamsTransport({ keyPrefix });
    const stream = t.keys.stream(0, 2);
    const group = 'g:group:own:own.*';
    // the state a crashed node leaves behind: 1,500 entries read by it, never acked
    await r.xgroup('CREATE', stream, group, '$', 'MKSTREAM');
    const frames: string[] = [];
    for (let i = 0; i < 1500; i++)
      frames.push(
        JSON.stringify({
          id: `e${i}`,
          type: 'own.x',
          agentId: 'p',
          timestamp: Date.now(),
          priority: 2,
          data: { i },
        }),
      );
    for (let i = 0; i < frames.length; i += 500) {
      const p = r.pipeline();
      for (const f of frames.slice(i, i + 500)) p.xadd(stream, '*', 'e', f, 't', String(Date.now()));
      await p.exec();
    }
    const read = (await r.xreadgroup('GROUP', group, 'returner', 'COUNT', 2000, 'STREAMS', stream, '>')) as [
      string,
      unknown[],
    ][];
    expect(read[0]![1].length).toBe(1500);
    // claimIdleMs far away: only the restart path can bring them back within the test
    const bus = await startBus('returner', { keyPrefix, claimIdleMs: 600_000 });
    const seen = new Set<number>();
    await bus.subscribe('own.*', (e) => void seen.add((e.data as { i: number }).i), {
      group: 'own',
      maxConcurrency: 64,
    }).ready;
    await waitFor(() => seen.size === 1500, 'all 1,500 pending entries handled', 15_000);
    await waitFor(async () => Number(((await r.xpending(stream, group)) as [number])[0]) === 0, 'all acked');
  }, 30_000);
});
