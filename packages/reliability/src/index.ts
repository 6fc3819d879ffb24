export { backoffDelay } from './backoff.js';
export { type BulkheadOptions, type BulkheadStats, createBulkhead } from './bulkhead.js';
export {
  CIRCUIT_EVENTS,
  type CircuitBreakerOptions,
  type CircuitState,
  type CircuitStats,
  createCircuitBreaker,
} from './circuit-breaker.js';
export { DeadLetterManager, type DeadLetterSelector } from './dead-letters.js';
export {
  createIdempotency,
  type IdempotencyOptions,
  type IdempotencyStats,
  type IdempotencyStore,
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
} from './idempotency.js';
export {
  createRateLimiter,
  MemoryTokenBuckets,
  type RateLimitOptions,
  RedisTokenBuckets,
  type TakeResult,
  TOKEN_BUCKET_1,
  type TokenBucketStore,
} from './rate-limit.js';
export { createRetryMiddleware, RETRY_MIDDLEWARE, type RetryOptions } from './retry.js';
export { createTimeoutMiddleware, type TimeoutOptions } from './timeout.js';
