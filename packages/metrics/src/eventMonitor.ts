import { ConfigError, type ConsumeFn, type Middleware, type PublishFn } from '@qe/core';

interface Slot {
  start: number;
  types: Map<string, { published: number; succeeded: number; failed: number; latencyMs: number }>;
}

export interface EventWindowMetrics {
  total_events: number;
  /** Percent of handler calls that succeeded. */
  success_rate: number;
  avg_latency_ms: number;
  failed_events: number;
  published_events: number;
}

/**
 * Spec 002's event monitor: per-type counts, success rate and latency over a
 * sliding time window, from one-minute slots (bounded: `windowMinutes` slots).
 * Cheap enough to read every second.
 */
export function createEventMonitor(options: { windowMinutes?: number; slotMs?: number } = {}): Middleware & {
  getEventMetrics(windowMinutes?: number): EventWindowMetrics;
  getEventTypeMetrics(type: string, windowMinutes?: number): EventWindowMetrics;
} {
  const maxMinutes = options.windowMinutes ?? 60;
  const slotMs = options.slotMs ?? 60_000;
  if (!Number.isInteger(maxMinutes) || maxMinutes < 1)
    throw new ConfigError('windowMinutes', 'must be a positive integer');
  const slots: Slot[] = [];
  const current = (): Slot => {
    const start = Math.floor(Date.now() / slotMs) * slotMs;
    let s = slots[slots.length - 1];
    if (!s || s.start !== start) {
      s = { start, types: new Map() };
      slots.push(s);
      while (slots.length > Math.ceil((maxMinutes * 60_000) / slotMs) + 1) slots.shift();
    }
    return s;
  };
  const entry = (type: string) => {
    const s = current();
    let e = s.types.get(type);
    if (!e) s.types.set(type, (e = { published: 0, succeeded: 0, failed: 0, latencyMs: 0 }));
    return e;
  };
  const sum = (windowMinutes: number, type?: string): EventWindowMetrics => {
    const since = Date.now() - windowMinutes * 60_000;
    let published = 0;
    let ok = 0;
    let bad = 0;
    let lat = 0;
    for (const s of slots) {
      if (s.start + slotMs < since) continue;
      for (const [t, e] of s.types) {
        if (type !== undefined && t !== type) continue;
        published += e.published;
        ok += e.succeeded;
        bad += e.failed;
        lat += e.latencyMs;
      }
    }
    const calls = ok + bad;
    return {
      total_events: calls,
      success_rate: calls === 0 ? 100 : (ok / calls) * 100,
      avg_latency_ms: calls === 0 ? 0 : lat / calls,
      failed_events: bad,
      published_events: published,
    };
  };
  return {
    name: 'event-monitor',
    getEventMetrics: (windowMinutes = maxMinutes) => sum(windowMinutes),
    getEventTypeMetrics: (type, windowMinutes = maxMinutes) => sum(windowMinutes, type),
    publish(next: PublishFn): PublishFn {
      return async (events, ctx) => {
        await next(events, ctx);
        for (const e of events) entry(e.type).published++;
      };
    },
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        const lat = performance.timeOrigin + performance.now() - ctx.delivery.publishedAt;
        try {
          const r = await next(event, ctx);
          const e = entry(event.type);
          e.succeeded++;
          e.latencyMs += Math.max(0, lat);
          return r;
        } catch (err) {
          const e = entry(event.type);
          e.failed++;
          e.latencyMs += Math.max(0, lat);
          throw err;
        }
      };
    },
  };
}
