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
import { send } from './command.js';
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

/**
 * Redis pub/sub transport: at-most-once, lowest latency, nothing persisted.
 * Same API and patterns as the streams transport; no groups, no history, no
 * dead-letter store (the bus still emits `deadLetter`). Every node's
 * subscriber connection receives every event on `<prefix>:ps` and the bus
 * filters. An event arriving while the bus's queue is full, or while its
 * consumer is paused, is dropped and counted (`dropped`), never buffered
 * without bound.
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
  readonly counters = { published: 0, delivered: 0, dropped: 0, decodeErrors: 0 };

  constructor(options: RedisTransportOptions = {}) {
    this.options = resolveOptions(options);
    this.serializer = createSerializer(this.options.serialization);
    this.channel = `${this.options.keyPrefix}:ps`;
  }

  async connect(context: TransportContext): Promise<void> {
    if (this.closed) throw new ClosedError('this redis pub/sub transport was closed; create a new one');
    this.logger = context.logger;
    const pub = createClient(this.options);
    const sub = createClient(this.options);
    for (const c of [pub, sub])
      c.on('error', (err: Error) =>
        context.onError(new TransportError(`redis: ${err.message}`, { cause: err })),
      );
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      await sub.subscribe(this.channel);
    } catch (err) {
      pub.disconnect();
      sub.disconnect();
      throw new TransportError(`cannot connect to Redis: ${(err as Error).message}`, { cause: err });
    }
    sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.onMessage(message));
    this.pub = pub;
    this.sub = sub;
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
    return !this.closed && this.pub?.status === 'ready' && this.sub?.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // publishes of this tick still go out: QUIT below is answered after them
    if (this.waiting.length > 0) this.flushPublishes();
    this.closed = true;
    this.consumers = [];
    await Promise.all(
      [this.pub, this.sub].map((c) => (c ? c.quit().catch(() => c.disconnect()) : undefined)),
    );
    this.pub = this.sub = null;
  }

  /** Publishes waiting for this tick's write: one corked write per tick, like the streams transport's flush. */
  private waiting: { messages: Buffer[]; resolve: () => void; reject: (e: Error) => void }[] = [];
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
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ messages, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(() => this.flushPublishes());
      }
    });
  }

  /**
   * One PUBLISH per event, as LeanCommands (see command.ts), all of this tick's
   * publishes in one corked write; each publish settles when its replies came.
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
    const stream = pub instanceof Redis ? pub.stream : undefined;
    stream?.cork();
    try {
      for (const p of batch) {
        const sent = p.messages.map((m) => send(pub, 'publish', [this.channel, m], this.channel));
        Promise.all(sent).then(
          () => {
            this.counters.published += p.messages.length;
            p.resolve();
          },
          (err: Error) =>
            p.reject(new TransportError(`redis rejected a publish: ${err.message}`, { cause: err })),
        );
      }
    } finally {
      if (stream) process.nextTick(() => stream.uncork());
    }
  }

  async consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
    if (!this.sub || this.closed) throw new NotConnectedError('redis pub/sub transport is not connected');
    if (spec.group !== null)
      throw new UnsupportedError(
        'redis pub/sub has no consumer groups; use the streams transport for groups',
      );
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
    return {
      status: this.isConnected() ? (reasons.length ? 'degraded' : 'healthy') : 'unhealthy',
      connected: this.isConnected(),
      latencyMs: performance.now() - started,
      reasons,
    };
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      acked: this.counters.delivered,
      redelivered: 0,
      deadLettered: 0,
      connections: this.isConnected() ? 2 : 0,
    };
  }
}
