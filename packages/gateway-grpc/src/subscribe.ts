import type { ServerDuplexStream } from '@grpc/grpc-js';
import {
  type AgentEvent,
  ClosedError,
  compilePattern,
  EventBusError,
  type EventPriority,
  NotFoundError,
  QueueFullError,
  TimeoutError,
  UnauthorizedError,
  UnsupportedError,
  ValidationError,
} from '@qe/core';
import { assertSubscribe, scheduleExpiry } from '@qe/gateway-auth';
import type { GatewayContext, Principal } from './context.js';
import { Malformed } from './proto.js';
import { toStatus, toWireError } from './status.js';
import { toWireEvent, type WireError, type WireEvent } from './wire.js';

interface SubscribeStart {
  patterns?: string[];
  group?: string;
  minPriority?: number;
  resumeAfterId?: string;
}
type SubscribeRequest = {
  kind?: 'start' | 'ack' | 'nack';
  start?: SubscribeStart;
  ack?: string;
  nack?: string;
};
type SubscribeReply =
  | { subscribed: string }
  | { event: { event: WireEvent; delivery?: string; replayed: boolean } }
  | { error: WireError }
  | { dropped: { count: number } };

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Bytes a delivery adds to the stream's buffer: the payload and a margin for the envelope. */
const sizeOf = (w: WireEvent) => (w.dataJson?.length ?? 0) + (w.metadata ? 256 : 0) + 128;

/**
 * One Subscribe stream: the client's first message starts a subscription
 * (patterns, optional group, minimum priority, resume point); then it acks or
 * nacks group deliveries. The stream holds at most `maxBufferedBytes` of events
 * the client has not read; past that, events are dropped (counted, and the
 * client is told how many once it catches up) or the stream is ended with
 * RESOURCE_EXHAUSTED, by `slowClientPolicy`. A group delivery the client never
 * gets, nacks, does not ack in time, or leaves unacked at the end goes back to
 * the bus to be retried, so at-least-once holds through the gateway.
 */
