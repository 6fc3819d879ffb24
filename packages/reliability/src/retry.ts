import {
  ConfigError,
  type ConsumeFn,
  type Middleware,
  type MiddlewareHost,
  PermanentError,
  RetryLaterError,
  toError,
} from '@qe/core';
import { backoffDelay, sleep } from './backoff.js';

/** Metadata keys and error codes are exported so tests and dashboards can find them. */
export const RETRY_MIDDLEWARE = 'retry';

export interface RetryOptions {
  /** Retries after the first call (spec 000 `retryAttempts`). Default 3. */
  retryAttempts?: number;
  /** Base delay in ms, doubled per retry (spec 000 `retryDelay`). Default 1000. */
  retryDelay?: number;
  /** Cap of the delay in ms (spec 000 `maxRetryDelay`). Default 30,000. */
  maxRetryDelay?: number;
  /** Retry only errors this accepts. `PermanentError` is never retried. Default: every error. */
  retryIf?: (error: Error) => boolean;
  /**
   * Delays at least this long are not waited out in memory: on a durable
   * transport a group delivery is handed back (`delivery.nack(delay)`) and
   * Redis redelivers it; elsewhere the bus postpones it (`RetryLaterError`).
   * Default 5,000 ms.
   */
  scheduleAboveMs?: number;
  /** Called before each retry, for logs and metrics. */
  onRetry?: (info: { error: Error; attempt: number; delayMs: number; scheduled: boolean }) => void;
}

/**
 * Retries a failing handler with exponential backoff and full jitter. After
 * the last attempt, or at once for a `PermanentError` or an error `retryIf`
 * rejects, it throws a `PermanentError` (cause: the handler's error) so the bus
 * dead-letters the event without retrying again. Use it with the
 * subscription's own `retryAttempts: 0` to avoid retrying twice.
 *
 * Attempts are counted from the delivery's attempt number, so retries that
 * went through the transport (a scheduled redelivery, a crash) count too.
 */
export function createRetryMiddleware(options: RetryOptions = {}): Middleware {
  const retries = options.retryAttempts ?? 3;
  const base = options.retryDelay ?? 1000;
  const cap = options.maxRetryDelay ?? 30_000;
  const scheduleAbove = options.scheduleAboveMs ?? 5000;
  for (const [k, v] of Object.entries({
    retryAttempts: retries,
    retryDelay: base,
    maxRetryDelay: cap,
    scheduleAboveMs: scheduleAbove,
  }))
    if (!Number.isInteger(v) || v < 0) throw new ConfigError(k, 'must be an integer >= 0');
  let durable = false;
  return {
    name: RETRY_MIDDLEWARE,
    attach(host: MiddlewareHost) {
      durable = host.transport.capabilities.durable;
    },
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        let attempt = ctx.delivery.attempt;
        for (;;) {
          try {
            return await next(event, ctx);
          } catch (thrown) {
            const error = toError(thrown);
            if (error instanceof RetryLaterError) throw error;
            if (error instanceof PermanentError) throw error;
            if (options.retryIf && !options.retryIf(error))
              throw new PermanentError(`not retried (retryIf): ${error.message}`, { cause: error });
            if (attempt > retries)
              throw new PermanentError(`failed after ${attempt} attempts: ${error.message}`, {
                cause: error,
              });
            const delayMs = backoffDelay(attempt, base, cap);
            const scheduled = delayMs >= scheduleAbove;
            options.onRetry?.({ error, attempt, delayMs, scheduled });
            if (scheduled) {
              if (durable && ctx.group !== null) {
                // the transport keeps it and redelivers with attempt + 1; nothing held here
                ctx.delivery.nack(delayMs);
                return;
              }
              throw new RetryLaterError(delayMs, `retry ${attempt} of ${retries}`);
            }
            await sleep(delayMs);
            attempt++;
          }
        }
      };
    },
  };
}
