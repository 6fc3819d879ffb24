import type { QEEventBus } from '@qe/core';
import { sleep, until, waitFor } from '@qe/test-utils';
import { describe, expect, it } from 'vitest';
import { createBroker } from './broker.js';
import { loadBrokerConfig } from './config.js';

/**
 * True once nothing is queued, running or waiting in a retry timer. On the memory transport a publish hands
 * its deliveries over before it resolves, so a settled bus has no delivery of earlier publishes on its way.
 */
function settled(bus: QEEventBus): boolean {
  const m = bus.getDetailedMetrics();
  return m.inFlight === 0 && m.queueSize === 0 && m.retryTimers === 0;
}

function config(extra: Record<string, string> = {}) {
  return loadBrokerConfig({
    env: {
      HOST: '127.0.0.1',
      PORT: '0',
      HTTP_GATEWAY_PORT: '0',
      METRICS_COLLECTION_INTERVAL: '100',
      ...extra,
    },
  });
}

describe('createBroker', () => {
  it('drains in-flight handlers before stop() resolves, then refuses requests', async () => {
    const broker = createBroker(config());
    await broker.start();
    let finished = 0;
    const sub = broker.bus.subscribe(
      'work.*',
      async () => {
        await sleep(300); // simulated work that stop() must wait for
        finished++;
      },
      { maxConcurrency: 10 },
    );
    await sub.ready;
    for (let i = 0; i < 5; i++) await broker.bus.publish({ type: 'work.item', agentId: 'a', data: { i } });
    const t0 = Date.now();
    expect(await broker.stop()).toBe('clean');
    expect(finished).toBe(5);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    await expect(fetch(`${broker.url}/health`)).rejects.toThrow();
  });

  it("reports 'timeout' when a handler outlives SHUTDOWN_TIMEOUT", async () => {
    const broker = createBroker(config({ SHUTDOWN_TIMEOUT: '200' }));
    await broker.start();
    let release: (() => void) | undefined;
    const sub = broker.bus.subscribe('slow.*', () => new Promise<void>((r) => (release = r)));
    await sub.ready;
    await broker.bus.publish({ type: 'slow.job', agentId: 'a', data: null });
    await waitFor(() => release !== undefined, 'the handler to start');
    const t0 = Date.now();
    expect(await broker.stop()).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(3000);
    release!();
  });

  it('counts events by family and priority and samples latency for the dashboard', async () => {
    const broker = createBroker(config());
    await broker.start();
    try {
      await broker.bus.publishBatch([
        { type: 'task.create', agentId: 'a', data: 1, priority: 0 },
        { type: 'task.update', agentId: 'a', data: 2, priority: 2 },
        { type: 'agent.spawn', agentId: 'a', data: 3, priority: 4 },
      ]);
      // the latency history gets a sample every METRICS_COLLECTION_INTERVAL (100 ms)
      const snap = await until(
        () => broker.monitor.snapshot(),
        (s) => s.totals.handled === 3 && s.history.some((h) => h.count > 0),
        'three handled events and a latency sample',
      );
      expect(snap.byFamily).toEqual({ task: 2, agent: 1 });
      expect(snap.byPriority).toEqual({ critical: 1, high: 0, normal: 1, low: 0, bulk: 1 });
      expect(snap.totals.handled).toBe(3);
      expect(snap.history.some((s) => s.count > 0)).toBe(true);
      const res = await fetch(`${broker.url}/metrics`);
      const text = await res.text();
      expect(text).toMatch(/^qe_eventbus_events_consumed_total\{family="task",priority="critical"\} 1$/m);
      expect(text).toMatch(/^qe_eventbus_events_published_total\{family="agent",priority="bulk"\} 1$/m);
      expect(text).toMatch(/^qe_eventbus_circuit_state\{key="[^"]+:sub-1"\} 0$/m);
    } finally {
      await broker.stop();
    }
  });

  it('lists, redrives and purges dead letters over HTTP', async () => {
    const broker = createBroker(config());
    await broker.start();
    try {
      let calls = 0;
      const sub = broker.bus.subscribe(
        'job.*',
        () => {
          calls++;
          if (calls <= 2) throw new Error('boom');
        },
        { retryAttempts: 0 },
      );
      await sub.ready;
      await broker.bus.publish({ type: 'job.a', agentId: 'a', data: 1 });
      await broker.bus.publish({ type: 'job.b', agentId: 'a', data: 2 });
      await waitFor(async () => (await broker.bus.deadLetters!.count()) === 2, 'two dead letters');
      const json = { 'content-type': 'application/json' };
      const list = (await (await fetch(`${broker.url}/dead-letters`)).json()) as {
        count: number;
        deadLetters: { id: string; event: { type: string }; reason: string }[];
      };
      expect(list.count).toBe(2);
      expect(list.deadLetters.map((i) => i.event.type).sort()).toEqual(['job.a', 'job.b']);
      const one = list.deadLetters[0]!;
      const got = await fetch(`${broker.url}/dead-letters/${one.id}`);
      expect(((await got.json()) as { id: string }).id).toBe(one.id);
      const filtered = (await (await fetch(`${broker.url}/dead-letters?pattern=job.a`)).json()) as {
        deadLetters: unknown[];
      };
      expect(filtered.deadLetters).toHaveLength(1);
      const redrive = await fetch(`${broker.url}/dead-letters/redrive`, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ ids: [one.id] }),
      });
      expect(await redrive.json()).toEqual({ redriven: 1 });
      await waitFor(() => calls === 3, 'the redriven event to be handled');
      const byPattern = await fetch(`${broker.url}/dead-letters?pattern=job.*`, { method: 'DELETE' });
      expect(await byPattern.json()).toEqual({ purged: 1 });
      expect((await fetch(`${broker.url}/dead-letters/${one.id}`)).status).toBe(404);
      const bad = await fetch(`${broker.url}/dead-letters?pattern=a..b`, { method: 'DELETE' });
      expect(bad.status).toBe(400);
      expect((await fetch(`${broker.url}/dead-letters?limit=0`)).status).toBe(400);
    } finally {
      await broker.stop();
    }
  });

  it('with MONITORING_ENABLED=false subscribes nothing but still serves metrics and health', async () => {
    const broker = createBroker(config({ MONITORING_ENABLED: 'false' }));
    await broker.start();
    try {
      await broker.bus.publish({ type: 'task.create', agentId: 'a', data: 1 });
      // settled: a monitoring subscription, had there been one, would have handled the event by now
      await waitFor(() => settled(broker.bus), 'the bus to settle');
      const snap = broker.monitor.snapshot();
      expect(snap.monitoring).toBe(false);
      expect(snap.totals.handled).toBe(0);
      expect(snap.totals.published).toBe(1);
      expect(snap.lag.subscribers).toEqual([]);
      expect((await fetch(`${broker.url}/health`)).status).toBe(200);
      expect(await (await fetch(`${broker.url}/metrics`)).text()).toMatch(
        /qe_eventbus_events_published_total\{[^}]*\} 1/,
      );
    } finally {
      await broker.stop();
    }
  });

  it('opens a circuit around a handler that keeps failing, and the dashboard shows it', async () => {
    const broker = createBroker(
      config({ CIRCUIT_FAILURE_THRESHOLD: '3', CIRCUIT_RECOVERY_TIMEOUT: '60000', SHUTDOWN_TIMEOUT: '300' }),
    );
    await broker.start();
    try {
      let calls = 0;
      const sub = broker.bus.subscribe(
        'payment.*',
        () => {
          calls++;
          throw new Error('downstream is down');
        },
        { retryAttempts: 0 },
      );
      await sub.ready;
      for (let i = 0; i < 10; i++)
        await broker.bus.publish({ type: 'payment.charge', agentId: 'a', data: { i } });
      const { circuits } = await until(
        () => broker.monitor.snapshot(),
        (s) => s.circuits.find((c) => c.name.startsWith('payment.*'))?.state === 'open',
        'the circuit around payment.* to open',
      );
      const mine = circuits.find((c) => c.name.startsWith('payment.*'));
      expect(mine?.state).toBe('open');
      expect(mine?.source).toBe('circuit-breaker');
      expect(calls).toBeLessThan(10); // while open, events wait instead of hitting the handler
      expect(circuits.find((c) => c.name.startsWith('**'))?.state).toBe('closed'); // the monitor is unaffected
    } finally {
      // events still waiting for the open circuit are not drained: a supervisor sees a non-clean stop
      expect(await broker.stop()).toBe('timeout');
    }
  });

  it('turns health degraded when a spec 003 alert threshold is crossed (ALERT_MAX_QUEUE_DEPTH)', async () => {
    const broker = createBroker(config({ ALERT_MAX_QUEUE_DEPTH: '5', HEALTH_CHECK_INTERVAL: '100' }));
    await broker.start();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    try {
      const sub = broker.bus.subscribe('slow.*', () => gate);
      await sub.ready;
      for (let i = 0; i < 20; i++) await broker.bus.publish({ type: 'slow.job', agentId: 'a', data: i });
      const h = await until(
        async () =>
          (await (await fetch(`${broker.url}/health`)).json()) as {
            status: string;
            reasons: string[];
            alerts: { name: string }[];
          },
        (x) => x.status === 'degraded',
        'degraded health',
      );
      expect(h.status).toBe('degraded');
      expect(h.alerts.map((a) => a.name)).toContain('maxQueueDepth');
      expect(h.reasons.join(' ')).toMatch(/maxQueueDepth crossed: \d+ > 5/);
    } finally {
      release();
      await broker.stop();
    }
  });
});
