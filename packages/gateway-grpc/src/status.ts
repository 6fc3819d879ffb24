import { Metadata, type StatusObject, status } from '@grpc/grpc-js';
import { EventBusError, RateLimitedError, toError } from '@qe/core';
import type { WireError } from './wire.js';

/**
 * The bus's stable error codes to gRPC status codes, the way the HTTP gateway
 * maps them to HTTP statuses. A code not listed is INTERNAL.
 */
export const GRPC_STATUS: Readonly<Record<string, status>> = {
  VALIDATION: status.INVALID_ARGUMENT,
  INVALID_PATTERN: status.INVALID_ARGUMENT,
  CODEC: status.INVALID_ARGUMENT,
  UNAUTHORIZED: status.UNAUTHENTICATED,
  FORBIDDEN: status.PERMISSION_DENIED,
  NOT_FOUND: status.NOT_FOUND,
  TIMEOUT: status.DEADLINE_EXCEEDED,
  PAYLOAD_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  QUEUE_FULL: status.RESOURCE_EXHAUSTED,
  NOT_CONNECTED: status.UNAVAILABLE,
  CLOSED: status.UNAVAILABLE,
  TRANSPORT: status.UNAVAILABLE,
  CIRCUIT_OPEN: status.UNAVAILABLE,
  RETRY_LATER: status.UNAVAILABLE,
  UNSUPPORTED: status.UNIMPLEMENTED,
  CONFIG: status.FAILED_PRECONDITION,
};

/** Trailing metadata keys that carry the bus's error beside the gRPC status. */
export const ERROR_CODE_KEY = 'qe-error-code';
export const ERROR_DETAILS_KEY = 'qe-error-details';
export const RETRY_AFTER_KEY = 'retry-after-ms';

/** Anything thrown, as an `EventBusError` (an unknown throw is `HANDLER`). */
export function asBusError(err: unknown): EventBusError {
  return err instanceof EventBusError ? err : new EventBusError('HANDLER', toError(err).message);
}

/** An error as the status that ends a call: gRPC code, message, and the bus's code and details in the trailers. */
export function toStatus(err: unknown): Partial<StatusObject> & { code: status } {
  const e = asBusError(err);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_KEY, e.code);
  if (e.details !== undefined) metadata.set(ERROR_DETAILS_KEY, safeJson(e.details));
  if (e instanceof RateLimitedError) metadata.set(RETRY_AFTER_KEY, String(Math.ceil(e.retryAfterMs)));
  return { code: GRPC_STATUS[e.code] ?? status.INTERNAL, details: e.message, metadata };
}

/** An error as a `qe.v1.Error` message, for streams that stay open after it. */
export function toWireError(err: unknown): WireError {
  const e = asBusError(err);
  return {
    code: e.code,
    message: e.message,
    ...(e.details === undefined ? {} : { detailsJson: safeJson(e.details) }),
  };
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? 'null';
  } catch {
    return '{}';
  }
}
