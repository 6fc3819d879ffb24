import {
  assertKnownKeys,
  ConfigError,
  type ConsumeContext,
  type ConsumeFn,
  checkBooleanSetting,
  checkFunctionSetting,
  type Middleware,
  type MiddlewareHost,
  RetryLaterError,
} from '@qe/core';
import CircuitBreaker from 'opossum';

export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitBreakerOptions {
  /** Failures within `monitoringPeriod` that open the circuit (spec 000). Default 10. */
  failureThreshold?: number;
  /** How long the circuit stays open before letting one trial call through, ms (spec 000). Default 60,000. */
  recoveryTimeout?: number;
  /** The rolling window failures are counted in, ms (spec 000). Default 30,000. */
  monitoringPeriod?: number;
  /** Share of failed calls (with at least `failureThreshold` calls) that opens the circuit, percent. Default 50. */
  errorThresholdPercentage?: number;
  /** One breaker per key: per subscription (default), or per downstream, e.g. `(e) => e.data.service`. */
  key?: (event: Parameters<ConsumeFn>[0], context: ConsumeContext) => string;
  /** Publish `system.circuit.<state>` events through the bus on every change. Default true. */
  publishStateChanges?: boolean;
  onStateChange?: (key: string, state: CircuitState) => void;
}

export interface CircuitStats {
  key: string;
  state: CircuitState;
  failures: number;
  successes: number;
  /** Calls postponed because the circuit was open (or half-open with its trial in flight). */
  rejects: number;
  /** Times the circuit opened, half-opened and closed again. */
  opened: number;
  halfOpened: number;
  closed: number;
}

const CIRCUIT_BREAKER_KEYS = [
  'failureThreshold',
  'recoveryTimeout',
  'monitoringPeriod',
  'errorThresholdPercentage',
  'key',
  'publishStateChanges',
  'onStateChange',
] as const;

/** Event types published on state changes. */
export const CIRCUIT_EVENTS = {
  open: 'system.circuit.open',
  half_open: 'system.circuit.half_open',
  closed: 'system.circuit.closed',
} as const;

/**
 * A circuit breaker (opossum) around handlers: closed, open, half-open. While
 * the circuit is open, calls are not made and the event is postponed with
 * `RetryLaterError` until the circuit may half-open: it waits, it is never
 * dropped and it does not use up its attempts. A trial call in half-open
 * closes the circuit on success or opens it again on failure.
 */
export function createCircuitBreaker(options: CircuitBreakerOptions = {}): Middleware & {
  stats(): CircuitStats[];
  state(key: string): CircuitState | undefined;
} {
  assertKnownKeys(options, CIRCUIT_BREAKER_KEYS);
  const failureThreshold = options.failureThreshold ?? 10;
  const recoveryTimeout = options.recoveryTimeout ?? 60_000;
  const monitoringPeriod = options.monitoringPeriod ?? 30_000;
  for (const [k, v] of Object.entries({ failureThreshold, recoveryTimeout, monitoringPeriod }))
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(k, 'must be a positive integer');
  const errorThresholdPercentage = options.errorThresholdPercentage ?? 50;
  if (
    typeof errorThresholdPercentage !== 'number' ||
    !(errorThresholdPercentage > 0 && errorThresholdPercentage <= 100)
  )
    throw new ConfigError(
      'errorThresholdPercentage',
      `must be a percentage above 0 and at most 100, got ${String(errorThresholdPercentage)}`,
    );
  checkFunctionSetting('key', options.key);
  checkFunctionSetting('onStateChange', options.onStateChange);
  checkBooleanSetting('publishStateChanges', options.publishStateChanges);
  const breakers = new Map<
    string,
    {
      breaker: CircuitBreaker;
      openedAt: number;
      rejects: number;
      transitions: Record<CircuitState, number>;
    }
  >();
  let host: MiddlewareHost | undefined;

  const stateOf = (b: CircuitBreaker): CircuitState =>
    b.opened ? 'open' : b.halfOpen ? 'half_open' : 'closed';

  const get = (key: string) => {
    let entry = breakers.get(key);
    if (entry) return entry;
    // the action runs the handler chain handed to it on each fire()
    const breaker = new CircuitBreaker((run: () => Promise<unknown>) => run(), {
      timeout: false,
      resetTimeout: recoveryTimeout,
      rollingCountTimeout: monitoringPeriod,
      rollingCountBuckets: 10,
      volumeThreshold: failureThreshold,
      errorThresholdPercentage,
      // no latency list per call, and no snapshot each bucket: with them opossum kept every call's
      // latency for the window and concatenated and sorted them all for every snapshot (each
      // second) and every stats read, a pause of tens of ms per second at a few thousand events/s
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
    });
    const e = { breaker, openedAt: 0, rejects: 0, transitions: { open: 0, half_open: 0, closed: 0 } };
    entry = e;
    const changed = (state: CircuitState) => {
      if (state === 'open') e.openedAt = Date.now();
      e.transitions[state]++;
      options.onStateChange?.(key, state);
      if (options.publishStateChanges !== false && host)
        void host
          .publish({ type: CIRCUIT_EVENTS[state], agentId: host.nodeId, data: { key, state }, priority: 1 })
          .catch(() => {});
    };
    breaker.on('open', () => changed('open'));
    breaker.on('halfOpen', () => changed('half_open'));
    breaker.on('close', () => changed('closed'));
    breakers.set(key, e);
    return e;
  };

  return {
    name: 'circuit-breaker',
    attach(h: MiddlewareHost) {
      host = h;
      return () => {
        for (const { breaker } of breakers.values()) breaker.shutdown();
        breakers.clear();
      };
    },
    stats: () =>
      [...breakers].map(([key, { breaker, rejects, transitions }]) => ({
        key,
        state: stateOf(breaker),
        failures: breaker.stats.failures,
        successes: breaker.stats.successes,
        rejects,
        opened: transitions.open,
        halfOpened: transitions.half_open,
        closed: transitions.closed,
      })),
    state: (key) => {
      const b = breakers.get(key);
      return b && stateOf(b.breaker);
    },
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        // circuit events themselves always pass, or an open circuit could never be reported
        if (event.type.startsWith('system.circuit.')) return next(event, ctx);
        const key = options.key ? options.key(event, ctx) : ctx.subscriptionId;
        const entry = get(key);
        if (entry.breaker.opened) {
          entry.rejects++;
          const wait = Math.max(10, entry.openedAt + recoveryTimeout - Date.now());
          throw new RetryLaterError(wait, `circuit ${key} is open`);
        }
        try {
          return await entry.breaker.fire(() => Promise.resolve(next(event, ctx)));
        } catch (err) {
          // EOPENBREAKER also comes while half-open with the one trial call in flight:
          // those events wait for the trial's outcome instead of counting as failures
          if ((err as { code?: string }).code === 'EOPENBREAKER') {
            entry.rejects++;
            const wait = entry.breaker.opened
              ? Math.max(10, entry.openedAt + recoveryTimeout - Date.now())
              : Math.min(100, Math.max(10, Math.floor(recoveryTimeout / 10)));
            throw new RetryLaterError(wait, `circuit ${key} is ${stateOf(entry.breaker)}`);
          }
          throw err;
        }
      };
    },
  };
}
