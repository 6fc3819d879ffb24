import {
  type AgentEvent,
  type BusHealth,
  ConfigError,
  type ConsumeFn,
  type DetailedMetrics,
  type Middleware,
  type MiddlewareHost,
  PRIORITY_NAMES,
  type PublishFn,
  toEpoch,
} from '@qe/core';
import { Counter, register as defaultRegistry, Gauge, type Registry } from 'prom-client';
import { type CounterCell, FastCounter, FastHistogram } from './FastHistogram.js';
import { labelsOf, METRIC_NAME } from './names.js';

/** What the gauges are read from at scrape time: a `QEEventBus` has all of it. */
export interface MetricsSource {
  getDetailedMetrics(): DetailedMetrics;
  healthCheck(): Promise<BusHealth>;
  readonly deadLetters?: { count(): Promise<number> } | undefined;
}

export interface CircuitStatsSource {
  stats(): { key: string; state: 'closed' | 'open' | 'half_open' }[];
}

export interface PrometheusOptions {
  /** Default: prom-client's default registry. */
  registry?: Registry;
  /** Metric name prefix. Default `qe_`; `ossa_eventbus_` gives spec 003's names. */
  prefix?: string;
  /** Latency buckets in seconds. */
  buckets?: number[];
  /** Circuit breakers to expose (`createCircuitBreaker()` from @qe/reliability). */
  circuits?: CircuitStatsSource[];
}

const DEFAULT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CIRCUIT_VALUE = { closed: 0, half_open: 1, open: 2 } as const;

/**
 * Prometheus metrics for a bus, as a middleware: counters of published,
 * consumed and failed events by type family and priority, histograms of
 * publish-to-handler latency and handler duration, and gauges read from the
 * bus at scrape time (queue depth per priority, in flight, retried,
 * dead-lettered, shed, DLQ depth, consumer pending and lag per group,
 * connections, circuit states). Names follow spec 003 under a configurable
 * prefix; labels are low-cardinality (family, priority, group, key).
 *
 * Counting costs two label lookups per event; gauges cost nothing until scraped.
 */
