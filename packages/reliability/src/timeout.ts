import { assertKnownKeys, ConfigError, type ConsumeFn, type Middleware, TimeoutError } from '@qe/core';

export interface TimeoutOptions {
  /** Longest a handler call may take (ms). */
  timeoutMs: number;
}

/**
 * Fails a handler call that takes longer than `timeoutMs` with `TIMEOUT`
 * (the call itself cannot be stopped; its late result is ignored). Put it
 * inside the retry middleware so each attempt gets the full budget.
 */
export function createTimeoutMiddleware(options: TimeoutOptions): Middleware {
  assertKnownKeys(options ?? {}, ['timeoutMs']);
  if (!Number.isInteger(options?.timeoutMs) || options.timeoutMs <= 0)
    throw new ConfigError('timeoutMs', 'must be a positive integer');
  const ms = options.timeoutMs;
  return {
    name: 'timeout',
    consume(next: ConsumeFn): ConsumeFn {
      return (event, ctx) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(
            () =>
              reject(new TimeoutError(`handler of ${ctx.subscriptionId} exceeded ${ms} ms on ${event.type}`)),
            ms,
          );
          Promise.resolve()
            .then(() => next(event, ctx))
            .then(
              (v) => {
                clearTimeout(timer);
                resolve(v);
              },
              (e) => {
                clearTimeout(timer);
                reject(e);
              },
            );
        });
    },
  };
}
