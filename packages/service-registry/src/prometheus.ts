import { ConfigError } from '@qe/core';
import { Gauge, type Registry } from 'prom-client';
import type { RegistryStats } from './registry.js';

/** What the metrics read at scrape time: a `ServiceRegistry`. */
export interface RegistryStatsSource {
  stats(): RegistryStats;
}

/**
 * Registers `<prefix>service_registry_services_total` (spec 003: distinct
 * services with a live instance), instances by health and per service, and
 * instances dropped for missing heartbeats. Read from `stats()` at scrape time.
 */
export function registerServiceRegistryMetrics(
  registry: Registry,
  source: RegistryStatsSource,
  options: { prefix?: string } = {},
): void {
  const p = options.prefix ?? 'ossa_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(p))
    throw new ConfigError('prefix', 'is not a valid metric name prefix');
  const registers = [registry];
  new Gauge({
    name: `${p}service_registry_services_total`,
    help: 'Distinct services with at least one live instance.',
    registers,
    collect() {
      this.set(source.stats().services);
    },
  });
  new Gauge({
    name: `${p}service_registry_instances`,
    help: 'Live service instances by health.',
    labelNames: ['health'],
    registers,
    collect() {
      const s = source.stats();
      this.set({ health: 'healthy' }, s.healthy);
      this.set({ health: 'degraded' }, s.degraded);
      this.set({ health: 'unhealthy' }, s.unhealthy);
    },
  });
  new Gauge({
    name: `${p}service_registry_service_instances`,
    help: 'Live instances per service, and how many of them are healthy.',
    labelNames: ['service', 'state'],
    registers,
    collect() {
      this.reset();
      for (const [service, s] of Object.entries(source.stats().byService)) {
        this.set({ service, state: 'all' }, s.instances);
        this.set({ service, state: 'healthy' }, s.healthy);
      }
    },
  });
  new Gauge({
    name: `${p}service_registry_expired_instances`,
    help: 'Instances this registry dropped because they stopped heartbeating (since start).',
    registers,
    collect() {
      this.set(source.stats().expired);
    },
  });
}
