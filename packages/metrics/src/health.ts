import {
  type BusHealth,
  ConfigError,
  type EventInput,
  type HealthStatus,
  type PerformanceMetrics,
} from '@qe/core';

/** Spec 003's alert thresholds. */
export interface HealthThresholds {
  /** Error rate in percent (spec 003: `maxErrorRate: 5.0`). */
  maxErrorRate?: number;
  /** Average publish-to-handler latency, ms (spec 003: `maxLatency: 1000`). */
  maxLatency?: number;
  /** Deliveries queued in the bus. */
  maxQueueDepth?: number;
  /** Resident memory, bytes. */
  maxMemoryBytes?: number;
}

export interface HealthReport {
  status: HealthStatus;
  reasons: string[];
  /** Thresholds crossed right now. */
  alerts: { name: keyof HealthThresholds; value: number; threshold: number }[];
  metrics: PerformanceMetrics;
  timestamp: number;
}

/** The part of a bus the monitor uses. */
export interface HealthSource {
  readonly nodeId: string;
  getMetrics(): PerformanceMetrics;
  healthCheck(): Promise<BusHealth>;
  publish(event: EventInput): Promise<unknown>;
}

export interface HealthMonitorOptions {
  thresholds?: HealthThresholds;
  /** How often to check and publish `system.health_check`, ms (spec 003 `HEALTH_CHECK_INTERVAL`). Default 30,000. */
  intervalMs?: number;
  /** Publish events (`system.health_check`, `system.alert`). Default true. */
  publish?: boolean;
}

/**
 * Periodic health: combines the bus's `healthCheck()` with spec 003's alert
 * thresholds into healthy / degraded / unhealthy with reasons. Publishes
 * `system.health_check` every interval, and `system.alert` (`state: firing`)
 * when a threshold is crossed and again (`state: resolved`) when it clears.
 */
export class HealthMonitor {
  private timer: NodeJS.Timeout | null = null;
  private firing = new Set<string>();
  private last: HealthReport | undefined;
  private readonly thresholds: HealthThresholds;
  private readonly intervalMs: number;

  constructor(
    private readonly bus: HealthSource,
    private readonly options: HealthMonitorOptions = {},
  ) {
    this.thresholds = options.thresholds ?? {};
    for (const [k, v] of Object.entries(this.thresholds))
      if (v !== undefined && (typeof v !== 'number' || !(v >= 0)))
        throw new ConfigError(`thresholds.${k}`, 'must be a number >= 0');
    this.intervalMs = options.intervalMs ?? 30_000;
    if (!Number.isInteger(this.intervalMs) || this.intervalMs < 10)
      throw new ConfigError('intervalMs', 'must be an integer >= 10');
  }

  start(): this {
    if (!this.timer) {
      this.timer = setInterval(() => void this.check().catch(() => {}), this.intervalMs);
      this.timer.unref();
    }
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The last report, if a check ran. */
  get report(): HealthReport | undefined {
    return this.last;
  }

  async check(): Promise<HealthReport> {
    const health = await this.bus.healthCheck();
    const metrics = this.bus.getMetrics();
    const t = this.thresholds;
    const values: [keyof HealthThresholds, number | undefined, number][] = [
      ['maxErrorRate', t.maxErrorRate, metrics.errorRate * 100],
      ['maxLatency', t.maxLatency, metrics.averageLatency],
      ['maxQueueDepth', t.maxQueueDepth, metrics.queueSize],
      ['maxMemoryBytes', t.maxMemoryBytes, metrics.memoryUsage],
    ];
    const alerts = values
      .filter(([, threshold, value]) => threshold !== undefined && value > threshold)
      .map(([name, threshold, value]) => ({ name, value, threshold: threshold! }));
    let status: HealthStatus = health.status;
    const reasons = [...health.reasons];
    if (alerts.length > 0 && status === 'healthy') status = 'degraded';
    for (const a of alerts) reasons.push(`${a.name} crossed: ${round(a.value)} > ${a.threshold}`);
    const report: HealthReport = { status, reasons, alerts, metrics, timestamp: Date.now() };
    this.last = report;
    if (this.options.publish !== false) await this.announce(report, values);
    return report;
  }

  private async announce(
    report: HealthReport,
    values: [keyof HealthThresholds, number | undefined, number][],
  ) {
    const agentId = this.bus.nodeId;
    const publish = (e: EventInput) => this.bus.publish(e).catch(() => {});
    await publish({
      type: 'system.health_check',
      agentId,
      priority: 3,
      data: { status: report.status, reasons: report.reasons, metrics: report.metrics },
    });
    for (const [name, threshold, value] of values) {
      if (threshold === undefined) continue;
      const over = value > threshold;
      if (over && !this.firing.has(name)) {
        this.firing.add(name);
        await publish({
          type: 'system.alert',
          agentId,
          priority: 1,
          data: { alert: name, state: 'firing', value, threshold },
        });
      } else if (!over && this.firing.has(name)) {
        this.firing.delete(name);
        await publish({
          type: 'system.alert',
          agentId,
          priority: 1,
          data: { alert: name, state: 'resolved', value, threshold },
        });
      }
    }
  }
}

const round = (x: number) => Math.round(x * 100) / 100;

export function createHealthMonitor(bus: HealthSource, options?: HealthMonitorOptions): HealthMonitor {
  return new HealthMonitor(bus, options);
}
