import { type AgentEvent, QEEventBus } from '@qe/core';
import { startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStreamsTransport } from '../src/index.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('redis lifecycle', () => {
  it('replays a time range and an id range, in publish order, filtered by pattern', async () => {
    const keyPrefix = uniquePrefix('replay');
    cleanups.push(() => deletePrefix(keyPrefix));
    const bus = new QEEventBus({
      nodeId: 'replayer',
      transport: new RedisStreamsTransport({ url: REDIS_URL, keyPrefix }),
    });
    await bus.start();
    cleanups.push(() => bus.stop());
    for (let i = 0; i < 5; i++)
      await bus.publish({ type: 'hist.early', agentId: 'a', data: { i }, priority: (i % 5) as 0 });
    await new Promise((r) => setTimeout(r, 20));
    const from = Date.now();
    for (let i = 5; i < 10; i++)
      await bus.publish({ type: i % 2 ? 'hist.odd' : 'hist.even', agentId: 'a', data: { i } });
    const seen: AgentEvent[] = [];
    expect(await bus.replay({ from }, (e) => void seen.push(e))).toBe(5);
    expect(seen.map((e) => (e.data as { i: number }).i)).toEqual([5, 6, 7, 8, 9]);
    const odd: number[] = [];
    await bus.replay({ from, pattern: 'hist.odd' }, (e) => void odd.push((e.data as { i: number }).i));
    expect(odd).toEqual([5, 7, 9]);
    const all: number[] = [];
    await bus.replay({}, (e) => void all.push((e.data as { i: number }).i));
    expect(all).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // across the five priority streams, merged by time
    const limited: number[] = [];
    expect(await bus.replay({ limit: 3 }, (e) => void limited.push((e.data as { i: number }).i))).toBe(3);
  });

  it('a node leaving for good removes its own consumer groups; stopping without leaving keeps them', async () => {
    const keyPrefix = uniquePrefix('leave');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = new Redis(REDIS_URL);
    cleanups.push(() => r.disconnect());
    const t = () => new RedisStreamsTransport({ url: REDIS_URL, keyPrefix });
    const groupsOf = async () => {
      const stream = t().keys.stream(0, 2);
      return ((await r.xinfo('GROUPS', stream)) as unknown[][]).map((g) => String(g[1]));
    };
    const a = new QEEventBus({ nodeId: 'stays', transport: t() });
    await a.start();
    await a.subscribe('x.*', () => {}).ready;
    await a.stop();
    expect(await groupsOf()).toContain('bc:stays:broadcast');
    const b = new QEEventBus({ nodeId: 'leaves', transport: t() });
    await b.start();
    await b.subscribe('x.*', () => {}).ready;
    expect(await groupsOf()).toContain('bc:leaves:broadcast');
    await b.stop({ leave: true });
    expect(await groupsOf()).not.toContain('bc:leaves:broadcast');
  });

  it('after Redis restarts without its data, consumers re-create their groups and keep consuming', async () => {
    const server = await startRedis(7150, ['--appendonly', 'no']);
    cleanups.push(async () => {
      await server.stop();
      server.cleanup();
    });
    const url = `redis://127.0.0.1:${server.port}`;
    const keyPrefix = uniquePrefix('nogroup');
    const errors: Error[] = [];
    const bus = new QEEventBus({
      nodeId: 'resilient',
      transport: new RedisStreamsTransport({ url, keyPrefix, blockMs: 100 }),
    });
    bus.on('error', (e) => errors.push(e));
    await bus.start();
    cleanups.push(() => bus.stop());
    const got: number[] = [];
    await bus.subscribe('ng.*', (e) => void got.push((e.data as { i: number }).i), { group: 'g' }).ready;
    await bus.publish({ type: 'ng.x', agentId: 'a', data: { i: 1 } });
    await waitFor(() => got.length === 1, 'before the restart');
    await server.stop('SIGKILL'); // no persistence: the streams and groups are gone
    await server.restart();
    await waitFor(
      async () => {
        try {
          await bus.publish({ type: 'ng.x', agentId: 'a', data: { i: 2 } });
          return true;
        } catch {
          return false;
        }
      },
      'publishing again',
      15_000,
    );
    await waitFor(() => got.includes(2), 'consumption to resume by itself', 15_000);
    expect(bus.isConnected()).toBe(true);
  });
});