export function createPrometheusMiddleware(
  options: PrometheusOptions = {},
): Middleware & { readonly registry: Registry } {
  const registry = options.registry ?? defaultRegistry;
  const p = options.prefix ?? 'qe_';
  if (!METRIC_NAME.test(`${p}x`))
    throw new ConfigError('prefix', `${JSON.stringify(p)} is not a valid metric name prefix`);
  const buckets = options.buckets ?? DEFAULT_BUCKETS;
  let source: MetricsSource | undefined;
  const registers = [registry];

  const published = new FastCounter(
    `${p}events_published_total`,
    'Events published, by type family and priority.',
    registers,
  );
  const consumed = new FastCounter(
    `${p}events_consumed_total`,
    'Handler calls that succeeded, by type family and priority.',
    registers,
  );
  const failed = new FastCounter(
    `${p}events_failed_total`,
    'Handler calls that failed (each failed attempt), by type family and priority.',
    registers,
  );
  const latency = new FastHistogram(
    `${p}publish_to_handler_latency_seconds`,
    'Time from publish to handler start (first attempt).',
    buckets,
    registers,
  );
  const duration = new FastHistogram(
    `${p}handler_duration_seconds`,
    'Handler call duration.',
    buckets,
    registers,
  );

  // mirrors of the bus's own cumulative counters, advanced at scrape time
  const mirror = (name: string, help: string, read: (m: DetailedMetrics) => number) => {
    let last = 0;
    return new Counter({
      name,
      help,
      registers,
      collect() {
        if (!source) return;
        const now = read(source.getDetailedMetrics());
        if (now > last) this.inc(now - last);
        last = Math.max(last, now);
      },
    });
  };
  mirror(`${p}events_retried_total`, 'Handler retries scheduled by the bus.', (m) => m.retried);
  mirror(`${p}events_dead_lettered_total`, 'Events dead-lettered by the bus.', (m) => m.deadLettered);
  const shedLast: Record<string, number> = {};
  new Counter({
    name: `${p}events_shed_total`,
    help: 'Events shed under load, by priority (only when shedding is configured).',
    labelNames: ['priority'],
    registers,
    collect() {
      if (!source) return;
      const by = source.getDetailedMetrics().shedByPriority;
      for (const name of PRIORITY_NAMES) {
        const now = by[name];
        const prev = shedLast[name] ?? 0;
        if (now > prev) this.inc({ priority: name }, now - prev);
        shedLast[name] = Math.max(prev, now);
      }
    },
  });
  new Gauge({
    name: `${p}queue_depth`,
    help: 'Deliveries waiting or running in the bus, by priority.',
    labelNames: ['priority'],
    registers,
    collect() {
      if (!source) return;
      const q = source.getDetailedMetrics().queueSizes;
      for (const name of PRIORITY_NAMES) this.set({ priority: name }, q[name]);
    },
  });
  new Gauge({
    name: `${p}in_flight`,
    help: 'Handler calls running.',
    registers,
    collect() {
      if (source) this.set(source.getDetailedMetrics().inFlight);
    },
  });
  new Gauge({
    name: `${p}avg_processing_time_seconds`,
    help: 'Mean handler duration over all subscriptions (spec 003).',
    registers,
    collect() {
      if (!source) return;
      const hs = source.getDetailedMetrics().handlerStats;
      const n = hs.reduce((a, h) => a + h.processed, 0);
      this.set(n === 0 ? 0 : hs.reduce((a, h) => a + h.averageDurationMs * h.processed, 0) / n / 1000);
    },
  });
  new Gauge({
    name: `${p}connections`,
    help: 'Open transport connections.',
    registers,
    collect() {
      if (source) this.set(source.getDetailedMetrics().activeConnections);
    },
  });
  new Gauge({
    name: `${p}dead_letters`,
    help: 'Dead letters waiting in the store (DLQ depth).',
    registers,
    async collect() {
      const store = source?.deadLetters;
      if (store) this.set(await store.count().catch(() => 0));
    },
  });
  const groupGauge = (name: string, help: string, field: 'pending' | 'lag') =>
    new Gauge({
      name,
      help,
      labelNames: ['group'],
      registers,
      async collect() {
        if (!source) return;
        this.reset();
        const health = await source.healthCheck().catch(() => undefined);
        const groups = (health?.transport.details?.groups ?? {}) as Record<
          string,
          { pending: number; lag: number | null }
        >;
        for (const [group, g] of Object.entries(groups)) {
          const v = g[field];
          if (typeof v === 'number' && v >= 0) this.set({ group }, v);
        }
      },
    });
  new Gauge({
    name: `${p}stream_length`,
    help: 'Entries held in the transport streams (Redis), all priorities and partitions.',
    registers,
    async collect() {
      if (!source) return;
      const health = await source.healthCheck().catch(() => undefined);
      const n = health?.transport.details?.streamLength;
      if (typeof n === 'number' && n >= 0) this.set(n);
    },
  });
  groupGauge(
    `${p}consumer_pending`,
    'Entries delivered and not yet acknowledged, per consumer group.',
    'pending',
  );
  groupGauge(`${p}consumer_lag`, 'Entries not yet delivered, per consumer group.', 'lag');
  if (options.circuits && options.circuits.length > 0) {
    const circuits = options.circuits;
    new Gauge({
      name: `${p}circuit_state`,
      help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open.',
      labelNames: ['key'],
      registers,
      collect() {
        for (const c of circuits) for (const s of c.stats()) this.set({ key: s.key }, CIRCUIT_VALUE[s.state]);
      },
    });
  }

  // label lookups cost more than the increments: resolve each (type, priority) once
  type Children = {
    published: CounterCell;
    consumed: CounterCell;
    failed: CounterCell;
    latency: { recordMs(ms: number): void };
    duration: { recordMs(ms: number): void };
  };
  // by type, then by priority: no key string built per event
  const cache = new Map<string, (Children | undefined)[]>();
  let syncCalls = 0;
  const children = (e: AgentEvent): Children => {
    let byPriority = cache.get(e.type);
    if (!byPriority) {
      if (cache.size > 10_000) cache.clear();
      cache.set(e.type, (byPriority = []));
    }
    let c = byPriority[e.priority];
    if (!c) {
      const l = labelsOf(e);
      c = byPriority[e.priority] = {
        published: published.cell(l),
        consumed: consumed.cell(l),
        failed: failed.cell(l),
        latency: latency.child({ family: l.family, priority: l.priority }),
        duration: duration.child({ family: l.family }),
      };
    }
    return c;
  };

  const settleLater = (p: Promise<unknown>, c: Children, started: number) =>
    p.then(
      (v) => {
        c.consumed.value++;
        c.duration.recordMs(performance.now() - started);
        return v;
      },
      (err) => {
        c.failed.value++;
        c.duration.recordMs(performance.now() - started);
        throw err;
      },
    );

  return {
    name: 'prometheus',
    registry,
    attach(host: MiddlewareHost) {
      const candidate = host as unknown as Partial<MetricsSource>;
      if (typeof candidate.getDetailedMetrics === 'function' && typeof candidate.healthCheck === 'function')
        source = candidate as MetricsSource;
    },
    publish(next: PublishFn): PublishFn {
      return (events, ctx) =>
        next(events, ctx).then(() => {
          for (const e of events) children(e).published.value++;
        });
    },
    consume(next: ConsumeFn): ConsumeFn {
      return (event: AgentEvent, ctx) => {
        const c = children(event);
        const started = ctx.startedAt;
        if (ctx.attempt === ctx.delivery.attempt)
          c.latency.recordMs(toEpoch(started) - ctx.delivery.publishedAt);
        let r: unknown;
        try {
          r = next(event, ctx);
        } catch (err) {
          c.failed.value++;
          c.duration.recordMs(performance.now() - started);
          throw err;
        }
        if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function')
          return settleLater(r as Promise<unknown>, c, started);
        // a synchronous handler: no promise on its behalf, and its duration sampled 1 in 16
        c.consumed.value++;
        if ((++syncCalls & 15) === 0) c.duration.recordMs(performance.now() - started);
        return r;
      };
    },
  };
}
