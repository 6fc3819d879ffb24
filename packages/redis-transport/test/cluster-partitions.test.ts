/**
 * Issue #22 items 1-4 on a local Cluster of our own (ports 7400-7405, cluster
 * bus 17400-17405), 3 masters + 3 replicas, `cluster-require-full-coverage no`
 * so the other masters keep serving while one master and its replica are dead.
 * The tests that kill nodes run last.
 */
import { randomUUID } from 'node:crypto';
import { type AgentEvent, type EventBusError, QEEventBus } from '@qe/core';
import { waitFor } from '@qe/transport-conformance';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamsTransport, type RedisTransportOptions } from '../src/index.js';
import { type LocalCluster, startCluster } from './cluster.js';
import { uniquePrefix } from './helpers.js';

let cluster: LocalCluster;
beforeAll(async () => {
  cluster = await startCluster(7400, { args: ['--cluster-require-full-coverage', 'no'] });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const transport = (keyPrefix: string, o: RedisTransportOptions = {}) =>
  new RedisStreamsTransport({ cluster: { nodes: cluster.nodes }, keyPrefix, partitions: 6, ...o });

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const idx = (e: AgentEvent) => (e.data as { i: number }).i;

describe('cluster: order (issue #22 items 3 and 4)', () => {
  it('history and replay return events in publish order across partitions on different masters; entries without a clock stay readable', async () => {
    const keyPrefix = uniquePrefix('order');
    const b = new QEEventBus({ nodeId: 'order', transport: transport(keyPrefix) });
    await b.start();
    const c = new Cluster(cluster.nodes);
    try {
      const t = b.transport as RedisStreamsTransport;
      const masters = new Set(
        await Promise.all(range(6).map(async (p) => (await cluster.owners(t.keys.stream(p, 2))).master)),
      );
      expect(masters.size).toBeGreaterThanOrEqual(2);
      // an entry as written before the publisher clock existed (fields e and t only), first in history
      const legacy = (i: number): AgentEvent => ({
        id: randomUUID(),
        type: 'ord.legacy',
        agentId: 'legacy',
        timestamp: Date.now(),
        priority: 2,
        data: { i },
      });
      const oldKey = t.keys.stream(t.keys.partitionFor('legacy'), 2);
      await c.xadd(oldKey, `${Date.now() - 60_000}-0`, 'e', t.serializer.encode(legacy(-1)), 't', '0');
      // one batch: every partition's chunk is written in the same millisecond on its own master,
      // so stream ids tie across masters (ms-0, ms-1, ... on each)
      const agents = range(24).map((a) => `agent-${a}`);
      await b.publishBatch(range(600).map((i) => ({ type: 'ord.x', agentId: agents[i % 24]!, data: { i } })));
      // a legacy entry whose stream id is later than the batch is read back last
      await c.xadd(oldKey, `${Date.now() + 1000}-0`, 'e', t.serializer.encode(legacy(600)), 't', '0');
      const want = [-1, ...range(601)];
      const recent = await b.getRecentEvents({ limit: 1000 });
      expect(recent.map(idx)).toEqual(want);
      const last100 = await b.getRecentEvents({ pattern: 'ord.*', limit: 100 });
      expect(last100.map(idx)).toEqual(want.slice(-100));
      const replayed: number[] = [];
      const n = await b.replay({}, (e) => void replayed.push(idx(e)));
      expect(n).toBe(602);
      expect(replayed).toEqual(want);
    } finally {
      c.disconnect();
      await b.stop();
    }
  });

  it('partitions is the choice of order: 1 gives global order across agents, more give order per agentId', async () => {
    const run = async (partitions: number) => {
      const keyPrefix = uniquePrefix(`scope${partitions}`);
      const producer = new QEEventBus({
        nodeId: `scope-p${partitions}`,
        transport: transport(keyPrefix, { partitions }),
      });
      const consumer = new QEEventBus({
        nodeId: `scope-c${partitions}`,
        transport: transport(keyPrefix, { partitions }),
      });
      await producer.start();
      await consumer.start();
      try {
        const got: AgentEvent[] = [];
        await consumer.subscribe('scope.*', (e) => void got.push(e)).ready;
        for (let k = 0; k < 6; k++)
          await producer.publishBatch(
            range(100).map((j) => ({
              type: 'scope.x',
              agentId: `agent-${j % 20}`,
              data: { i: k * 100 + j },
            })),
          );
        await waitFor(() => got.length === 600, '600 events', 20_000);
        const health = await producer.transport.healthCheck();
        const perAgent = new Map<string, number[]>();
        for (const e of got) perAgent.set(e.agentId, [...(perAgent.get(e.agentId) ?? []), idx(e)]);
        let outOfGlobalOrder = 0;
        for (let k = 1; k < got.length; k++) if (idx(got[k]!) < idx(got[k - 1]!)) outOfGlobalOrder++;
        return { got: got.map(idx), perAgent, scope: health.details?.ordering, outOfGlobalOrder };
      } finally {
        await producer.stop();
        await consumer.stop();
      }
    };
    const one = await run(1);
    expect(one.scope).toBe('global');
    expect(one.got).toEqual(range(600));
    const six = await run(6);
    expect(six.scope).toBe('per-agentId');
    for (const list of six.perAgent.values()) expect(list).toEqual([...list].sort((a, b) => a - b));
    console.info(
      `[order] partitions 1: 0 of 600 out of global order; partitions 6: ${six.outOfGlobalOrder} of 600 behind their predecessor (each agent in order)`,
    );
  }, 60_000);
});

describe('cluster: health is not cleared by a stale answer (issue #22 item 2)', () => {
  it('a probe round that began before a failure does not mark the failed partition available', async () => {
    const b = new QEEventBus({
      nodeId: 'stale',
      transport: transport(uniquePrefix('stale'), { probeTimeoutMs: 10_000 }),
    });
    await b.start();
    const t = b.transport as RedisStreamsTransport;
    const owners = await Promise.all(range(6).map((p) => cluster.owners(t.keys.stream(p, 0))));
    const p = 0;
    const slow = owners.find((o) => o.master !== owners[p]!.master)!.master;
    const onSlow = range(6).filter((q) => owners[q]!.master === slow);
    const observations = () => (t as unknown as { observations: number }).observations;
    const pauser = new Redis(slow);
    try {
      // the other master answers its probes; the paused one holds the round open
      await pauser.call('CLIENT', 'PAUSE', '3000', 'ALL');
      // no round of the transport's own prober under way: ours starts now, after the pause
      await waitFor(
        () => (t as unknown as { probing: unknown }).probing === null,
        'no probe round under way',
      );
      const before = observations();
      let roundDone = false;
      const round = t.probePartitions().then(() => {
        roundDone = true;
      });
      await waitFor(
        () => observations() - before >= 6 - onSlow.length,
        'the probes of the partitions off the paused master answered',
      );
      // then a read of partition p fails: that failure is newer than the round's answer for p
      t.markPartition(p, new Error('read failed after the probe answered'));
      expect(roundDone).toBe(false);
      await round;
      expect(t.isPartitionDown(p)).toBe(true);
      expect(t.isConnected()).toBe(false);
      // an answer that arrives after the failure clears it
      await t.probePartitions();
      expect(t.isPartitionDown(p)).toBe(false);
      expect((await t.healthCheck()).status).toBe('healthy');
    } finally {
      pauser.disconnect();
      await b.stop();
    }
  }, 30_000);
});

describe('cluster: a dead master and its replica, nobody taking over its slots (issue #22 items 1 and 2)', () => {
  const opts = { claimIdleMs: 30_000, probeTimeoutMs: 1000, closeTimeoutMs: 3000 };
  let producer: QEEventBus;
  let consumer: QEEventBus;
  const errors = { producer: [] as EventBusError[], consumer: [] as EventBusError[] };
  const handledAt = new Map<string, number>();
  const agentOf = new Map<number, string>();
  let victim: { master: number; replicas: number[] };
  let dead: number[];
  let live: number[];
  let killedAt = 0;

  beforeAll(async () => {
    const keyPrefix = uniquePrefix('iso');
    producer = new QEEventBus({ nodeId: 'iso-p', transport: transport(keyPrefix, opts) });
    consumer = new QEEventBus({ nodeId: 'iso-c', transport: transport(keyPrefix, opts) });
    producer.on('error', (e) => void errors.producer.push(e as EventBusError));
    consumer.on('error', (e) => void errors.consumer.push(e as EventBusError));
    await producer.start();
    await consumer.start();
    const tp = producer.transport as RedisStreamsTransport;
    const owners = await Promise.all(range(6).map((p) => cluster.owners(tp.keys.stream(p, 0))));
    victim = owners[0]!;
    dead = range(6).filter((p) => owners[p]!.master === victim.master);
    live = range(6).filter((p) => owners[p]!.master !== victim.master);
    for (let a = 0; agentOf.size < 6; a++) {
      const p = tp.keys.partitionFor(`agent-${a}`);
      if (!agentOf.has(p)) agentOf.set(p, `agent-${a}`);
    }
    await consumer.subscribe('iso.*', (e) => void handledAt.set(e.id, Date.now())).ready;
    // every partition's loop is running
    const warm = await Promise.all(
      range(6).map((p) => producer.publish({ type: 'iso.warm', agentId: agentOf.get(p)!, data: {} })),
    );
    await waitFor(() => warm.every((e) => handledAt.has(e.id)), 'warm-up on every partition');
    expect(tp.isConnected()).toBe(true);
    expect((await tp.healthCheck()).status).toBe('healthy');
    // the master of partition 0 and its replica die: nobody takes over its slots
    await Promise.all(
      [victim.master, ...victim.replicas].map((port) => cluster.server(port).stop('SIGKILL')),
    );
    killedAt = Date.now();
  }, 60_000);

  afterAll(async () => {
    await producer?.stop().catch(() => {});
    await consumer?.stop().catch(() => {});
  });

  it('item 1: events on the other masters are handled at once while it stays dead', async () => {
    expect(live.length).toBeGreaterThan(0);
    const published: { id: string; at: number }[] = [];
    for (let k = 0; k < 30; k++) {
      const p = live[k % live.length]!;
      const e = await producer.publish({ type: 'iso.x', agentId: agentOf.get(p)!, data: { k } });
      published.push({ id: e.id, at: Date.now() });
    }
    await waitFor(
      () => published.every((e) => handledAt.has(e.id)),
      'events on the live masters handled while another master is dead',
      10_000,
    );
    const delays = published.map((e) => handledAt.get(e.id)! - e.at);
    console.info(
      `[isolation] ${dead.length} of 6 partitions dead; 30 events on the ${live.length} others handled, publish-to-handler max ${Math.max(...delays)} ms (first publish ${published[0]!.at - killedAt} ms after the kill)`,
    );
  }, 30_000);

  it('item 2: isConnected(), error events and a bounded healthCheck() name the unavailable partitions', async () => {
    const node = `127.0.0.1:${victim.master}`;
    const pairs = [
      [producer.transport as RedisStreamsTransport, errors.producer],
      [consumer.transport as RedisStreamsTransport, errors.consumer],
    ] as const;
    for (const [t, errs] of pairs) {
      await waitFor(() => !t.isConnected(), 'isConnected() false while a partition is unavailable', 10_000);
      await waitFor(
        () => errs.some((e) => e.code === 'TRANSPORT' && /partition \d+ \(slot \d+ on /.test(e.message)),
        'an error event naming the unavailable partition',
        10_000,
      );
      const started = performance.now();
      const h = await t.healthCheck();
      const took = performance.now() - started;
      expect(took).toBeLessThan(5000);
      expect(h.status).toBe('degraded');
      expect(h.connected).toBe(false);
      const unavailable = h.details!.unavailable as { partition: number; slot: number; node: string }[];
      expect(unavailable.map((u) => u.partition)).toEqual(dead);
      for (const u of unavailable) {
        expect(u.node).toBe(node);
        expect(u.slot).toBe(t.partitionWhere(u.partition).slot);
      }
      expect(h.reasons.join('\n')).toMatch(/partitions unavailable/);
      expect(t.stats().unavailablePartitions).toBe(dead.length);
      console.info(`[health] answered in ${took.toFixed(0)} ms: ${h.reasons[0]}`);
    }
    expect((await producer.healthCheck()).status).toBe('degraded');
  }, 60_000);
});
