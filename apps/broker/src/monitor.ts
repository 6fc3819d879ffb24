import {
  type AgentEvent,
  type ConsumeContext,
  type DeadLetter,
  epochNow,
  LatencyHistogram,
  type Logger,
  PRIORITY_NAMES,
  type QEEventBus,
  toError,
} from '@qe/core';
import type { ContractsView } from './contracts.js';

/** A circuit breaker's state as the dashboard shows it. */
export interface CircuitView {
  name: string;
  state: 'closed' | 'open' | 'half_open' | string;
  failures?: number;
}

/**
 * Something the monitor asks for connection counts and circuit states on
 * every sample (a gateway, the reliability middleware, the HTTP server).
 * Called synchronously; must be cheap and must not throw (a throw is logged
 * and the source skipped for that sample).
 */
export interface MonitorSource {
  readonly name: string;
  connections?(): number;
  circuits?(): readonly CircuitView[];
}

/** One point of the dashboard's time series. */
export interface MonitorSample {
  /** Epoch ms at the end of the interval. */
  t: number;
  /** Events handled per second by the broker's monitor subscription in the interval. */
  handledPerSec: number;
  /** Events published per second through this broker's bus in the interval. */
  publishedPerSec: number;
  /** Publish-to-handler latency over the interval, ms (0 when no event arrived). */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  count: number;
  queue: number;
  backlog: number;
  deadLetters: number;
  connections: number;
  rssBytes: number;
}

/** What `/api/dashboard` returns. */
export interface DashboardSnapshot {
  service: string;
  nodeId: string;
  transport: string;
  startedAt: number;
  now: number;
  intervalMs: number;
  monitoring: boolean;
  health: { status: string; reasons: readonly string[]; checkedAt: number } | null;
  totals: {
    handled: number;
    published: number;
    processed: number;
    errors: number;
    retried: number;
    deadLettered: number;
    shed: number;
  };
  byFamily: Record<string, number>;
  byPriority: Record<string, number>;
  latest: MonitorSample | null;
  history: MonitorSample[];
  lag: {
    queue: number;
    inFlight: number;
    backlog: number;
    /** Per consumer group, from the transport (Redis: XINFO GROUPS), when it reports them. */
    groups: { group: string; pending: number; lag: number | null }[];
    queueByPriority: Record<string, number>;
    subscribers: {
      id: string;
      patterns: readonly string[];
      group: string | null;
      queued: number;
      inFlight: number;
      processed: number;
      failed: number;
    }[];
  };
  connections: Record<string, number>;
  circuits: (CircuitView & { source: string })[];
  /**
   * Sagas (`@qe/saga`) seen through this broker's bus, from their `saga.status.*`
   * events: how many reached each status, and the ones running now.
   */
  sagas: {
    counts: Record<string, number>;
    running: SagaRow[];
  };
  /**
   * Agent swarms (`@qe/swarm`) seen through this broker's bus, from their
   * lifecycle and task events: agents by status, pools with utilization, tasks.
   */
  agents: {
    byStatus: Record<string, number>;
    pools: { pool: string; agents: number; active: number; capacity: number; utilization: number }[];
    tasks: Record<string, number>;
  };
  /** Contract validation and cross-project refusals; null when neither is configured. */
  contracts: ContractsView | null;
  deadLetters: {
    count: number;
    recent: { id: string; type: string; reason: string; error: string; deadAt: number; attempts: number }[];
  };
}

/** One saga as the dashboard shows it, from its latest status event. */
export interface SagaRow {
  transactionId: string;
  saga: string;
  status: string;
  step: string | null;
  progress: number;
  updatedAt: number;
}

/** One agent (`@qe/swarm`) as the dashboard shows it, from its latest lifecycle event. */
export interface AgentRow {
  id: string;
  pool: string;
  status: string;
  active: number;
  capacity: number;
  lastSeen: number;
}

/** Agents the monitor keeps at most. */
const MAX_AGENTS = 10_000;

/** Sagas whose latest status the monitor keeps at most (finished ones are forgotten first). */
const MAX_SAGAS = 1000;

/** How a `BrokerMonitor` samples and judges health. */
export interface MonitorOptions {
  serviceName: string;
  intervalMs: number;
  /** When false the broker subscribes nothing: rates and latencies come only from the bus's own metrics. */
  enabled: boolean;
  healthIntervalMs: number;
  /** How health is judged (default: the bus's `healthCheck()`). */
  health?: () => Promise<{ status: string; reasons: readonly string[] }>;
  /** Contract checks and cross-project messages by outcome (`@qe/contracts`), when configured. */
  contracts?: () => ContractsView | null;
  /** Samples kept for the charts. Default 300. */
  historySize?: number;
  logger: Logger;
}

