import {
  assertKnownKeys,
  ConfigError,
  type ConsumeFn,
  checkFunctionSetting,
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
   * Delays at least this long are not waited out in this middleware. On a
   * durable transport a delivery that reached only this subscription
   * (`ctx.exclusive`, always so in a group) is handed back with
   * `delivery.nack(delay)`: Redis Streams stores it as a scheduled retry (at
   * least its `scheduleNackAboveMs`) and redelivers it with attempt + 1.
   * Otherwise (a broadcast entry shared with other subscriptions, or a
   * transport that is not durable) it throws `RetryLaterError` with
   * `details.attempts`: the bus stores the retry with the transport's
   * `scheduleRetry` when it has one and the delay is at least the bus's
   * `durableRetryAboveMs` (Redis: kept in Redis, for this subscription only,
   * as the next attempt; a crash loses nothing), and keeps it in a timer
   * otherwise (the memory transport: at-most-once across a crash).
   * Default 5,000 ms.
   */
  scheduleAboveMs?: number;
  /**
   * Events with a scheduled retry whose attempt count this middleware keeps
   * (a bounded map, oldest dropped first), so the count holds even where a
   * redelivery does not raise the delivery's attempt number. Default 100,000.
   */
  maxTrackedEvents?: number;
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
 * Attempts are counted from the context's attempt number, so retries that
 * went through the bus or the transport (a scheduled redelivery, a crash)
 * count too: a retry stored in Redis carries its attempt
 * (`RETRY_ATTEMPT_KEY`), so the count holds even when another process
 * handles it. The final `PermanentError` carries `details.attempts` and says
 * the count in its message (the bus's dead-letter record counts the calls it
 * made itself, which is 1 for retries done inside this middleware).
 */
export function createRetryMiddleware(options: RetryOptions = {}): Middleware {
  assertKnownKeys(options, [
    'retryAttempts',
    'retryDelay',
    'maxRetryDelay',
    'retryIf',
    'scheduleAboveMs',
    'maxTrackedEvents',
    'onRetry',
  ]);
  checkFunctionSetting('retryIf', options.retryIf);
  checkFunctionSetting('onRetry', options.onRetry);
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
  const maxTracked = options.maxTrackedEvents ?? 100_000;
  if (!Number.isInteger(maxTracked) || maxTracked < 1)
    throw new ConfigError('maxTrackedEvents', 'must be a positive integer');
  // Attempts already made for events whose retry was scheduled (handed back to
  // the transport or postponed): neither path is guaranteed to raise the
  // delivery's attempt number, and without this an event could retry forever.
  const tracked = new Map<string, number>();
  let durable = false;
  const remember = (key: string, attempts: number) => {
    if (tracked.size >= maxTracked) tracked.delete(tracked.keys().next().value as string);
    tracked.set(key, attempts);
  };
  return {
    name: RETRY_MIDDLEWARE,
    attach(host: MiddlewareHost) {
      durable = host.transport.capabilities.durable;
    },
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        const trackKey = `${ctx.subscriptionId}\u0000${event.id}`;
        const before = tracked.get(trackKey);
        if (before !== undefined) tracked.delete(trackKey);
        // ctx.attempt already counts the bus's own retries and transport redeliveries
        let attempt = Math.max(ctx.attempt, ctx.delivery.attempt, before === undefined ? 0 : before + 1);
        for (;;) {
          try {
            return await next(event, ctx);
          } catch (thrown) {
            const error = toError(thrown);
            if (error instanceof RetryLaterError) {
              // postponed by an inner middleware: this attempt did not count
              if (attempt > 1) remember(trackKey, attempt - 1);
              throw error;
            }
            if (error instanceof PermanentError) throw error;
            if (options.retryIf && !options.retryIf(error))
              throw new PermanentError(`not retried (retryIf): ${error.message}`, {
                cause: error,
                details: { attempts: attempt },
              });
            if (attempt > retries)
              throw new PermanentError(`failed after ${attempt} attempts: ${error.message}`, {
                cause: error,
                details: { attempts: attempt },
              });
            const delayMs = backoffDelay(attempt, base, cap);
            const scheduled = delayMs >= scheduleAbove;
            options.onRetry?.({ error, attempt, delayMs, scheduled });
            if (scheduled) {
              remember(trackKey, attempt);
              if (durable && ctx.exclusive) {
                // the transport keeps it and redelivers with attempt + 1; nothing held here
                ctx.delivery.nack(delayMs);
                return;
              }
              // details.attempts: the bus stores the retry as attempt + 1 when it schedules it durably
              throw new RetryLaterError(delayMs, `retry ${attempt} of ${retries}`, {
                details: { attempts: attempt },
              });
            }
            await sleep(delayMs);
            attempt++;
          }
        }
      };
    },
  };
}
