import {
  type AgentEvent,
  ClosedError,
  type ConsumerSpec,
  createSerializer,
  type DeadLetterInfo,
  type Delivery,
  type DeliverySink,
  epochNow,
  type Logger,
  NotConnectedError,
  noopLogger,
  type Serializer,
  TimeoutError,
  type Transport,
  type TransportCapabilities,
  type TransportConsumer,
  type TransportContext,
  TransportError,
  type TransportHealth,
  type TransportStats,
  UnsupportedError,
} from '@qe/core';
import { type Cluster, Redis } from 'ioredis';
import { dispatch, LeanCommand } from './command.js';
import { type RedisTransportOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { createClient } from './RedisStreamsTransport.js';

const CAPABILITIES: TransportCapabilities = Object.freeze({
  durable: false,
  groups: false,
  ordering: true,
  replay: false,
  priorities: true,
  deadLetters: false,
  crossProcess: true,
});

class PubSubDelivery implements Delivery {
  constructor(
    readonly event: AgentEvent,
    readonly publishedAt: number,
  ) {}
  readonly attempt = 1;
  ack(): void {}
  /** At-most-once: a handed-back event is dropped. */
  nack(): void {}
  async deadLetter(_info: DeadLetterInfo): Promise<void> {}
}

class PubSubConsumer implements TransportConsumer {
  paused = false;
  closed = false;
  /** Messages published before the consumer existed may still be in flight; they are not its business. */
  readonly since = epochNow();
  constructor(
    readonly spec: ConsumerSpec,
    readonly sink: DeliverySink,
    private readonly owner: RedisPubSubTransport,
  ) {}
  get id(): string {
    return this.spec.id;
  }
  setPatterns(): void {}
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  async close(): Promise<void> {
    this.closed = true;
    this.owner.forget(this);
  }
}

/** How long after a subscriber gap healthCheck() stays degraded, reporting it. */
export const GAP_REPORT_MS = 60_000;

/** A time window in which the subscriber connection was down: events published in it were lost here. */
export interface SubscriberGap {
  /** Epoch ms the connection was found lost. */
  readonly from: number;
  /** Epoch ms the channel was subscribed again. */
  readonly to: number;
  readonly ms: number;
}

/**
 * Redis pub/sub transport: at-most-once, lowest latency, nothing persisted.
 * Same API and patterns as the streams transport; no groups, no history, no
 * dead-letter store (the bus still emits `deadLetter`). A node subscribes to
 * `<prefix>:ps` only while it has a consumer (a bus that only publishes reads
 * nothing back); its subscriber connection receives every event and the bus
 * filters. An event arriving while the bus's queue is full, or while its
 * consumer is paused, is dropped and counted (`dropped`), never buffered
 * without bound. When the subscriber connection drops, what was published
 * until it is back is lost: the gap is counted (`reconnects`, `gapMs`,
 * `lastGap`) and `healthCheck()` is degraded, naming the window, for
 * `GAP_REPORT_MS` after it.
 */
export class RedisPubSubTransport implements Transport {
  readonly name = 'redis-pubsub';
  readonly capabilities = CAPABILITIES;
  readonly options: ResolvedOptions;
  readonly serializer: Serializer;
  private readonly channel: string;
  private pub: Redis | Cluster | null = null;
  private sub: Redis | Cluster | null = null;
  private consumers: PubSubConsumer[] = [];
  private closed = false;
  private logger: Logger = noopLogger;
  private context: TransportContext | null = null;
  /** SUBSCRIBE under way or done (null: not subscribed). */
  private subscribed: Promise<void> | null = null;
  /** Epoch ms the subscriber connection was lost, while it is down. */
  private gapFrom: number | null = null;
  private lastGap: SubscriberGap | null = null;
  readonly counters = {
    published: 0,
    delivered: 0,
    dropped: 0,
    decodeErrors: 0,
    /** Times the subscriber connection came back after dropping. */
    reconnects: 0,
    /** Total ms the subscriber connection was down while subscribed. */
    gapMs: 0,
    /** Events this node published while its own subscriber was down (lost to its consumers). */
    publishedDuringGap: 0,
    /** Events whose publish passed `publishTimeoutMs`. */
    publishTimeouts: 0,
  };

  constructor(options: RedisTransportOptions = {}) {
    this.options = resolveOptions(options);
    this.serializer = createSerializer(this.options.serialization);
    this.channel = `${this.options.keyPrefix}:ps`;
  }

  async connect(context: TransportContext): Promise<void> {
    if (this.closed) throw new ClosedError('this redis pub/sub transport was closed; create a new one');
    if (this.pub) return;
    this.logger = context.logger;
    this.context = context;
    const pub = createClient(this.options);
    pub.on('error', (err: Error) =>
      context.onError(new TransportError(`redis: ${err.message}`, { cause: err })),
    );
    try {
      await pub.connect();
    } catch (err) {
      pub.disconnect();
      throw new TransportError(`cannot connect to Redis: ${(err as Error).message}`, { cause: err });
    }
    this.pub = pub;
  }

  /** Subscribes to the channel (the first consumer does; a bus that only publishes never does). */
  private subscribe(): Promise<void> {
    if (this.subscribed) return this.subscribed;
    const context = this.context!;
    let sub = this.sub;
    if (!sub) {
      const c = createClient(this.options);
      sub = this.sub = c;
      c.on('error', (err: Error) =>
        context.onError(new TransportError(`redis: ${err.message}`, { cause: err })),
      );
      c.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.onMessage(message));
      c.on('close', () => this.onSubscriberLost());
      c.on('ready', () => this.onSubscriberReady(c));
    }
    const s = sub;
    const p = (s.status === 'wait' ? s.connect() : Promise.resolve())
      .then(() => s.subscribe(this.channel))
      .then(
        () => {},
        (err: Error) => {
          if (this.subscribed === p) {
            this.subscribed = null;
            this.gapFrom = null; // never subscribed: nothing was missed
          }
          throw new TransportError(`cannot subscribe to ${this.channel}: ${err.message}`, { cause: err });
        },
      );
    this.subscribed = p;
    return p;
  }

  /** The subscriber connection dropped while subscribed: a gap opens (events published now are lost here). */
  private onSubscriberLost(): void {
    if (this.closed || this.subscribed === null || this.gapFrom !== null) return;
    this.gapFrom = Date.now();
    this.logger.warn(
      'redis pub/sub: subscriber connection lost; events published until it is back are lost',
      {
        channel: this.channel,
      },
    );
  }

  /** Connected again: subscribe (idempotent beside ioredis's own resubscribe), then close the gap. */
  private onSubscriberReady(c: Redis | Cluster): void {
    const from = this.gapFrom;
    if (from === null || this.closed) return;
    c.subscribe(this.channel).then(
      () => {
        if (this.gapFrom !== from) return;
        const to = Date.now();
        this.gapFrom = null;
        this.lastGap = { from, to, ms: to - from };
        this.counters.reconnects++;
        this.counters.gapMs += to - from;
        this.logger.warn('redis pub/sub: subscriber back; events published in the gap were lost', {
          channel: this.channel,
          from: new Date(from).toISOString(),
          to: new Date(to).toISOString(),
          ms: to - from,
        });
      },
      (err: Error) => this.context?.onError(new TransportError(`redis: ${err.message}`, { cause: err })),
    );
  }

  private onMessage(message: Buffer): void {
    // every node receives every message; one with no consumer (a publisher) does not decode it
    if (message.length < 8 || this.consumers.length === 0) return;
    const publishedAt = message.readDoubleBE(0);
    let event: AgentEvent;
    try {
      event = this.serializer.decode(message.subarray(8));
    } catch (err) {
      this.counters.decodeErrors++;
      this.logger.warn('undecodable pub/sub message', { error: (err as Error).message });
      return;
    }
    for (const c of this.consumers) {
      if (c.closed || publishedAt < c.since) continue;
      if (c.paused || (c.sink.capacity() <= 0 && !c.sink.sheds(event.priority))) {
        this.counters.dropped++;
        continue;
      }
      this.counters.delivered++;
      c.sink.deliver(new PubSubDelivery(event, publishedAt));
    }
  }

  isConnected(): boolean {
    return (
      !this.closed &&
      this.pub?.status === 'ready' &&
      (this.subscribed === null || this.sub?.status === 'ready')
    );
  }

  /** Quits (after this tick's publishes); returns within `timeoutMs` (default `closeTimeoutMs`), dropping the connections then. */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    // publishes of this tick still go out: QUIT below is answered after them
    if (this.waiting.length > 0) this.flushPublishes();
    this.closed = true;
    this.consumers = [];
    const clients = [this.pub, this.sub].filter((c): c is Redis | Cluster => c !== null);
    this.pub = this.sub = null;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(clients.map((c) => c.quit().catch(() => {}))),
      new Promise<void>((r) => {
        timer = setTimeout(r, Math.max(0, options.timeoutMs ?? this.options.closeTimeoutMs));
      }),
    ]);
    clearTimeout(timer);
    for (const c of clients) c.disconnect();
  }

  /** Publishes waiting for this tick's write: one corked write per tick, like the streams transport's flush. */
  private waiting: {
    messages: Buffer[];
    resolve: () => void;
    reject: (e: Error) => void;
    cmds: LeanCommand[];
    done: boolean;
  }[] = [];
  private flushScheduled = false;

  publish(events: readonly AgentEvent[]): Promise<void> {
    if (!this.pub || this.closed)
      return Promise.reject(new NotConnectedError('redis pub/sub transport is not connected'));
    const head = Buffer.allocUnsafe(8);
    head.writeDoubleBE(epochNow(), 0);
    let messages: Buffer[];
    try {
      messages = events.map((e) => Buffer.concat([head, this.serializer.encode(e)]));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.gapFrom !== null) this.counters.publishedDuringGap += events.length;
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ messages, resolve, reject, cmds: [], done: false });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(() => this.flushPublishes());
      }
    });
  }

  /**
   * One PUBLISH per event, as LeanCommands (see command.ts), all of this tick's
   * publishes in one corked write; each publish settles when its replies came,
   * or rejects with `TIMEOUT` after `publishTimeoutMs` (PUBLISHes not sent by
   * then never are).
   */
  private flushPublishes(): void {
    this.flushScheduled = false;
    const batch = this.waiting;
    this.waiting = [];
    const pub = this.pub;
    if (!pub || this.closed) {
      for (const p of batch) p.reject(new NotConnectedError('redis pub/sub transport is not connected'));
      return;
    }
    // publishes of this batch not settled yet; the deadline timer goes when none is left
    let left = batch.length;
    const ms = this.options.publishTimeoutMs;
    const timer = setTimeout(() => {
      for (const p of batch) {
        if (p.done) continue;
        p.done = true;
        const err = new TimeoutError(`publish not confirmed by Redis within ${ms} ms`);
        let unseen = true;
        for (const cmd of p.cmds) if (!cmd.isResolved && !cmd.cancel(err)) unseen = false;
        this.counters.publishTimeouts += p.messages.length;
        p.reject(
          new TimeoutError(`publish of ${p.messages.length} events not confirmed by Redis within ${ms} ms`, {
            details: { stored: unseen ? 'none' : 'unknown', events: p.messages.length, timeoutMs: ms },
          }),
        );
      }
    }, ms);
    const stream = pub instanceof Redis ? pub.stream : undefined;
    stream?.cork();
    try {
      for (const p of batch) {
        const sent = p.messages.map((m) => {
          const cmd = new LeanCommand('publish', [this.channel, m], this.channel, false);
          p.cmds.push(cmd);
          return dispatch(pub, cmd);
        });
        Promise.all(sent).then(
          () => {
            if (p.done) return;
            p.done = true;
            if (--left === 0) clearTimeout(timer);
            this.counters.published += p.messages.length;
            p.resolve();
          },
          (err: Error) => {
            if (p.done) return;
            p.done = true;
            if (--left === 0) clearTimeout(timer);
            p.reject(new TransportError(`redis rejected a publish: ${err.message}`, { cause: err }));
          },
        );
      }
    } finally {
      if (stream) process.nextTick(() => stream.uncork());
    }
  }

  async consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
    if (!this.pub || this.closed) throw new NotConnectedError('redis pub/sub transport is not connected');
    if (spec.group !== null)
      throw new UnsupportedError(
        'redis pub/sub has no consumer groups; use the streams transport for groups',
      );
    await this.subscribe();
    if (this.closed) throw new NotConnectedError('redis pub/sub transport is not connected');
    const c = new PubSubConsumer(spec, sink, this);
    this.consumers = [...this.consumers, c];
    return c;
  }

  forget(c: PubSubConsumer): void {
    this.consumers = this.consumers.filter((x) => x !== c);
  }

  async healthCheck(): Promise<TransportHealth> {
    if (!this.pub || this.closed)
      return { status: 'unhealthy', connected: false, reasons: ['not connected'] };
    const started = performance.now();
    try {
      await this.pub.ping();
    } catch (err) {
      return {
        status: 'unhealthy',
        connected: false,
        reasons: [`redis unreachable: ${(err as Error).message}`],
      };
    }
    const reasons =
      this.counters.dropped > 0 ? [`${this.counters.dropped} events dropped (at-most-once)`] : [];
    const now = Date.now();
    if (this.gapFrom !== null)
      reasons.push(
        `subscriber connection down since ${new Date(this.gapFrom).toISOString()} (${now - this.gapFrom} ms): events published meanwhile are lost (at-most-once)`,
      );
    const gap = this.lastGap;
    if (gap && now - gap.to < GAP_REPORT_MS)
      reasons.push(
        `subscriber connection was down from ${new Date(gap.from).toISOString()} to ${new Date(gap.to).toISOString()} (${gap.ms} ms): events published in that window were lost (at-most-once); ${this.counters.reconnects} reconnects so far`,
      );
    return {
      status: this.isConnected() ? (reasons.length ? 'degraded' : 'healthy') : 'unhealthy',
      connected: this.isConnected(),
      latencyMs: performance.now() - started,
      reasons,
      details: {
        subscribed: this.subscribed !== null,
        reconnects: this.counters.reconnects,
        gapMs: this.counters.gapMs,
        lastGap: gap,
        ...(this.gapFrom === null ? {} : { downSince: this.gapFrom }),
      },
    };
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      acked: this.counters.delivered,
      redelivered: 0,
      deadLettered: 0,
      lastGap: this.lastGap,
      connections: this.isConnected() ? (this.subscribed === null ? 1 : 2) : 0,
    };
  }
}
