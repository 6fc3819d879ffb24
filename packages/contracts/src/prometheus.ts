import { ConfigError } from '@qe/core';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AuditLog, AuditOutcome } from './audit.js';
import type { ContractValidationStats } from './middleware.js';
import type { CrossProjectStats } from './projects.js';

export interface ContractMetricsSources {
  /** A `CrossProjectMessenger` (its `stats()` and `audit`). */
  messenger?: { stats(): CrossProjectStats; audit: AuditLog };
  /** A `contractValidation(...)` middleware. */
  validation?: { stats(): ContractValidationStats };
}

export interface ContractMetricsOptions {
  /** Prefix of the cross-project metrics. Default `ossa_` (spec 003's `ossa_cross_project_messages_total`). */
  prefix?: string;
  /** Prefix of the validation metrics. Default `qe_`. */
  validationPrefix?: string;
}

/**
 * Registers, read at scrape time: `ossa_cross_project_messages_total{outcome}`,
 * `ossa_cross_project_receive_rejected_total`, `ossa_cross_project_audit_entries`
 * (the audit log's size), and `qe_contract_validation_total{stage,result}`.
 */
export function registerContractMetrics(
  registry: Registry,
  sources: ContractMetricsSources,
  options: ContractMetricsOptions = {},
): void {
  const p = options.prefix ?? 'ossa_';
  const vp = options.validationPrefix ?? 'qe_';
  for (const [k, v] of [
    ['prefix', p],
    ['validationPrefix', vp],
  ] as const)
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(v)) throw new ConfigError(k, 'is not a valid metric name prefix');
  const registers = [registry];
  const { messenger, validation } = sources;
  if (messenger) {
    const last: Partial<Record<AuditOutcome, number>> = {};
    new Counter({
      name: `${p}cross_project_messages_total`,
      help: 'Cross-project messages by outcome: delivered, or the reason they were refused.',
      labelNames: ['outcome'],
      registers,
      collect() {
        for (const [outcome, n] of Object.entries(messenger.stats().messages) as [AuditOutcome, number][]) {
          const prev = last[outcome] ?? 0;
          this.inc({ outcome }, Math.max(0, n - prev));
          last[outcome] = n;
        }
      },
    });
    let lastRejected = 0;
    new Counter({
      name: `${p}cross_project_receive_rejected_total`,
      help: 'Cross-project messages a receiver dead-lettered (not allowed by policy, or failing their contract).',
      registers,
      collect() {
        const n = messenger.stats().receiveRejected;
        this.inc(Math.max(0, n - lastRejected));
        lastRejected = n;
      },
    });
    new Gauge({
      name: `${p}cross_project_audit_entries`,
      help: 'Entries in the cross-project audit log (after retention).',
      registers,
      async collect() {
        this.set(await messenger.audit.size());
      },
    });
  }
  if (validation) {
    const last: Record<string, number> = {};
    new Counter({
      name: `${vp}contract_validation_total`,
      help: 'Contract checks by stage and result (refused: strict publish; invalid_published: non-strict; dead_lettered: consume).',
      labelNames: ['result'],
      registers,
      collect() {
        const s = validation.stats();
        const now: Record<string, number> = {
          checked: s.checked,
          refused: s.publishRefused,
          invalid_published: s.publishInvalid,
          dead_lettered: s.consumeRejected,
          uncovered: s.uncovered,
        };
        for (const [result, n] of Object.entries(now)) {
          this.inc({ result }, Math.max(0, n - (last[result] ?? 0)));
          last[result] = n;
        }
      },
    });
  }
}
