import {
  assertKnownKeys,
  ConfigError,
  type ConsumeFn,
  checkIntSetting,
  EventPriority,
  type Middleware,
  QueueFullError,
  RetryLaterError,
} from '@qe/core';

export interface BulkheadOptions {
  /** Calls running at once. */
  maxConcurrent: number;
  /** Calls waiting for a slot. Default 0. */
  maxQueue?: number;
  /**
   * When the waiting queue is full too (SEMANTICS' backpressure policy):
   * `wait` (alias `retry-later`) postpones the event without using an attempt,
   * so it waits and is not lost; `fail` throws `QUEUE_FULL` (the bus retries
   * it, then dead-letters); `shed` drops events at `shedPriority` or less
   * urgent (acknowledged unhandled, counted) while more urgent ones wait.
   * Default `wait`.
   */
  overflow?: 'wait' | 'retry-later' | 'fail' | 'shed';
  /** With `overflow: 'shed'`, the most urgent priority that may be shed. Default `EventPriority.LOW` (LOW and BULK). */
  shedPriority?: EventPriority;
  /** How long a waiting event is postponed before it tries again, ms (an integer >= 1). Default 100. */
  retryLaterMs?: number;
}

export interface BulkheadStats {
  running: number;
  queued: number;
  rejected: number;
  shed: number;
  postponed: number;
}

/**
 * A concurrency cap with a bounded waiting queue around a handler (or a set of
 * subscriptions sharing one bulkhead instance, to protect one downstream).
 * Waiters are served in arrival order.
 */
export function createBulkhead(options: BulkheadOptions): Middleware & { stats(): BulkheadStats } {
  assertKnownKeys(options ?? {}, ['maxConcurrent', 'maxQueue', 'overflow', 'shedPriority', 'retryLaterMs']);
  if (!Number.isInteger(options?.maxConcurrent) || options.maxConcurrent < 1)
    throw new ConfigError('maxConcurrent', 'must be an integer >= 1');
  const maxQueue = options.maxQueue ?? 0;
  if (!Number.isInteger(maxQueue) || maxQueue < 0)
    throw new ConfigError('maxQueue', 'must be an integer >= 0');
  const overflow = options.overflow ?? 'wait';
  if (!['wait', 'fail', 'retry-later', 'shed'].includes(overflow))
    throw new ConfigError('overflow', "must be 'wait', 'fail' or 'shed'");
  const shedFrom = options.shedPriority ?? EventPriority.LOW;
  if (!Number.isInteger(shedFrom) || shedFrom < 0 || shedFrom > 4)
    throw new ConfigError('shedPriority', 'must be an EventPriority (0-4)');
  // 0 would hand a postponed event straight back, spinning while the bulkhead is full
  checkIntSetting('retryLaterMs', options.retryLaterMs, 1);
  const retryLaterMs = options.retryLaterMs ?? 100;
  const counters: BulkheadStats = { running: 0, queued: 0, rejected: 0, shed: 0, postponed: 0 };
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) {
      counters.queued--;
      next();
    } else counters.running--;
  };
  return {
    name: 'bulkhead',
    stats: () => ({ ...counters }),
    consume(next: ConsumeFn): ConsumeFn {
      return async (event, ctx) => {
        if (counters.running >= options.maxConcurrent) {
          if (waiting.length >= maxQueue) {
            if (overflow === 'shed' && event.priority >= shedFrom) {
              counters.shed++;
              return;
            }
            if (overflow === 'fail') {
              counters.rejected++;
              throw new QueueFullError(
                `bulkhead full (${options.maxConcurrent} running, ${maxQueue} waiting)`,
              );
            }
            counters.postponed++;
            throw new RetryLaterError(retryLaterMs, 'bulkhead full');
          }
          counters.queued++;
          await new Promise<void>((r) => waiting.push(r)); // the slot is handed over, running unchanged
        } else counters.running++;
        try {
          return await next(event, ctx);
        } finally {
          release();
        }
      };
    },
  };
}