export function subscribeStream(
  ctx: GatewayContext,
  call: ServerDuplexStream<SubscribeRequest | Malformed, SubscribeReply>,
): void {
  const { bus, stats, limits } = ctx;
  stats.calls++;
  let who: Principal | null = null;
  let counted = false;
  let unsubscribe: (() => boolean) | null = null;
  let started = false;
  let ended = false;
  let buffered = 0;
  let droppedSince = 0;
  let deliverySeq = 0;
  const pending = new Map<string, Pending>();
  let cancelExpiry = () => {};
  /** While resuming: live events wait here until history has been sent; `sent` keeps their ids. */
  let held: AgentEvent[] | null = null;
  const sent = new Set<string>();

  const finish = (err?: unknown) => {
    if (ended) return;
    ended = true;
    clearTimeout(startTimer);
    cancelExpiry();
    ctx.streams.delete(onGatewayClose);
    if (unsubscribe) unsubscribe();
    if (counted && who) {
      stats.subscriptions--;
      const n = (ctx.subscriptionsOf.get(who.id) ?? 1) - 1;
      if (n === 0) ctx.subscriptionsOf.delete(who.id);
      else ctx.subscriptionsOf.set(who.id, n);
    }
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ClosedError('the subscriber went away before acking'));
    }
    pending.clear();
    if (call.cancelled) return;
    if (err === undefined) call.end();
    else call.emit('error', toStatus(err));
  };
  const onGatewayClose = () => finish(new ClosedError('the gateway is closing'));
  ctx.streams.add(onGatewayClose);
  call.on('error', () => {}); // a write to a stream the client reset: it is going away anyway
  call.on('cancelled', () => finish());
  call.on('end', () => finish()); // the client is done: no more acks can come
  const startTimer = setTimeout(
    () => finish(new TimeoutError(`no start message within ${limits.startTimeoutMs} ms`)),
    limits.startTimeoutMs,
  );
  startTimer.unref();

  const write = (msg: SubscribeReply, bytes: number) => {
    buffered += bytes;
    call.write(msg, () => {
      buffered -= bytes;
      if (droppedSince > 0 && !ended && buffered <= limits.maxBufferedBytes / 2) {
        const count = droppedSince;
        droppedSince = 0;
        call.write({ dropped: { count } });
      }
    });
  };

  /** The bus's handler for this subscription. Returns a promise (group: settled by the client's ack) or nothing. */
  const deliver = (event: AgentEvent, group: boolean): void | Promise<void> => {
    if (ended) {
      // a group event goes back to the bus; a broadcast one has nobody left to go to
      if (group) throw new ClosedError('subscriber gone');
      return;
    }
    if (held) {
      held.push(event);
      return;
    }
    if (!group && sent.has(event.id)) return; // already sent from history
    const wire = toWireEvent(event);
    const bytes = sizeOf(wire);
    if (buffered + bytes > limits.maxBufferedBytes) {
      if (limits.slowClientPolicy === 'disconnect') {
        stats.slowDisconnects++;
        finish(new QueueFullError('subscriber too slow: its buffer is full'));
      } else {
        stats.dropped++;
        droppedSince++;
      }
      // a group event goes back to the bus (another member, or later); a broadcast one is dropped for this client
      if (group) throw new QueueFullError('subscriber too slow');
      return;
    }
    stats.delivered++;
    if (!group) return write({ event: { event: wire, replayed: false } }, bytes);
    const delivery = `d${++deliverySeq}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(delivery);
        reject(new TimeoutError(`no ack for ${delivery} within ${limits.ackTimeoutMs} ms`));
      }, limits.ackTimeoutMs);
      pending.set(delivery, { resolve, reject, timer });
      write({ event: { event: wire, delivery, replayed: false } }, bytes);
    });
  };

  const start = async (s: SubscribeStart) => {
    const patterns = s.patterns ?? [];
    if (patterns.length === 0) throw new ValidationError('start.patterns', 'at least one pattern');
    for (const p of patterns) assertSubscribe(who!.permissions, p);
    const group = s.group;
    if (group !== undefined && s.resumeAfterId !== undefined)
      throw new ValidationError(
        'start.resumeAfterId',
        'applies to broadcast subscriptions; a group resumes from its own pending deliveries',
      );
    const mine = ctx.subscriptionsOf.get(who!.id) ?? 0;
    if (stats.subscriptions >= limits.maxSubscriptions || mine >= limits.maxSubscriptionsPerPrincipal) {
      stats.refused.maxSubscriptions++;
      throw new QueueFullError(
        stats.subscriptions >= limits.maxSubscriptions
          ? `the gateway serves ${limits.maxSubscriptions} subscriptions at most`
          : `a principal may hold ${limits.maxSubscriptionsPerPrincipal} subscriptions at most`,
      );
    }
    counted = true;
    stats.subscriptions++;
    ctx.subscriptionsOf.set(who!.id, mine + 1);
    if (s.resumeAfterId !== undefined) {
      if (!bus.transport.capabilities.replay)
        throw new UnsupportedError(`transport ${bus.transport.name} keeps no history to resume from`);
      held = [];
    }
    const u = bus.subscribe(patterns, (event) => deliver(event, group !== undefined), {
      ...(group === undefined ? {} : { group }),
      ...(s.minPriority === undefined ? {} : { minPriority: s.minPriority as EventPriority }),
      maxConcurrency: group === undefined ? 1 : 16,
      retryAttempts: group === undefined ? 0 : 5,
    });
    unsubscribe = u;
    await u.ready;
    if (ended) return;
    call.write({ subscribed: u.id });
    if (s.resumeAfterId !== undefined) await resume(s.resumeAfterId, patterns, s.minPriority);
  };

  /** History after `afterId`, then the live events held meanwhile, each once. */
  const resume = async (afterId: string, patterns: string[], minPriority: number | undefined) => {
    const recent = await bus.getRecentEvents({ limit: limits.resumeScanLimit });
    const at = recent.findIndex((e) => e.id === afterId);
    if (at < 0)
      throw new NotFoundError(
        `event ${JSON.stringify(afterId)} is not among the last ${limits.resumeScanLimit} events; read History and subscribe without resumeAfterId`,
        { details: { field: 'start.resumeAfterId' } },
      );
    const matchers = patterns.map((p) => compilePattern(p));
    for (const e of recent.slice(at + 1)) {
      if (ended) return;
      if (!matchers.some((m) => m.matches(e.type))) continue;
      if (minPriority !== undefined && e.priority > minPriority) continue;
      const wire = toWireEvent(e);
      sent.add(e.id);
      stats.delivered++;
      write({ event: { event: wire, replayed: true } }, sizeOf(wire));
    }
    const live = held ?? [];
    held = null;
    for (const e of live) if (!ended) deliver(e, false);
    sent.clear();
  };

  const onMessage = (m: SubscribeRequest | Malformed) => {
    if (ended) return;
    try {
      if (m instanceof Malformed) throw new ValidationError('request', m.message);
      if (m.kind === 'start' && m.start) {
        if (started) throw new ValidationError('start', 'this stream already has its subscription');
        started = true;
        clearTimeout(startTimer);
        void ctx
          .rateCheck(call.getPeer(), who!)
          .then(() => start(m.start!))
          .catch((err) => {
            ctx.count(err);
            finish(err);
          });
        return;
      }
      if (m.kind === 'ack' || m.kind === 'nack') {
        const id = m.kind === 'ack' ? m.ack : m.nack;
        const p = id === undefined ? undefined : pending.get(id);
        if (!p) throw new ValidationError(m.kind, 'unknown or already settled delivery');
        pending.delete(id!);
        clearTimeout(p.timer);
        if (m.kind === 'ack') p.resolve();
        else p.reject(new EventBusError('HANDLER', 'the client nacked the delivery'));
        return;
      }
      throw new ValidationError('kind', 'send start, then ack or nack');
    } catch (err) {
      ctx.count(err);
      if (!started) return finish(err);
      call.write({ error: toWireError(err) });
    }
  };

  ctx.authenticate(call.metadata).then(
    (p) => {
      if (ended) return;
      who = p;
      if (p.expiresAt > 0)
        cancelExpiry = scheduleExpiry(p.expiresAt, () => {
          stats.refused.unauthenticated++;
          finish(new UnauthorizedError('token expired'));
        });
      call.on('data', onMessage);
    },
    (err) => {
      ctx.count(err);
      finish(err);
    },
  );
}
