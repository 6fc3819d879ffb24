/**
 * Every error the bus raises is an `EventBusError` with a stable `code`.
 * All codes live in `ErrorCodes`, so each can be found by grepping for it and
 * tests assert on `code`, never on message text.
 */
export const ErrorCodes = {
  VALIDATION: 'VALIDATION',
  INVALID_PATTERN: 'INVALID_PATTERN',
  NOT_CONNECTED: 'NOT_CONNECTED',
  TIMEOUT: 'TIMEOUT',
  RATE_LIMITED: 'RATE_LIMITED',
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  CIRCUIT_OPEN: 'CIRCUIT_OPEN',
  TRANSPORT: 'TRANSPORT',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  QUEUE_FULL: 'QUEUE_FULL',
  CODEC: 'CODEC',
  HANDLER: 'HANDLER',
  PERMANENT: 'PERMANENT',
  CLOSED: 'CLOSED',
  NOT_FOUND: 'NOT_FOUND',
  UNSUPPORTED: 'UNSUPPORTED',
  CONFIG: 'CONFIG',
  RETRY_LATER: 'RETRY_LATER',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface EventBusErrorOptions {
  cause?: unknown;
  /** Structured details (the offending field, limits, ids). Safe to serialize. */
  details?: Record<string, unknown>;
}

/** Base class of every error raised by QE Event Bus packages. */
export class EventBusError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: EventBusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: normalizeCause(options.cause) });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details;
  }

  /** A JSON-safe view, for gateways and logs. */
  toJSON(): { name: string; code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { name: this.name, code: this.code, message: this.message }
      : { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

function normalizeCause(cause: unknown): unknown {
  if (cause instanceof Error) return cause;
  return new Error(typeof cause === 'string' ? cause : safeString(cause));
}

function safeString(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** An event, a batch, a pattern or an option was invalid. `details.field` names the field. */
export class ValidationError extends EventBusError {
  readonly field: string;
  constructor(field: string, message: string, options: EventBusErrorOptions = {}) {
    super(ErrorCodes.VALIDATION, `${field}: ${message}`, {
      ...options,
      details: { field, ...options.details },
    });
    this.field = field;
  }
}

/** A subscription pattern was malformed. */
export class InvalidPatternError extends EventBusError {
  readonly pattern: string;
  constructor(pattern: string, reason: string) {
    super(ErrorCodes.INVALID_PATTERN, `invalid pattern ${JSON.stringify(pattern)}: ${reason}`, {
      details: { field: 'pattern', pattern, reason },
    });
    this.pattern = pattern;
  }
}

export class NotConnectedError extends EventBusError {
  constructor(message = 'the bus is not started (call start())', options?: EventBusErrorOptions) {
    super(ErrorCodes.NOT_CONNECTED, message, options);
  }
}

export class TimeoutError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.TIMEOUT, message, options);
  }
}

export class RateLimitedError extends EventBusError {
  /** Milliseconds after which a retry may succeed. */
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, options: EventBusErrorOptions = {}) {
    super(ErrorCodes.RATE_LIMITED, message, { ...options, details: { retryAfterMs, ...options.details } });
    this.retryAfterMs = retryAfterMs;
  }
}

export class UnauthorizedError extends EventBusError {
  constructor(message = 'authentication required', options?: EventBusErrorOptions) {
    super(ErrorCodes.UNAUTHORIZED, message, options);
  }
}

export class ForbiddenError extends EventBusError {
  constructor(message = 'not allowed', options?: EventBusErrorOptions) {
    super(ErrorCodes.FORBIDDEN, message, options);
  }
}

export class CircuitOpenError extends EventBusError {
  constructor(message = 'circuit is open', options?: EventBusErrorOptions) {
    super(ErrorCodes.CIRCUIT_OPEN, message, options);
  }
}

export class TransportError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.TRANSPORT, message, options);
  }
}

export class PayloadTooLargeError extends EventBusError {
  constructor(size: number, limit: number, options: EventBusErrorOptions = {}) {
    super(ErrorCodes.PAYLOAD_TOO_LARGE, `payload of ${size} bytes exceeds the limit of ${limit} bytes`, {
      ...options,
      details: { size, limit, ...options.details },
    });
  }
}

/** A bounded queue was full and the backpressure policy is `fail`. */
export class QueueFullError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.QUEUE_FULL, message, options);
  }
}

export class CodecError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.CODEC, message, options);
  }
}

/** A handler failed after its last attempt. `cause` is what it threw. */
export class HandlerError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.HANDLER, message, options);
  }
}

/**
 * Throw this from a handler to say "retrying will not help": the event skips the
 * remaining attempts and goes straight to the dead-letter queue.
 */
export class PermanentError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.PERMANENT, message, options);
  }
}

/**
 * Thrown by middleware (a circuit breaker, a rate limiter in wait mode) to
 * postpone an event without using one of its attempts: the bus hands it back
 * after `delayMs` and the event is never dropped.
 */
export class RetryLaterError extends EventBusError {
  readonly delayMs: number;
  constructor(delayMs: number, reason = 'postponed', options: EventBusErrorOptions = {}) {
    super(ErrorCodes.RETRY_LATER, `retry later (${Math.round(delayMs)} ms): ${reason}`, {
      ...options,
      details: { delayMs, ...options.details },
    });
    this.delayMs = delayMs;
  }
}

export class ClosedError extends EventBusError {
  constructor(message = 'the bus is stopped', options?: EventBusErrorOptions) {
    super(ErrorCodes.CLOSED, message, options);
  }
}

export class NotFoundError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.NOT_FOUND, message, options);
  }
}

/** The transport does not declare the capability an operation needs. */
export class UnsupportedError extends EventBusError {
  constructor(message: string, options?: EventBusErrorOptions) {
    super(ErrorCodes.UNSUPPORTED, message, options);
  }
}

export class ConfigError extends EventBusError {
  readonly setting: string;
  constructor(setting: string, message: string, options: EventBusErrorOptions = {}) {
    super(ErrorCodes.CONFIG, `${setting}: ${message}`, {
      ...options,
      details: { setting, ...options.details },
    });
    this.setting = setting;
  }
}

/** True for an `EventBusError` (works across package copies by checking `code`). */
export function isEventBusError(err: unknown): err is EventBusError {
  return (
    err instanceof EventBusError ||
    (typeof err === 'object' &&
      err !== null &&
      typeof (err as { code?: unknown }).code === 'string' &&
      (err as { code: string }).code in ErrorCodes)
  );
}

/** Turn anything thrown into an `Error` (handlers may throw strings or objects). */
export function toError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new Error(typeof thrown === 'string' ? thrown : safeString(thrown));
}
