import { spawnSync } from 'node:child_process';
import { MemoryTransport, QEEventBus } from '@qe/core';
import { deletePrefix, uniquePrefix, waitFor } from '@qe/test-utils';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createPrometheusMiddleware, instrumentTransport } from '../src/index.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

/** promtool, the reference checker; installed by scripts/ensure-services.sh. */
function promtool(exposition: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

async function traffic(prefix?: string) {
  const registry = new Registry();
  const prom = createPrometheusMiddleware({ registry, ...(prefix === undefined ? {} : { prefix }) });
  const bus = new QEEventBus({
    nodeId: `prom-${buses.length}`,
    transport: instrumentTransport(new MemoryTransport(), {
      registry,
      ...(prefix === undefined ? {} : { prefix }),
    }),
    middleware: [prom],
    retryAttempts: 1,
    retryDelay: 1,
  });
  buses.push(bus);
  await bus.start();
  let ok = 0;
  bus.subscribe('task.*', () => void ok++);
  bus.subscribe('agent.**', () => {
    throw new Error('nope');
  });
  for (let i = 0; i < 5; i++) await bus.publish({ type: 'task.create', agentId: `agent-${i}`, data: { i } });
  await bus.publish({ type: 'agent.task.fail', agentId: 'a', data: {}, priority: 0 });
  await waitFor(() => ok === 5 && bus.getDetailedMetrics().deadLettered === 1, 'traffic settled');
  return { registry, bus };
}

describe('Prometheus metrics', () => {
  it('counts by family and priority, measures latency, reads gauges at scrape time; promtool accepts it', async () => {
    const { registry, bus } = await traffic();
    const text = await registry.metrics();
    expect(text).toContain('qe_events_published_total{family="task",priority="normal"} 5');
    expect(text).toContain('qe_events_published_total{family="agent",priority="critical"} 1');
    expect(text).toContain('qe_events_consumed_total{family="task",priority="normal"} 5');
    expect(text).toContain('qe_events_failed_total{family="agent",priority="critical"} 2');
    expect(text).toContain('qe_events_dead_lettered_total 1');
    expect(text).toContain('qe_events_retried_total 1');
    expect(text).toMatch(/qe_publish_to_handler_latency_seconds_count\{family="task",priority="normal"\} 5/);
    // synchronous handlers are timed 1 call in 16; failures and async calls always
    expect(text).toMatch(/qe_handler_duration_seconds_count\{family="agent"\} 2/);
    expect(text).toContain('qe_queue_depth{priority="bulk"} 0');
    expect(text).toContain('qe_dead_letters 1');
    expect(text).toContain('qe_transport_published_total{transport="memory"} 6');
    expect(text).toMatch(/qe_transport_deliveries_total\{transport="memory",outcome="ack"\} \d+/);
    // no ids in labels: cardinality stays low
    for (const id of ['agent-0', 'agent-3']) expect(text).not.toContain(id);
    const check = promtool(text);
    expect(check.out).toBe('');
    expect(check.status).toBe(0);
    // a second scrape does not double-count mirrored counters
    const again = await registry.metrics();
    expect(again).toContain('qe_events_dead_lettered_total 1');
    expect(bus.getDetailedMetrics().deadLettered).toBe(1);
  });

  it("spec 003's names with the ossa_eventbus_ prefix", async () => {
    const { registry } = await traffic('ossa_eventbus_');
    const text = await registry.metrics();
    for (const name of [
      'ossa_eventbus_events_published_total',
      'ossa_eventbus_events_consumed_total',
      'ossa_eventbus_events_failed_total',
      'ossa_eventbus_avg_processing_time_seconds',
      'ossa_eventbus_queue_depth',
    ])
      expect(text).toContain(`# TYPE ${name}`);
    expect(promtool(text).status).toBe(0);
  });

  it('rejects a prefix that would make invalid metric names', () => {
    expect(() => createPrometheusMiddleware({ registry: new Registry(), prefix: '9bad-' })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }),
    );
  });
});

describe('Prometheus metrics on Redis', () => {
  it('exposes consumer pending and lag per group and the stream length from the Redis transport', async () => {
    const { RedisStreamsTransport } = await import('@qe/redis-transport');
    const registry = new Registry();
    const keyPrefix = uniquePrefix('metrics');
    const bus = new QEEventBus({
      nodeId: 'prom-redis',
      transport: new RedisStreamsTransport({ keyPrefix }),
      middleware: [createPrometheusMiddleware({ registry })],
    });
    buses.push(bus);
    await bus.start();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await bus.subscribe('lag.*', () => gate, { group: 'slow' }).ready;
    for (let i = 0; i < 5; i++) await bus.publish({ type: 'lag.x', agentId: 'a', data: { i } });
    await waitFor(() => bus.getDetailedMetrics().inFlight === 1, 'one in flight');
    const text = await registry.metrics();
    expect(text).toMatch(/qe_stream_length 5/);
    expect(text).toMatch(/qe_consumer_pending\{group="g:group:slow:lag\.\*"\} [1-5]/);
    expect(promtool(text).status).toBe(0);
    release();
    // stopped before the keys go: a running consumer would re-create its group (and the streams)
    await bus.stop();
    await deletePrefix(keyPrefix);
  });

  it("the wrapper keeps the inner transport's durable scheduleRetry, and adds none where there is none", async () => {
    const calls: number[] = [];
    class Scheduling extends MemoryTransport {
      async scheduleRetry(_e: unknown, _t: unknown, delayMs: number): Promise<void> {
        calls.push(delayMs);
      }
    }
    const registry = new Registry();
    const wrapped = instrumentTransport(new Scheduling(), { registry });
    expect(typeof wrapped.scheduleRetry).toBe('function');
    await wrapped.scheduleRetry!(
      { id: 'e', type: 'x.y', agentId: 'a', timestamp: 0, priority: 2, data: {} },
      { binding: 'broadcast@n', subscriptionId: 'n:sub-1', attempt: 2 },
      1500,
    );
    expect(calls).toEqual([1500]);
    expect(
      instrumentTransport(new MemoryTransport(), { registry: new Registry() }).scheduleRetry,
    ).toBeUndefined();
  });
});