const MAX_FAMILIES = 50;

/**
 * Watches a bus for the dashboard: a broadcast `**` subscription counts every
 * event by family (first segment of its type) and priority and records its
 * publish-to-handler latency; every `intervalMs` a sample is taken into a
 * bounded ring. The subscription's handler is synchronous and never fails, so
 * it adds no retries or dead letters of its own. Not safe to share between
 * buses.
 */
export class BrokerMonitor {
  private readonly sources: MonitorSource[] = [];
  private readonly byFamily = new Map<string, number>();
  private readonly byPriority = [0, 0, 0, 0, 0];
  private handled = 0;
  private lastHandled = 0;
  private lastPublished = 0;
  private lastSampleAt = 0;
  private interval = new LatencyHistogram();
  private readonly history: MonitorSample[] = [];
  private readonly historySize: number;
  private timer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => boolean) | null = null;
  private deadLetterCount = 0;
  private groups: DashboardSnapshot['lag']['groups'] = [];
  private recentDead: DeadLetter[] = [];
  private health: DashboardSnapshot['health'] = null;
  private readonly startedAt = Date.now();
  private readonly sagas = new Map<string, SagaRow>();
  private readonly agents = new Map<string, AgentRow>();
  private readonly taskCounts: Record<string, number> = {};
  private readonly sagaCounts: Record<string, number> = {};

  constructor(
    private readonly bus: QEEventBus,
    private readonly options: MonitorOptions,
  ) {
    this.historySize = options.historySize ?? 300;
  }

  /** Registers a source of connection counts and circuit states. */
  addSource(source: MonitorSource): void {
    this.sources.push(source);
  }

  /** Subscribes (when enabled) and starts sampling. Resolves when the subscription is live. */
  async start(): Promise<void> {
    if (this.options.enabled) {
      const unsub = this.bus.subscribe(
        '**',
        (event: AgentEvent, ctx: ConsumeContext) => this.record(event, ctx),
        {
          maxConcurrency: 1_000_000,
          retryAttempts: 0,
        },
      );
      this.unsubscribe = unsub;
      await unsub.ready;
    }
    this.lastSampleAt = epochNow();
    this.timer = setInterval(() => this.sample(), this.options.intervalMs);
    this.timer.unref();
    const checkHealth = () => {
      (this.options.health ?? (() => this.bus.healthCheck()))().then(
        (h) => {
          const prev = this.health?.status;
          this.health = { status: h.status, reasons: h.reasons, checkedAt: Date.now() };
          if (prev !== undefined && prev !== h.status)
            this.options.logger.warn('health changed', { from: prev, to: h.status, reasons: h.reasons });
        },
        (err) => this.options.logger.error('health check failed', { error: toError(err).message }),
      );
    };
    checkHealth();
    this.healthTimer = setInterval(checkHealth, this.options.healthIntervalMs);
    this.healthTimer.unref();
  }

  /** Stops sampling and unsubscribes. Idempotent. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.timer = this.healthTimer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private record(event: AgentEvent, ctx: ConsumeContext): void {
    this.handled++;
    if (ctx.attempt === 1) this.interval.recordMs(epochNow() - ctx.delivery.publishedAt);
    const dot = event.type.indexOf('.');
    const family = dot < 0 ? event.type : event.type.slice(0, dot);
    const n = this.byFamily.get(family);
    if (n !== undefined) this.byFamily.set(family, n + 1);
    else if (this.byFamily.size < MAX_FAMILIES) this.byFamily.set(family, 1);
    else this.byFamily.set('(other)', (this.byFamily.get('(other)') ?? 0) + 1);
    this.byPriority[event.priority] = (this.byPriority[event.priority] ?? 0) + 1;
    if (family === 'saga' && event.type.startsWith('saga.status.')) this.recordSaga(event);
    else if (family === 'agent') this.recordAgent(event);
    else if (family === 'task') this.recordTask(event);
  }

  /** `@qe/swarm`'s agent lifecycle events: spawn, heartbeat (the whole descriptor), status update, terminate, failed. */
  private recordAgent(event: AgentEvent): void {
    const d = event.data as Record<string, unknown> | null;
    if (d === null || typeof d !== 'object' || typeof d.id !== 'string') return;
    const id = d.id;
    if (event.type === 'agent.terminate' || event.type === 'agent.terminated') {
      this.agents.delete(id);
      return;
    }
    const prev = this.agents.get(id);
    const status =
      event.type === 'agent.failed'
        ? 'failed'
        : typeof d.status === 'string'
          ? d.status
          : (prev?.status ?? 'active');
    if (!['agent.spawn', 'agent.heartbeat', 'agent.status.update', 'agent.failed'].includes(event.type))
      return;
    if (!prev && this.agents.size >= MAX_AGENTS) return;
    this.agents.set(id, {
      id,
      pool:
        typeof d.pool === 'string' ? d.pool : typeof d.type === 'string' ? d.type : (prev?.pool ?? 'default'),
      status,
      active: typeof d.active === 'number' ? d.active : (prev?.active ?? 0),
      capacity: typeof d.capacity === 'number' ? d.capacity : (prev?.capacity ?? 1),
      lastSeen: event.timestamp,
    });
  }

  /** Task events of `@qe/swarm` (spec 003's `task.assigned`, spec 000's `task.complete`/`fail`/`cancel`). */
  private recordTask(event: AgentEvent): void {
    const kind = event.type.slice('task.'.length);
    if (!['assigned', 'complete', 'fail', 'cancel', 'create'].includes(kind)) return;
    this.taskCounts[kind] = (this.taskCounts[kind] ?? 0) + 1;
  }

  /** A saga status event (`@qe/saga`'s StatusEvent: transactionId, sagaName, status, currentStep, progress). */
  private recordSaga(event: AgentEvent): void {
    const d = event.data as Record<string, unknown> | null;
    if (
      d === null ||
      typeof d !== 'object' ||
      typeof d.transactionId !== 'string' ||
      typeof d.status !== 'string'
    )
      return;
    const prev = this.sagas.get(d.transactionId);
    if (prev?.status === d.status && d.status !== 'running' && d.status !== 'compensating') return; // a redelivered final status
    if (prev?.status !== d.status) this.sagaCounts[d.status] = (this.sagaCounts[d.status] ?? 0) + 1;
    this.sagas.delete(d.transactionId); // re-inserted last: the map stays in update order
    this.sagas.set(d.transactionId, {
      transactionId: d.transactionId,
      saga: typeof d.sagaName === 'string' ? d.sagaName : event.type.slice('saga.status.'.length),
      status: d.status,
      step: typeof d.currentStep === 'string' ? d.currentStep : null,
      progress: typeof d.progress === 'number' ? d.progress : 0,
      updatedAt: event.timestamp,
    });
    if (this.sagas.size > MAX_SAGAS)
      for (const [id, row] of this.sagas) {
        if (this.sagas.size <= MAX_SAGAS) break;
        if (row.status !== 'running' && row.status !== 'compensating') this.sagas.delete(id);
      }
  }

  private connections(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.sources) {
      if (!s.connections) continue;
      try {
        out[s.name] = s.connections();
      } catch (err) {
        this.options.logger.warn('monitor source failed', { source: s.name, error: toError(err).message });
      }
    }
    const t = this.bus.transport.stats();
    if (typeof t.connections === 'number') out[`transport (${this.bus.transport.name})`] = t.connections;
    return out;
  }

  private circuits(): DashboardSnapshot['circuits'] {
    const out: DashboardSnapshot['circuits'] = [];
    for (const s of this.sources) {
      if (!s.circuits) continue;
      try {
        for (const c of s.circuits()) out.push({ ...c, source: s.name });
      } catch (err) {
        this.options.logger.warn('monitor source failed', { source: s.name, error: toError(err).message });
      }
    }
    return out;
  }

  /** Takes one sample now (also called by the timer). */
  sample(): MonitorSample {
    const now = epochNow();
    const dt = Math.max(1e-3, (now - this.lastSampleAt) / 1000);
    const h = this.interval.snapshot();
    this.interval = new LatencyHistogram();
    const m = this.bus.getMetrics();
    const published = this.bus.getDetailedMetrics().published;
    const tstats = this.bus.transport.stats();
    const conns = this.connections();
    const s: MonitorSample = {
      t: Date.now(),
      handledPerSec: (this.handled - this.lastHandled) / dt,
      publishedPerSec: (published - this.lastPublished) / dt,
      p50: h.p50,
      p90: h.p90,
      p99: h.p99,
      p999: h.p999,
      max: h.max,
      count: h.count,
      queue: m.queueSize,
      backlog: typeof tstats.backlog === 'number' ? tstats.backlog : 0,
      deadLetters: this.deadLetterCount,
      connections: Object.values(conns).reduce((a, b) => a + b, 0),
      rssBytes: m.memoryUsage,
    };
    this.lastHandled = this.handled;
    this.lastPublished = published;
    this.lastSampleAt = now;
    this.history.push(s);
    if (this.history.length > this.historySize) this.history.shift();
    this.refreshDeadLetters();
    this.refreshGroups();
    return s;
  }

  private refreshGroups(): void {
    this.bus.transport.healthCheck().then(
      (h) => {
        const g = h.details?.groups;
        if (g === null || typeof g !== 'object') return;
        this.groups = Object.entries(g as Record<string, { pending?: unknown; lag?: unknown }>).map(
          ([group, v]) => ({
            group,
            pending: typeof v.pending === 'number' ? v.pending : 0,
            lag: typeof v.lag === 'number' ? v.lag : null,
          }),
        );
      },
      () => {},
    );
  }

  private refreshDeadLetters(): void {
    const store = this.bus.deadLetters;
    if (!store) return;
    // a bounded read every sample: the newest five of the first hundred (stores list oldest first)
    Promise.all([store.count(), store.list({ limit: 100 })]).then(
      ([count, list]) => {
        this.deadLetterCount = count;
        this.recentDead = [...list].sort((a, b) => b.deadAt - a.deadAt).slice(0, 5);
      },
      (err) => this.options.logger.warn('cannot read dead letters', { error: toError(err).message }),
    );
  }

  private agentsView(): DashboardSnapshot['agents'] {
    const byStatus: Record<string, number> = {};
    const pools = new Map<
      string,
      { pool: string; agents: number; active: number; capacity: number; utilization: number }
    >();
    for (const a of this.agents.values()) {
      byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
      if (a.status === 'failed') continue;
      let p = pools.get(a.pool);
      if (!p) pools.set(a.pool, (p = { pool: a.pool, agents: 0, active: 0, capacity: 0, utilization: 0 }));
      p.agents++;
      p.active += a.active;
      p.capacity += a.capacity;
    }
    for (const p of pools.values()) p.utilization = p.capacity > 0 ? p.active / p.capacity : 0;
    return {
      byStatus,
      pools: [...pools.values()].sort((x, y) => y.agents - x.agents).slice(0, 50),
      tasks: { ...this.taskCounts },
    };
  }

  /** Everything the dashboard page shows, JSON-safe. */
  snapshot(): DashboardSnapshot {
    const d = this.bus.getDetailedMetrics();
    const byPriority: Record<string, number> = {};
    PRIORITY_NAMES.forEach((n, i) => {
      byPriority[n] = this.byPriority[i] ?? 0;
    });
    return {
      service: this.options.serviceName,
      nodeId: this.bus.nodeId,
      transport: this.bus.transport.name,
      startedAt: this.startedAt,
      now: Date.now(),
      intervalMs: this.options.intervalMs,
      monitoring: this.options.enabled,
      health: this.health,
      totals: {
        handled: this.handled,
        published: d.published,
        processed: d.eventsProcessed,
        errors: d.errorCount,
        retried: d.retried,
        deadLettered: d.deadLettered,
        shed: d.shed,
      },
      byFamily: Object.fromEntries([...this.byFamily.entries()].sort((a, b) => b[1] - a[1])),
      byPriority,
      latest: this.history.at(-1) ?? null,
      history: this.history,
      lag: {
        queue: d.queueSize,
        inFlight: d.inFlight,
        backlog: typeof d.transport.backlog === 'number' ? d.transport.backlog : 0,
        groups: this.groups,
        queueByPriority: d.queueSizes,
        subscribers: d.handlerStats.map((s) => ({
          id: s.id,
          patterns: s.patterns,
          group: s.group,
          queued: s.queued,
          inFlight: s.inFlight,
          processed: s.processed,
          failed: s.failed,
        })),
      },
      connections: this.connections(),
      circuits: this.circuits(),
      contracts: this.options.contracts?.() ?? null,
      agents: this.agentsView(),
      sagas: {
        counts: { ...this.sagaCounts },
        running: [...this.sagas.values()]
          .filter((r) => r.status === 'running' || r.status === 'compensating')
          .slice(-50)
          .reverse(),
      },
      deadLetters: {
        count: this.deadLetterCount,
        recent: this.recentDead.map((dl) => ({
          id: dl.id,
          type: dl.event.type,
          reason: dl.reason,
          error: dl.error?.message ?? '',
          deadAt: dl.deadAt,
          attempts: dl.attempts,
        })),
      },
    };
  }
}
