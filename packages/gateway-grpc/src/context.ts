import type { Deadline, Metadata } from '@grpc/grpc-js';
import { type QEEventBus, TimeoutError } from '@qe/core';
import type { Permissions } from '@qe/gateway-auth';

export interface GrpcGatewayStats {
  /** Calls started, every method. */
  calls: number;
  /** Subscribe streams open now. */
  subscriptions: number;
  /** Publish streams open now. */
  publishStreams: number;
  refused: { unauthenticated: number; maxSubscriptions: number };
  errors: {
    /** Bytes that were not a valid message, bad JSON in `data_json`, a stream message of the wrong kind. */
    malformed: number;
    validation: number;
    forbidden: number;
    rateLimited: number;
    /** Calls whose deadline passed before the gateway answered. */
    deadline: number;
    other: number;
  };
  published: number;
  delivered: number;
  /** Events not sent to a subscriber that read too slowly (`slowClientPolicy: 'drop'`). */
  dropped: number;
  slowDisconnects: number;
}

export function emptyStats(): GrpcGatewayStats {
  return {
    calls: 0,
    subscriptions: 0,
    publishStreams: 0,
    refused: { unauthenticated: 0, maxSubscriptions: 0 },
    errors: {
      malformed: 0,
      validation: 0,
      forbidden: 0,
      rateLimited: 0,
      deadline: 0,
      other: 0,
    },
    published: 0,
    delivered: 0,
    dropped: 0,
    slowDisconnects: 0,
  };
}

/** Who made a call: the token's subject and permissions (everything, without auth). */
export interface Principal {
  id: string;
  permissions: Permissions;
  /** Epoch ms; 0 without a token. */
  expiresAt: number;
}

/** What the method handlers need from the gateway that owns them. */
export interface GatewayContext {
  bus: QEEventBus;
  stats: GrpcGatewayStats;
  /** Verifies the call's `authorization` metadata; throws `UNAUTHORIZED`. */
  authenticate(metadata: Metadata): Promise<Principal>;
  /** One message of this peer and principal against the rate limits; throws `RATE_LIMITED`. */
  rateCheck(peer: string, principal: Principal): Promise<void>;
  /** Counts a refusal by its bus code. */
  count(err: unknown): void;
  limits: {
    maxSubscriptions: number;
    maxSubscriptionsPerPrincipal: number;
    maxBufferedBytes: number;
    slowClientPolicy: 'drop' | 'disconnect';
    ackTimeoutMs: number;
    startTimeoutMs: number;
    resumeScanLimit: number;
    maxStreamInFlight: number;
  };
  /** Subscribe streams open, per principal id. */
  subscriptionsOf: Map<string, number>;
  /** Streams open now: each entry ends its stream (UNAVAILABLE) when the gateway closes. */
  streams: Set<() => void>;
  isClosing(): boolean;
}

/** The part of a grpc-js server call that knows its deadline. */
export interface WithDeadline {
  getDeadline(): Deadline;
}

/** Milliseconds left before the call's deadline; Infinity without one. */
export function timeLeft(call: WithDeadline): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(at) ? at - Date.now() : Number.POSITIVE_INFINITY;
}

/**
 * Runs `work` within the call's deadline: refuses at once when it has already
 * passed (nothing is started), and rejects with `TIMEOUT` when it passes first
 * (what was started may still complete; the client was told it did not in time).
 */
export async function withinDeadline<T>(call: WithDeadline, work: () => Promise<T>): Promise<T> {
  const left = timeLeft(call);
  if (left <= 0) throw new TimeoutError('the call deadline passed before the gateway started it');
  if (left === Number.POSITIVE_INFINITY) return work();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError('the call deadline passed')), left);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
