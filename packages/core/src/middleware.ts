import type { AgentEvent } from './event.js';
import type { Delivery } from './transport.js';

/** Passed down the publish chain. */
export interface PublishContext {
  readonly nodeId: string;
  /** True for `publishBatch`. */
  readonly batch: boolean;
}

export type PublishFn = (events: readonly AgentEvent[], context: PublishContext) => Promise<void>;

/**
 * Passed to each handler call and down the consume chain. Cheap to create: the
 * bus reuses one object per pending handler call.
 */
export interface ConsumeContext {
  readonly nodeId: string;
  readonly subscriptionId: string;
  readonly patterns: readonly string[];
  readonly group: string | null;
  /** 1 on the first call; counts in-process retries and transport redeliveries. */
  readonly attempt: number;
  /** Calls this subscription makes at most before dead-lettering. */
  readonly maxAttempts: number;
  /** The transport delivery (shared by every subscription a broadcast event reached). */
  readonly delivery: Delivery;
  /**
   * `performance.now()` when the bus started this call (one clock read the bus
   * makes anyway), so middleware can time it without another. Add
   * `performance.timeOrigin` for epoch ms.
   */
  readonly startedAt: number;
  /**
   * True when this subscription is the only one the delivery reached (always
   * for a group), so settling the delivery itself (`delivery.nack(delay)`)
   * affects no other subscription.
   */
  readonly exclusive: boolean;
}

/** A handler behind middleware: may return a promise; a throw or rejection is a failure. */
export type ConsumeFn = (event: AgentEvent, context: ConsumeContext) => unknown;

export interface BatchConsumeContext extends Omit<ConsumeContext, 'delivery' | 'startedAt' | 'exclusive'> {
  readonly deliveries: readonly Delivery[];
}
export type BatchConsumeFn = (events: readonly AgentEvent[], context: BatchConsumeContext) => unknown;

/**
 * Middleware wraps publish and consume, onion style, as decorators: each
 * wrapper receives the next function and returns a new one, so it may call
 * `next` zero times (drop), once, or many times (retry).
 *
 * The bus settles deliveries (ack, retry, dead-letter), never the middleware:
 * a middleware that wants an event retried throws; one that wants it dropped
 * returns without calling `next`; one that wants it postponed without using an
 * attempt throws `RetryLaterError`; one that knows retries are futile throws
 * `PermanentError`.
 *
 * Chains are composed once per subscription (consume) and once per bus
 * (publish), never per event.
 */
export interface Middleware {
  readonly name: string;
  publish?(next: PublishFn): PublishFn;
  consume?(next: ConsumeFn): ConsumeFn;
  /** For `subscribeBatch` subscriptions; `consume` is not applied to them. */
  consumeBatch?(next: BatchConsumeFn): BatchConsumeFn;
  /** Called once when the middleware is added to a bus; may return a detach function. */
  attach?(host: MiddlewareHost): void | (() => void);
}

/** What a middleware may use of the bus it is attached to. */
export interface MiddlewareHost {
  readonly nodeId: string;
  /** The bus's transport: middleware reads `capabilities` (is it durable?) and `name`. */
  readonly transport: Pick<import('./transport.js').Transport, 'name' | 'capabilities'>;
  /** Publish an event from inside middleware (for example a `system.*` state change). */
  publish(event: import('./event.js').EventInput): Promise<unknown>;
  on(event: string, listener: (...args: never[]) => void): unknown;
}

/** Composes wrappers so that the first in the list is the outermost. */
export function composeConsume(middleware: readonly Middleware[], handler: ConsumeFn): ConsumeFn {
  let fn = handler;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]!.consume;
    if (wrap) fn = wrap.call(middleware[i], fn);
  }
  return fn;
}

export function composeConsumeBatch(
  middleware: readonly Middleware[],
  handler: BatchConsumeFn,
): BatchConsumeFn {
  let fn = handler;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]!.consumeBatch;
    if (wrap) fn = wrap.call(middleware[i], fn);
  }
  return fn;
}

export function composePublish(middleware: readonly Middleware[], last: PublishFn): PublishFn {
  let fn = last;
  for (let i = middleware.length - 1; i >= 0; i--) {
    const wrap = middleware[i]!.publish;
    if (wrap) fn = wrap.call(middleware[i], fn);
  }
  return fn;
}
