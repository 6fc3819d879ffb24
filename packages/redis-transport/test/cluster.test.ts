import { QEEventBus } from '@qe/core';
import { describeTransportConformance, waitFor } from '@qe/transport-conformance';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySlot, send } from '../src/command.js';
import { RedisPubSubTransport, RedisStreamsTransport } from '../src/index.js';
import { type LocalCluster, startCluster } from './cluster.js';
import { uniquePrefix } from './helpers.js';

let cluster: LocalCluster;
beforeAll(async () => {
  cluster = await startCluster(7120);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const transport = (keyPrefix: string) =>
  new RedisStreamsTransport({
    cluster: { nodes: cluster.nodes },
    keyPrefix,
    partitions: 3,
    claimIdleMs: 500,
  });

describeTransportConformance({
  name: 'redis-streams (cluster: 3 masters + 3 replicas)',
  capabilities: new RedisStreamsTransport({ cluster: { nodes: [{ host: '127.0.0.1', port: 1 }] } })
    .capabilities,
  redeliveryTimeoutMs: 10_000,
  async setup() {
    const keyPrefix = uniquePrefix('cluster');
    return {
      createTransport: () => transport(keyPrefix),
      crash: (t) => (t as RedisStreamsTransport).kill(),
    };
  },
});

describe('redis cluster specifics', () => {
  it('pub/sub on a Cluster: a single publish and a batch arrive whole and in order', async () => {
    const keyPrefix = uniquePrefix('ps');
    const mk = (nodeId: string) =>
      new QEEventBus({
        nodeId,
        transport: new RedisPubSubTransport({ cluster: { nodes: cluster.nodes }, keyPrefix }),
      });
    const [producer, consumer] = [mk('ps-cluster-p'), mk('ps-cluster-c')];
    await producer.start();
    await consumer.start();
    try {
      const got: number[] = [];
      await consumer.subscribe('psc.*', (e) => void got.push((e.data as { i: number }).i)).ready;
      await producer.publish({ type: 'psc.one', agentId: 'a', data: { i: 0 } });
      await producer.publishBatch(
        Array.from({ length: 50 }, (_, k) => ({
          type: 'psc.many',
          agentId: `a${k % 5}`,
          data: { i: k + 1 },
        })),
      );
      await waitFor(() => got.length === 51, 'all 51 events');
      expect(got).toEqual(Array.from({ length: 51 }, (_, i) => i));
    } finally {
      await producer.stop();
      await consumer.stop();
    }
  });

  it("routes the transport's own commands by the key slot Redis computes, and follows MOVED", async () => {
    const c = new Cluster(cluster.nodes);
    try {
      const keys: (string | Buffer)[] = [
        'a',
        'qe:{qe:p1}:s:2',
        '{}x',
        'x{}y{z}',
        '{user1000}.following',
        'tag{',
        Buffer.from([0xff, 0x00, 0x7b, 0x80, 0x7d]),
      ];
      for (const k of keys) expect(keySlot(k)).toBe(Number(await c.cluster('KEYSLOT', k as string)));
      const set = (args: string[], routeBy: string) => send(c, 'set', args, routeBy);
      const prefix = uniquePrefix('route');
      const owner = async (k: string) => {
        const slot = keySlot(k);
        const slots = (await c.cluster('SLOTS')) as unknown as [number, number, [string, number]][];
        return slots.find(([lo, hi]) => slot >= lo && slot <= hi)![2][1];
      };
      // two keys on different masters
      const k1 = `${prefix}:{a}`;
      let k2 = '';
      for (let i = 0; !k2; i++)
        if ((await owner(`${prefix}:{b${i}}`)) !== (await owner(k1))) k2 = `${prefix}:{b${i}}`;
      await expect(set([k1, 'one'], k1)).resolves.toBe('OK');
      // routed by the wrong key: the first node answers MOVED and ioredis retries on the right one
      await expect(set([k2, 'two'], k1)).resolves.toBe('OK');
      expect(await c.get(k1)).toBe('one');
      expect(await c.get(k2)).toBe('two');
      await c.del(k1);
      await c.del(k2);
    } finally {
      c.disconnect();
    }
  });

  it('spreads partitions over the masters and keeps one agent on one partition', async () => {
    const keyPrefix = uniquePrefix('spread');
    const b = new QEEventBus({ nodeId: 'spread', transport: transport(keyPrefix) });
    await b.start();
    try {
      for (let i = 0; i < 60; i++)
        await b.publish({ type: 'spread.x', agentId: `agent-${i % 12}`, data: { i } });
      const c = new Cluster(cluster.nodes);
      const t = b.transport as RedisStreamsTransport;
      const owners = new Set<string>();
      for (let p = 0; p < 3; p++) {
        const slot = Number(await c.cluster('KEYSLOT', t.keys.stream(p, 2)));
        const slots = (await c.cluster('SLOTS')) as unknown as [number, number, [string, number]][];
        const owner = slots.find(([lo, hi]) => slot >= lo && slot <= hi)!;
        owners.add(String(owner[2][1]));
      }
      const lens = await Promise.all([0, 1, 2].map((p) => c.xlen(t.keys.stream(p, 2))));
      c.disconnect();
      expect(lens.reduce((a, b) => a + b, 0)).toBe(60);
      expect(lens.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
      expect(owners.size).toBeGreaterThanOrEqual(2);
    } finally {
      await b.stop();
    }
  });

  it('scheduled retries keep to one slot per partition and are promoted on every partition', async () => {
    const keyPrefix = uniquePrefix('delayed');
    const b = new QEEventBus({
      nodeId: 'delayed',
      transport: new RedisStreamsTransport({
        cluster: { nodes: cluster.nodes },
        keyPrefix,
        partitions: 3,
        delayedPollMs: 50,
      }),
      retryAttempts: 2,
      retryDelay: 400,
      maxRetryDelay: 400,
      durableRetryAboveMs: 100,
    });
    await b.start();
    const c = new Cluster(cluster.nodes);
    try {
      const t = b.transport as RedisStreamsTransport;
      for (let p = 0; p < 3; p++) {
        const slot = Number(await c.cluster('KEYSLOT', t.keys.stream(p, 0)));
        expect(Number(await c.cluster('KEYSLOT', t.keys.delayed(p)))).toBe(slot);
      }
      const attempts = new Map<string, number[]>();
      await b.subscribe(
        'dly.*',
        (e, ctx) => {
          const list = attempts.get(e.agentId) ?? [];
          list.push(ctx.attempt);
          attempts.set(e.agentId, list);
          if (ctx.attempt === 1) throw new Error('first call fails');
        },
        { group: 'g' },
      ).ready;
      // enough agents to land on every partition
      const agents = Array.from({ length: 12 }, (_, i) => `agent-${i}`);
      expect(new Set(agents.map((a) => t.keys.partitionFor(a))).size).toBe(3);
      for (const agentId of agents) await b.publish({ type: 'dly.x', agentId, data: {} });
      await waitFor(
        () => agents.every((a) => attempts.get(a)?.length === 2),
        'every event retried once from its partition',
        15_000,
      );
      expect(agents.map((a) => attempts.get(a))).toEqual(agents.map(() => [1, 2]));
      expect(t.counters.scheduled).toBe(12);
      const left = await Promise.all([0, 1, 2].map((p) => c.zcard(t.keys.delayed(p))));
      expect(left).toEqual([0, 0, 0]);
    } finally {
      c.disconnect();
      await b.stop();
    }
  });

  it('keeps consuming when a master fails over to its replica', async () => {
    const keyPrefix = uniquePrefix('failover');
    const producer = new QEEventBus({ nodeId: 'fo-p', transport: transport(keyPrefix) });
    const consumer = new QEEventBus({ nodeId: 'fo-c', transport: transport(keyPrefix) });
    producer.on('error', () => {});
    consumer.on('error', () => {});
    await producer.start();
    await consumer.start();
    try {
      const handled = new Set<string>();
      await consumer.subscribe('fo.*', (e) => void handled.add(e.id), { group: 'g' }).ready;
      const acknowledged: string[] = [];
      for (let i = 0; i < 50; i++)
        acknowledged.push((await producer.publish({ type: 'fo.x', agentId: `a${i}`, data: { i } })).id);
      await waitFor(() => handled.size === 50, 'traffic before failover');
      // kill the master serving partition 0
      const c = new Cluster(cluster.nodes);
      const t = producer.transport as RedisStreamsTransport;
      const slot = Number(await c.cluster('KEYSLOT', t.keys.stream(0, 2)));
      const slots = (await c.cluster('SLOTS')) as unknown as [number, number, [string, number]][];
      const masterPort = slots.find(([lo, hi]) => slot >= lo && slot <= hi)![2][1];
      c.disconnect();
      await cluster.server(masterPort).stop('SIGKILL');
      let failed = 0;
      const deadline = Date.now() + 30_000;
      let i = 50;
      while (acknowledged.length < 150 && Date.now() < deadline) {
        try {
          acknowledged.push((await producer.publish({ type: 'fo.x', agentId: `a${i}`, data: { i } })).id);
          i++;
        } catch {
          failed++;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await waitFor(
        () => acknowledged.every((id) => handled.has(id)),
        'every acknowledged event after failover',
        30_000,
      );
      console.info(`[failover] acknowledged ${acknowledged.length}, rejected during failover ${failed}`);
      expect(acknowledged.length).toBeGreaterThanOrEqual(150);
    } finally {
      await producer.stop().catch(() => {});
      await consumer.stop().catch(() => {});
    }
  }, 90_000);
});
