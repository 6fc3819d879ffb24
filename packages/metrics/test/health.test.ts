import { type AgentEvent, QEEventBus } from '@qe/core';
import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { createEventMonitor, createHealthMonitor } from '../src/index.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

describe('health monitor', () => {
  it('raises an alert when a threshold is crossed and again when it clears, with health_check events', async () => {
    const bus = new QEEventBus({ nodeId: 'health', retryAttempts: 0 });
    buses.push(bus);
    await bus.start();
    const system: AgentEvent[] = [];
    bus.subscribe('system.*', (e) => void system.push(e));
    let fail = true;
    bus.subscribe('work.*', () => {
      if (fail) throw new Error('broken');
    });
    const monitor = createHealthMonitor(bus, { thresholds: { maxErrorRate: 5 }, intervalMs: 1000 });
    for (let i = 0; i < 4; i++) await bus.publish({ type: 'work.x', agentId: 'a', data: {} });
    await waitFor(() => bus.getMetrics().errorCount === 4, 'four failures');
    const bad = await monitor.check();
    expect(bad.status).toBe('degraded');
    expect(bad.alerts[0]).toMatchObject({ name: 'maxErrorRate', threshold: 5 });
    expect(bad.reasons.join()).toMatch(/maxErrorRate crossed/);
    await monitor.check(); // still firing: no second alert
    fail = false;
    for (let i = 0; i < 200; i++) await bus.publish({ type: 'work.x', agentId: 'a', data: {} });
    await waitFor(() => bus.getMetrics().eventsProcessed >= 204, 'successes');
    const good = await monitor.check();
    expect(good.status).toBe('healthy');
    await waitFor(() => system.filter((e) => e.type === 'system.alert').length === 2, 'firing and resolved');
    const alerts = system
      .filter((e) => e.type === 'system.alert')
      .map((e) => (e.data as { state: string }).state);
    expect(alerts).toEqual(['firing', 'resolved']);
    expect(system.filter((e) => e.type === 'system.health_check').length).toBeGreaterThanOrEqual(3);
    expect(() => createHealthMonitor(bus, { thresholds: { maxLatency: -1 } })).toThrow(
      /thresholds.maxLatency/,
    );
  });
});

describe('event monitor (spec 002)', () => {
  it('gives per-type counts, success rate and latency over a window', async () => {
    const monitor = createEventMonitor({ windowMinutes: 5 });
    const bus = new QEEventBus({ nodeId: 'evmon', retryAttempts: 0, middleware: [monitor] });
    buses.push(bus);
    await bus.start();
    bus.subscribe('cmd.*', (e) => {
      if (e.type === 'cmd.bad') throw new Error('x');
    });
    for (let i = 0; i < 3; i++) await bus.publish({ type: 'cmd.good', agentId: 'a', data: {} });
    await bus.publish({ type: 'cmd.bad', agentId: 'a', data: {} });
    await waitFor(() => monitor.getEventMetrics().total_events === 4, 'four calls');
    expect(monitor.getEventMetrics()).toMatchObject({
      total_events: 4,
      success_rate: 75,
      failed_events: 1,
      published_events: 4,
    });
    expect(monitor.getEventTypeMetrics('cmd.good')).toMatchObject({ total_events: 3, success_rate: 100 });
    expect(monitor.getEventMetrics().avg_latency_ms).toBeGreaterThanOrEqual(0);
  });
});
