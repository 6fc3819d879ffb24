import { PRIORITY_NAMES, type QEEventBus } from '@qe/core';
import type { DashboardSnapshot } from './monitor.js';

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/**
 * Prometheus text exposition (format 0.0.4) of a bus's metrics, under spec
 * 003's names with the `qe_eventbus_` prefix. The broker serves this itself
 * until `@qe/metrics` is wired in; it reads counters only (no I/O), so a
 * scrape never waits on the transport.
 */
export function renderPrometheus(bus: QEEventBus, snap: DashboardSnapshot | null): string {
  const d = bus.getDetailedMetrics();
  const lines: string[] = [];
  const labels = `node="${esc(bus.nodeId)}",transport="${esc(bus.transport.name)}"`;
  const metric = (name: string, type: 'counter' | 'gauge', help: string, value: number, extra = '') => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    lines.push(`${name}{${labels}${extra}} ${Number.isFinite(value) ? value : 0}`);
  };
  metric('qe_eventbus_events_published_total', 'counter', 'Events published through this bus.', d.published);
  metric(
    'qe_eventbus_events_consumed_total',
    'counter',
    'Handler calls that finished (succeeded or dead-lettered).',
    d.eventsProcessed,
  );
  metric(
    'qe_eventbus_events_failed_total',
    'counter',
    'Errors: failed publishes, dead letters, throwing filters.',
    d.errorCount,
  );
  metric('qe_eventbus_events_retried_total', 'counter', 'Handler retries.', d.retried);
  metric(
    'qe_eventbus_events_dead_lettered_total',
    'counter',
    'Events sent to the dead-letter queue.',
    d.deadLettered,
  );
  metric('qe_eventbus_events_shed_total', 'counter', 'Events dropped by configured load shedding.', d.shed);
  metric(
    'qe_eventbus_avg_processing_time_seconds',
    'gauge',
    'Mean publish-to-handler latency over the last minute.',
    d.averageLatency / 1000,
  );
  lines.push(
    '# HELP qe_eventbus_latency_seconds Publish-to-handler latency quantiles over the last minute.',
    '# TYPE qe_eventbus_latency_seconds summary',
  );
  for (const [q, v] of [
    ['0.5', d.latency.p50],
    ['0.9', d.latency.p90],
    ['0.95', d.p95Latency],
    ['0.99', d.latency.p99],
    ['0.999', d.latency.p999],
  ] as const)
    lines.push(`qe_eventbus_latency_seconds{${labels},quantile="${q}"} ${v / 1000}`);
  lines.push(`qe_eventbus_latency_seconds_count{${labels}} ${d.latency.count}`);
  lines.push(
    '# HELP qe_eventbus_queue_depth Deliveries accepted and not yet settled, by priority.',
    '# TYPE qe_eventbus_queue_depth gauge',
  );
  for (const p of PRIORITY_NAMES)
    lines.push(`qe_eventbus_queue_depth{${labels},priority="${p}"} ${d.queueSizes[p]}`);
  metric('qe_eventbus_in_flight', 'gauge', 'Handler calls running now.', d.inFlight);
  metric(
    'qe_eventbus_events_per_second',
    'gauge',
    'Events processed per second (5 s window).',
    d.eventsPerSecond,
  );
  metric(
    'qe_eventbus_transport_backlog',
    'gauge',
    'Events waiting inside the transport for this node.',
    typeof d.transport.backlog === 'number' ? d.transport.backlog : 0,
  );
  metric('qe_eventbus_active_connections', 'gauge', 'Transport connections.', d.activeConnections);
  metric('qe_eventbus_up', 'gauge', '1 while the bus is connected.', bus.isConnected() ? 1 : 0);
  if (snap) {
    lines.push(
      '# HELP qe_eventbus_events_observed_total Events seen by the broker monitor, by family and priority.',
      '# TYPE qe_eventbus_events_observed_total counter',
    );
    for (const [f, n] of Object.entries(snap.byFamily))
      lines.push(`qe_eventbus_events_observed_total{${labels},family="${esc(f)}"} ${n}`);
    lines.push(
      '# HELP qe_eventbus_events_by_priority_total Events seen by the broker monitor, by priority.',
      '# TYPE qe_eventbus_events_by_priority_total counter',
    );
    for (const [p, n] of Object.entries(snap.byPriority))
      lines.push(`qe_eventbus_events_by_priority_total{${labels},priority="${p}"} ${n}`);
    metric('qe_eventbus_dead_letters', 'gauge', 'Dead letters currently stored.', snap.deadLetters.count);
    lines.push(
      '# HELP qe_eventbus_gateway_connections Open client connections by gateway.',
      '# TYPE qe_eventbus_gateway_connections gauge',
    );
    for (const [k, n] of Object.entries(snap.connections))
      lines.push(`qe_eventbus_gateway_connections{${labels},source="${esc(k)}"} ${n}`);
  }
  const mem = process.memoryUsage();
  metric('qe_system_memory_used_bytes', 'gauge', 'Resident set size of the broker process.', mem.rss);
  metric('qe_system_uptime_seconds', 'gauge', 'Seconds since the broker process started.', process.uptime());
  return `${lines.join('\n')}\n`;
}
