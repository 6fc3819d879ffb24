import { ConfigError } from '@qe/core';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { SagaStats } from './orchestrator.js';

/** What the metrics read at scrape time: a `SagaOrchestrator`. */
export interface SagaStatsSource {
  stats(): SagaStats;
}

export interface SagaMetricsOptions {
  /** Metric name prefix. Default `qe_`. */
  prefix?: string;
}

type CounterKey =
  | 'started'
  | 'completed'
  | 'compensated'
  | 'failed'
  | 'takenOver'
  | 'stepRetries'
  | 'stepTimeouts';

const COUNTERS: [CounterKey, string, string][] = [
  ['started', 'sagas_started_total', 'Sagas begun on this instance.'],
  ['completed', 'sagas_completed_total', 'Sagas this instance completed.'],
  ['compensated', 'sagas_compensated_total', 'Sagas this instance compensated in full.'],
  ['failed', 'sagas_failed_total', 'Sagas this instance ended failed (a compensation failed for good).'],
  ['takenOver', 'sagas_taken_over_total', 'Sagas this instance took over from a dead or stopped one.'],
  ['stepRetries', 'saga_step_retries_total', 'Step tries after the first (errors and timeouts).'],
  ['stepTimeouts', 'saga_step_timeouts_total', 'Step tries that timed out.'],
];

/**
 * Registers saga metrics on a prom-client registry (`createPrometheusMiddleware().registry`
 * from `@qe/metrics`, or any): counters mirrored from `stats()` at scrape time,
 * the sagas this instance runs now, and step duration quantiles per step.
 * Costs nothing between scrapes.
 */
export function registerSagaMetrics(
  registry: Registry,
  source: SagaStatsSource,
  options: SagaMetricsOptions = {},
): void {
  const p = options.prefix ?? 'qe_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(p))
    throw new ConfigError('prefix', 'is not a valid metric name prefix');
  const registers = [registry];
  for (const [key, name, help] of COUNTERS) {
    let last = 0;
    new Counter({
      name: p + name,
      help,
      registers,
      collect() {
        const now = source.stats()[key];
        if (now > last) this.inc(now - last);
        last = now; // after resetStats() it counts on from the new zero
      },
    });
  }
  new Gauge({
    name: `${p}sagas_running`,
    help: 'Sagas this instance owns now (running or compensating).',
    registers,
    collect() {
      this.set(source.stats().running);
    },
  });
  new Gauge({
    name: `${p}saga_step_duration_seconds`,
    help: 'Step duration from its first command to its result, by step and quantile.',
    labelNames: ['step', 'quantile'],
    registers,
    collect() {
      this.reset();
      for (const [step, h] of Object.entries(source.stats().stepDurations)) {
        this.set({ step, quantile: '0.5' }, h.p50 / 1000);
        this.set({ step, quantile: '0.95' }, h.p95 / 1000);
        this.set({ step, quantile: '0.99' }, h.p99 / 1000);
      }
    },
  });
}
