import { QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { deletePrefix, uniquePrefix, until } from '@qe/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, type SpawnedBroker, startBroker } from './spawn-broker.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniquePrefix('broker');
const brokers: SpawnedBroker[] = [];

afterAll(async () => {
  for (const b of brokers) if (b.child.exitCode === null) b.child.kill('SIGKILL');
  await deletePrefix(prefix, REDIS_URL);
});

describe('broker process on Redis (spec 003 variables)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('sees events another process publishes, serves Redis dead letters, redrives them, exits 0 on SIGTERM', async () => {
    const u = new URL(REDIS_URL);
    const b = await startBroker({
      REDIS_HOST: u.hostname,
      REDIS_PORT: u.port || '6379',
      EVENTBUS_KEY_PREFIX: prefix,
      EVENTBUS_BATCH_SIZE: '200',
      EVENTBUS_BATCH_TIMEOUT: '200',
      METRICS_COLLECTION_INTERVAL: '200',
      SERVICE_NAME: 'broker-on-redis',
    });
    brokers.push(b);
    const health = (await (await fetch(`${b.url}/health`)).json()) as {
      status: string;
      transport: { connected: boolean };
    };
    expect(health.status).toBe('healthy');
    expect(health.transport.connected).toBe(true);

    // another node, in this process, on the same Redis and prefix
    const bus = new QEEventBus({
      nodeId: 'broker-test-publisher',
      transport: createRedisTransport({ url: REDIS_URL, keyPrefix: prefix }),
    });
    await bus.start();
    try {
      let failures = 0;
      const sub = bus.subscribe(
        'job.fail',
        () => {
          failures++;
          if (failures === 1) throw new Error('first attempt fails');
        },
        { retryAttempts: 0 },
      );
      await sub.ready;
      const events = [];
      for (let i = 0; i < 30; i++)
        events.push({ type: 'task.create', agentId: `a${i % 3}`, data: { i }, priority: 1 as const });
      for (let i = 0; i < 20; i++)
        events.push({ type: 'agent.heartbeat', agentId: `a${i % 3}`, data: { i }, priority: 3 as const });
      await bus.publishBatch(events);
      await bus.publish({ type: 'job.fail', agentId: 'x', data: null });

      const dash = await until(
        async () =>
          (await (await fetch(`${b.url}/api/dashboard`)).json()) as {
            transport: string;
            totals: { handled: number };
            byFamily: Record<string, number>;
            byPriority: Record<string, number>;
          },
        (d) => d.totals.handled >= 51,
        'the broker to handle the 51 events',
      );
      expect(dash.transport).toBe('redis-streams');
      expect(dash.byFamily).toMatchObject({ task: 30, agent: 20, job: 1 });
      expect(dash.byPriority).toMatchObject({ high: 30, low: 20, normal: 1 });

      const list = await until(
        async () =>
          (await (await fetch(`${b.url}/dead-letters`)).json()) as {
            count: number;
            deadLetters: { id: string; event: { type: string } }[];
          },
        (l) => l.count === 1,
        'the dead letter',
      );
      expect(list.deadLetters[0]!.event.type).toBe('job.fail');
      const redrive = await fetch(`${b.url}/dead-letters/redrive`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ids: [list.deadLetters[0]!.id] }),
      });
      expect(await redrive.json()).toEqual({ redriven: 1 });
      await until(
        async () => failures,
        (n) => n === 2,
        'the redriven call',
      );
      const metrics = await (await fetch(`${b.url}/metrics`)).text();
      expect(metrics).toMatch(/^qe_eventbus_events_consumed_total\{family="task",priority="high"\} 30$/m);
      expect(metrics).toMatch(/^qe_eventbus_consumer_pending\{group="[^"]+"\} \d+$/m); // per-group figures from Redis
    } finally {
      await bus.stop({ leave: true });
    }
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
  });

  it('exits 1 with a clear log when Redis is unreachable', async () => {
    const { runBroker } = await import('./spawn-broker.js');
    const r = await runBroker({ REDIS_URL: 'redis://127.0.0.1:7349', EVENTBUS_KEY_PREFIX: prefix });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /"msg":"cannot start".*ECONNREFUSED|"msg":"cannot start".*cannot connect to Redis/,
    );
  });
});

describe('broker process on a Redis Cluster (REDIS_CLUSTER_NODES)', () => {
  it('consumes what another node publishes to the cluster and reports it', async () => {
    const { startCluster } = await import('./redis-cluster.js');
    const cluster = await startCluster([7300, 7301, 7302]);
    const clusterPrefix = `qe-test:broker:${Math.random().toString(36).slice(2, 10)}`;
    try {
      const b = await startBroker({
        REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(','),
        EVENTBUS_KEY_PREFIX: clusterPrefix,
        METRICS_COLLECTION_INTERVAL: '200',
      });
      brokers.push(b);
      const cfg = (await (await fetch(`${b.url}/api/config`)).json()) as {
        redis: { mode: string; nodes: unknown[] };
      };
      expect(cfg.redis.mode).toBe('cluster');
      expect(cfg.redis.nodes).toHaveLength(3);
      const bus = new QEEventBus({
        nodeId: 'broker-cluster-publisher',
        transport: createRedisTransport({ cluster: { nodes: cluster.nodes }, keyPrefix: clusterPrefix }),
      });
      await bus.start();
      try {
        const events = [];
        // many agents: the transport partitions streams by agentId, so events land on several masters
        for (let i = 0; i < 60; i++)
          events.push({ type: 'swarm.phase.transition', agentId: `agent-${i}`, data: { i } });
        await bus.publishBatch(events);
        const dash = await until(
          async () =>
            (await (await fetch(`${b.url}/api/dashboard`)).json()) as {
              totals: { handled: number };
              byFamily: Record<string, number>;
            },
          (d) => d.totals.handled >= 60,
          'the broker to handle the 60 events',
          15_000,
        );
        expect(dash.byFamily).toEqual({ swarm: 60 });
        const health = (await (await fetch(`${b.url}/health`)).json()) as { status: string };
        expect(health.status).toBe('healthy');
      } finally {
        await bus.stop({ leave: true });
      }
      b.child.kill('SIGTERM');
      expect(await b.exited).toBe(0);
    } finally {
      await cluster.stop();
    }
  }, 60_000);
});
