import { type Logger, noopLogger, toError } from '@qe/core';
import type { ContractRegistry } from './registry.js';

/** What a service instance declares, as `@qe/service-registry` gives it. */
export interface DeclaringInstance {
  name: string;
  version: string;
  contracts: {
    eventType: string;
    schema: Record<string, unknown>;
    version?: string;
    direction?: 'publishes' | 'consumes';
  }[];
}

/**
 * The part of `@qe/service-registry`'s `ServiceRegistry` discovery needs:
 * what is registered now, and a watch for services that come or change.
 */
export interface ServiceDirectory {
  find(query: { health: 'any' }): DeclaringInstance[];
  watch(
    query: { health: 'any' },
    listener: (change: { kind: string; instance: DeclaringInstance }) => void,
  ): () => void;
}

export interface ContractDiscoveryStats {
  /** Contracts registered from services' declarations. */
  registered: number;
  /** Declarations the registry refused (a breaking change, a bad schema): counted and logged, never thrown. */
  refused: number;
}

/**
 * Contracts from the services that declare them: every schema a service
 * instance declares for an event type it **publishes** becomes a contract
 * owned by that service (the publisher defines the event; a consumer's
 * declaration is its expectation, not the contract). Services registered now
 * are read at once, later ones as they come up. A declaration the registry
 * refuses (an incompatible new version, a bad schema) is counted and logged;
 * it never stops discovery. Returns a function that stops watching.
 */
export function discoverContracts(
  registry: ContractRegistry,
  services: ServiceDirectory,
  options: { logger?: Logger } = {},
): { stop(): void; stats(): ContractDiscoveryStats; settled(): Promise<void> } {
  const logger = options.logger ?? noopLogger;
  const stats: ContractDiscoveryStats = { registered: 0, refused: 0 };
  const seen = new Set<string>();
  let pending: Promise<void> = Promise.resolve();
  const take = (i: DeclaringInstance) => {
    for (const c of i.contracts ?? []) {
      if (c.direction === 'consumes') continue;
      const version = c.version ?? i.version;
      const key = `${i.name}|${c.eventType}|${version}`;
      if (seen.has(key)) continue;
      seen.add(key);
      pending = pending.then(() =>
        registry.declare(i.name, [{ type: c.eventType, version, schema: c.schema }]).then(
          () => {
            stats.registered++;
          },
          (err) => {
            stats.refused++;
            seen.delete(key); // a later declaration of the same version may be tried again
            logger.warn('a service declared a contract the registry refused', {
              service: i.name,
              type: c.eventType,
              version,
              error: toError(err).message,
            });
          },
        ),
      );
    }
  };
  for (const i of services.find({ health: 'any' })) take(i);
  const unwatch = services.watch({ health: 'any' }, (change) => {
    if (change.kind === 'up' || change.kind === 'health') take(change.instance);
  });
  return { stop: unwatch, stats: () => ({ ...stats }), settled: () => pending };
}
