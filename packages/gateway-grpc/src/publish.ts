import type {
  ServerDuplexStream,
  ServerUnaryCall,
  sendUnaryData,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  type AgentEvent,
  ClosedError,
  type QEEventBus,
  UnauthorizedError,
  ValidationError,
  validatePattern,
} from '@qe/core';
import { assertPublish, assertSubscribe, scheduleExpiry } from '@qe/gateway-auth';
import { type GatewayContext, type Principal, withinDeadline } from './context.js';
import { Malformed } from './proto.js';
import { toStatus, toWireError } from './status.js';
import { fromWireEvent, toWireEvent, type WireError, type WireEvent } from './wire.js';

type PublishInput = Parameters<QEEventBus['publish']>[0];

/** A request that did not decode is answered like any other invalid input, never as INTERNAL. */
function decoded<T>(request: T | Malformed, field = 'request'): T {
  if (request instanceof Malformed) throw new ValidationError(field, request.message);
  if (request === null || typeof request !== 'object') throw new ValidationError(field, 'must be a message');
  return request;
}

/**
 * One unary method: decode guard, authentication, rate limit, then `fn`
 * within the call's deadline. Every failure becomes a status with the bus's
 * code in the trailers and is counted; nothing thrown leaves the handler.
 */
function unary<Req, Res>(
  ctx: GatewayContext,
  fn: (req: Req, who: Principal) => Promise<Res>,
): (call: ServerUnaryCall<Req | Malformed, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    ctx.stats.calls++;
    const run = async () => {
      const req = decoded(call.request);
      const who = await ctx.authenticate(call.metadata);
      await ctx.rateCheck(call.getPeer(), who);
      return withinDeadline(call, () => fn(req, who));
    };
    run().then(
      (res) => {
        if (!call.cancelled) callback(null, res);
      },
      (err) => {
        ctx.count(err);
        if (!call.cancelled) callback(toStatus(err));
      },
    );
  };
}

interface PublishRequest {
  event?: WireEvent;
}
interface PublishBatchRequest {
  events?: WireEvent[];
}
interface HistoryRequest {
  pattern?: string;
  limit?: number;
  since?: number;
  correlationId?: string;
}
interface PublishStreamRequest {
  ref?: string;
  event?: WireEvent;
}
interface PublishStreamReply {
  ref: string;
  id?: string;
  error?: WireError;
}

/** Checks the principal may publish each event's type (a missing or bad type is left to the bus's validation). */
function inputsFor(who: Principal, wire: readonly unknown[], batch: boolean): PublishInput[] {
  return wire.map((w, i) => {
    const input = fromWireEvent(w, batch ? `events[${i}]` : 'event');
    const type = (input as { type?: unknown }).type;
    if (typeof type === 'string' && type !== '') assertPublish(who.permissions, type);
    return input as PublishInput;
  });
}

/** `Publish`, `PublishBatch`, `PublishStream` and `History`. */
export function publishMethods(ctx: GatewayContext): UntypedServiceImplementation {
  const { bus, stats } = ctx;
  return {
    Publish: unary<PublishRequest, { ids: string[] }>(ctx, async (req, who) => {
      const [input] = inputsFor(who, [req.event], false);
      const e = await bus.publish(input!);
      stats.published++;
      return { ids: [e.id] };
    }),
    PublishBatch: unary<PublishBatchRequest, { ids: string[] }>(ctx, async (req, who) => {
      const events = req.events ?? [];
      if (events.length === 0) throw new ValidationError('events', 'at least one event');
      const out = await bus.publishBatch(inputsFor(who, events, true));
      stats.published += out.length;
      return { ids: out.map((e) => e.id) };
    }),
    History: unary<HistoryRequest, { events: WireEvent[] }>(ctx, async (req, who) => {
      const pattern = req.pattern ?? '**';
      validatePattern(pattern);
      assertSubscribe(who.permissions, pattern);
      const limit = req.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
        throw new ValidationError('limit', 'must be an integer from 1 to 10000');
      const events: AgentEvent[] = await bus.getRecentEvents({
        pattern,
        limit,
        ...(req.since === undefined ? {} : { since: req.since }),
        ...(req.correlationId === undefined ? {} : { correlationId: req.correlationId }),
      });
      return { events: events.map(toWireEvent) };
    }),
    PublishStream: (call: ServerDuplexStream<PublishStreamRequest | Malformed, PublishStreamReply>) =>
      publishStream(ctx, call),
  };
}

/**
 * A publish stream: one reply per event, in order, each its id or its typed
 * error; the stream stays open after a refused event. At most
 * `maxStreamInFlight` events wait: past that the gateway stops reading, so
 * HTTP/2 flow control holds the client back instead of the gateway's memory.
 */
function publishStream(
  ctx: GatewayContext,
  call: ServerDuplexStream<PublishStreamRequest | Malformed, PublishStreamReply>,
): void {
  const { stats, bus } = ctx;
  const max = ctx.limits.maxStreamInFlight;
  stats.calls++;
  stats.publishStreams++;
  const queue: (PublishStreamRequest | Malformed)[] = [];
  let who: Principal | null = null;
  let working = false;
  let inputDone = false;
  let ended = false;
  let cancelExpiry = () => {};
  const finish = (err?: unknown) => {
    if (ended) return;
    ended = true;
    stats.publishStreams--;
    cancelExpiry();
    ctx.streams.delete(onClose);
    queue.length = 0;
    if (call.cancelled) return;
    if (err === undefined) call.end();
    else call.emit('error', toStatus(err));
  };
  const onClose = () => finish(new ClosedError('the gateway is closing'));
  ctx.streams.add(onClose);
  call.on('error', () => {}); // a write to a stream the client reset: it is going away anyway
  call.on('cancelled', () => finish());

  const one = async (m: PublishStreamRequest | Malformed): Promise<PublishStreamReply> => {
    const ref = m instanceof Malformed || typeof m.ref !== 'string' ? '' : m.ref;
    try {
      const req = decoded(m);
      await ctx.rateCheck(call.getPeer(), who!);
      const [input] = inputsFor(who!, [req.event], false);
      const e = await bus.publish(input!);
      stats.published++;
      return { ref, id: e.id };
    } catch (err) {
      ctx.count(err);
      return { ref, error: toWireError(err) };
    }
  };
  const pump = async () => {
    if (working || who === null || ended) return;
    working = true;
    while (queue.length > 0 && !ended) {
      const m = queue.shift()!;
      if (queue.length <= max / 2) call.resume();
      const reply = await one(m);
      if (!ended) call.write(reply);
    }
    working = false;
    if (inputDone && queue.length === 0) finish();
  };
  call.on('data', (m: PublishStreamRequest | Malformed) => {
    if (ended) return;
    queue.push(m);
    if (queue.length >= max) call.pause();
    void pump().catch(() => {});
  });
  call.on('end', () => {
    inputDone = true;
    void pump();
  });
  ctx.authenticate(call.metadata).then(
    (p) => {
      who = p;
      if (p.expiresAt > 0)
        cancelExpiry = scheduleExpiry(p.expiresAt, () => {
          ctx.stats.refused.unauthenticated++;
          finish(new UnauthorizedError('token expired'));
        });
      void pump();
    },
    (err) => {
      ctx.count(err);
      finish(err);
    },
  );
}
