import { EventEmitter } from 'node:events';
import { epochNow, toEpoch } from './clock.js';
import { assertKnownKeys, checkBooleanSetting } from './config.js';
import {
  ClosedError,
  ConfigError,
  EventBusError,
  HandlerError,
  NotConnectedError,
  PermanentError,
  RetryLaterError,
  TimeoutError,
  TransportError,
  toError,
  UnsupportedError,
  ValidationError,
} from './errors.js';
import {
  type AgentEvent,
  type AnyEventMap,
  type EventFor,
  type EventInput,
  type EventInputFor,
  type EventMap,
  type EventMetadata,
  EventPriority,
  PRIORITY_NAMES,
} from './event.js';
import { LatencyHistogram, WindowedHistogram } from './histogram.js';
import { LevelQueue } from './level-queue.js';
import { type Logger, noopLogger } from './logger.js';
import { MemoryTransport } from './memory-transport.js';
import {
  type BatchConsumeContext,
  type BatchConsumeFn,
  type ConsumeContext,
  type ConsumeFn,
  composeConsume,
  composeConsumeBatch,
  composePublish,
  type Middleware,
  type MiddlewareHost,
  type PublishContext,
  type PublishFn,
} from './middleware.js';
import { PatternIndex, validatePattern } from './pattern.js';
import { SlotList } from './slot-list.js';
import type {
  DeadLetterInfo,
  DeadLetterStore,
  Delivery,
  DeliverySink,
  HealthStatus,
  HistoryQuery,
  PublishOptions,
  ReplayQuery,
  StartFrom,
  Transport,
  TransportConsumer,
  TransportHealth,
  TransportStats,
} from './transport.js';
import { bindingIdentity, carriedAttempt, REDRIVE_BINDING_KEY, REDRIVE_TARGET_KEY } from './transport.js';
import { normalizeBatch, normalizeEvent } from './validate.js';

/** Spec 000's metrics shape, exactly. Latencies in ms, publish to handler start. */
export interface PerformanceMetrics {
  eventsProcessed: number;
  eventsPerSecond: number;
  averageLatency: number;
  maxLatency: number;
  minLatency: number;
  p95Latency: number;
  p99Latency: number;
  errorCount: number;
  errorRate: number;
  queueSize: number;
  memoryUsage: number;
  activeConnections: number;
  throughput: number;
  timestamp: number;
}

export interface HandlerStats {
  id: string;
  patterns: readonly string[];
  group: string | null;
  paused: boolean;
  processed: number;
  failed: number;
  retried: number;
  deadLettered: number;
  inFlight: number;
  queued: number;
  /** Handler duration; every asynchronous call is timed, synchronous ones 1 in 16 (clock reads cost). */
  averageDurationMs: number;
  p99DurationMs: number;
}

export interface DetailedMetrics extends PerformanceMetrics {
  queueSizes: Record<(typeof PRIORITY_NAMES)[number], number>;
  inFlight: number;
  published: number;
  publishErrors: number;
  delivered: number;
  retried: number;
  /** Retries handed to the transport's durable `scheduleRetry` (nothing held in memory for them). */
  durableRetries: number;
  /** Retries waiting in a timer of this bus right now (lost if the process dies). */
  retryTimers: number;
  deadLettered: number;
  shed: number;
  shedByPriority: Record<(typeof PRIORITY_NAMES)[number], number>;
  latency: { p50: number; p90: number; p99: number; p999: number; count: number };
  handlerStats: HandlerStats[];
  transport: TransportStats;
}

export interface SubscriberStats {
  active: number;
  paused: number;
  eventsPerSecond: number;
  errorsPerMinute: number;
  subscribers: HandlerStats[];
}

export interface BusHealth {
  status: HealthStatus;
  nodeId: string;
  connected: boolean;
  reasons: string[];
  uptimeMs: number;
  queue: { size: number; max: number };
  transport: TransportHealth;
}

export interface BackpressureConfig {
  /** Deliveries accepted and not yet settled, per bus. Default 10,000. */
  maxQueueSize?: number;
  /** When a consumer's queue is full, `publish` waits for room (default) or fails with `QUEUE_FULL`. */
  onFull?: 'wait' | 'fail';
  /**
   * Load shedding, off unless set: while this bus's queue is full, arriving
   * events with priority at or below this level (numerically >=) are dropped
   * and counted instead of waiting. E.g. `EventPriority.LOW` sheds LOW and BULK.
   */
  shedPriority?: EventPriority;
}

/**
 * Spec 000's load-balancer setting. The bus does not read it (a `loadBalancer`
 * key on `QEEventBusConfig` is a `CONFIG` error); `@qe/router`'s
 * `strategyFromConfig(config)` turns it into a strategy for `RoutedTransport`
 * or `MemoryBroker`.
 */
export interface LoadBalancerConfig {
  strategy: 'round_robin' | 'least_connections' | 'weighted' | 'hash_based';
  weights?: Map<string, number>;
  healthCheckInterval?: number;
  maxConnections?: number;
}

export interface QEEventBusConfig {
  /** Unique, stable id of this node (durable consumer names derive from it). */
  nodeId: string;
  /** Default: a `MemoryTransport` with a private broker. */
  transport?: Transport;
  /** Bus-wide middleware, first = outermost. */
  middleware?: Middleware[];
  /** Default retries per handler after the first call. Default 3. */
  retryAttempts?: number;
  /** Base backoff (ms), doubled per attempt, with full jitter. Default 1000. */
  retryDelay?: number;
  /** Backoff cap (ms). Default 30,000. */
  maxRetryDelay?: number;
  /**
   * Retries postponed at least this long (the bus's own backoff, or a
   * middleware's `RetryLaterError`) are handed to the transport's durable
   * `scheduleRetry` where it has one (Redis Streams), instead of a timer in
   * this process that a crash would lose. Shorter ones, and every retry on a
   * transport without `scheduleRetry` (memory), wait in a timer. Batch and
   * `once` subscriptions always use a timer. Default 1,000 ms.
   */
  durableRetryAboveMs?: number;
  /** Default per-subscription concurrency. Default 1 (per-subscription order holds end to end). */
  defaultMaxConcurrency?: number;
  backpressure?: BackpressureConfig;
  /** Time `stop()` waits for in-flight handlers. Default 10,000 ms. */
  shutdownTimeoutMs?: number;
  /** Shallow-freeze published events. Default: true unless NODE_ENV is `production`. */
  freezeEvents?: boolean;
  /** Set `metadata.source` to the node id on publish when absent (costs a copy per event). Default false. */
  stampSource?: boolean;
  logger?: Logger;
}

/**
 * The settings `new QEEventBus(...)` reads; any other key is a `CONFIG` error
 * naming it. Spec 000's keys that belong to other packages say which.
 */
export const BUS_CONFIG_KEYS = [
  'nodeId',
  'transport',
  'middleware',
  'retryAttempts',
  'retryDelay',
  'maxRetryDelay',
  'durableRetryAboveMs',
  'defaultMaxConcurrency',
  'backpressure',
  'shutdownTimeoutMs',
  'freezeEvents',
  'stampSource',
  'logger',
] as const satisfies readonly (keyof QEEventBusConfig)[];

/** Where spec 000's bus settings live in this project. */
const SPEC_000_KEYS: Readonly<Record<string, string>> = {
  redis:
    'Redis comes from @qe/redis-transport: new QEEventBus({ transport: new RedisStreamsTransport({ url, keyPrefix }) })',
  loadBalancer:
    'the bus does not balance groups itself (in one process a group is served round-robin); load-balancing strategies come from @qe/router: new RoutedTransport({ inner, redis, strategy: strategyFromConfig(loadBalancer) }), or new MemoryBroker({ balancer }) in one process',
  protocols: 'the WebSocket and HTTP endpoints come from @qe/gateway-ws and @qe/gateway-http',
  performance: 'tune backpressure.maxQueueSize and defaultMaxConcurrency',
  logging: 'pass a Logger as logger',
  circuitBreaker: 'use createCircuitBreaker from @qe/reliability as middleware',
  rateLimiting: 'use createRateLimiter from @qe/reliability as middleware',
  validation: 'every event is validated by @qe/core; there is nothing to turn on',
  authentication: 'authentication comes from @qe/gateway-auth',
};

const SUBSCRIPTION_KEYS = [
  'group',
  'filter',
  'once',
  'minPriority',
  'priority',
  'timeout',
  'retryAttempts',
  'retryDelay',
  'maxRetryDelay',
  'maxConcurrency',
  'middleware',
  'startFrom',
] as const satisfies readonly (keyof SubscriptionOptions)[];
const BATCH_SUBSCRIPTION_KEYS = [...SUBSCRIPTION_KEYS, 'batchSize', 'batchTimeoutMs'] as const;

/** Names other event buses (and the specs) use for our subscription options. */
const SUBSCRIPTION_HINTS: Readonly<Record<string, string>> = {
  concurrency: 'this bus calls it maxConcurrency',
  retries: 'this bus calls it retryAttempts',
  timeoutMs: 'this bus calls it timeout (ms per handler call)',
};

/** The options of `publish(type, data, options)` (spec 003's shape). */
export interface PublishShorthandOptions {
  /** The source agent; default the bus's `nodeId`. */
  agentId?: string;
  id?: string;
  priority?: EventPriority;
  swarmId?: string;
  metadata?: EventMetadata;
}
const PUBLISH_SHORTHAND_KEYS = ['agentId', 'id', 'priority', 'swarmId', 'metadata'] as const;

export interface SubscriptionOptions<E = AgentEvent> {
  /** Compete with every subscription of the same group name and patterns, on every bus. */
  group?: string;
  /** Only events for which this returns true (a throwing filter counts as false and as an error). */
  filter?: (event: E) => boolean;
  /** Remove the subscription after its first event. */
  once?: boolean;
  /** Only events at least this urgent (`event.priority <= minPriority`). */
  minPriority?: EventPriority;
  /** Schedule this handler's calls at least this urgently. */
  priority?: EventPriority;
  /** Per-call timeout (ms); a call that takes longer fails with `TIMEOUT` (and is retried). */
  timeout?: number;
  retryAttempts?: number;
  retryDelay?: number;
  maxRetryDelay?: number;
  /** Handler calls in flight at once. Default: the bus's `defaultMaxConcurrency` (1). */
  maxConcurrency?: number;
  /** Middleware for this subscription only, inside the bus-wide middleware. */
  middleware?: Middleware[];
  /** Where a new durable binding starts. Default `new`. */
  startFrom?: StartFrom;
}

export interface BatchSubscriptionOptions<E = AgentEvent> extends SubscriptionOptions<E> {
  /** Deliver when this many events are waiting. Default 100. */
  batchSize?: number;
  /** ...or when the oldest waiting event is this old (ms). Default 1000. */
  batchTimeoutMs?: number;
}

export type EventHandler<E = AgentEvent> = (event: E, context: ConsumeContext) => unknown;
export type BatchEventHandler<E = AgentEvent> = (events: E[], context: BatchConsumeContext) => unknown;

/** Returned by `subscribe`: call it to unsubscribe. */
export interface Unsubscribe {
  (): boolean;
  /** The subscription id (for `unsubscribe`, `pause`, `resume`). */
  readonly id: string;
  /** Resolves when the transport binding is live (events published from now on reach it). */
  readonly ready: Promise<void>;
}

type State = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

/** An in-memory retry's timer, kept in the bus's SlotList until it fires or stop() clears it. */
interface RetryTimer {
  timer: NodeJS.Timeout;
  slot: number;
}

interface Share {
  remaining: number;
  nack: boolean;
}

class Subscription {
  inFlight = 0;
  paused = false;
  closed = false;
  detached = false;
  onceFired = false;
  parked: LevelQueue<Task> | null = null;
  ready = false;
  processed = 0;
  failed = 0;
  retried = 0;
  deadLettered = 0;
  readonly durations = new LatencyHistogram();
  fn: ConsumeFn | null = null;
  batchFn: BatchConsumeFn | null = null;
  batch: { size: number; timeoutMs: number; buf: Task[]; timer: NodeJS.Timeout | null } | null = null;

  constructor(
    readonly seq: number,
    readonly id: string,
    readonly patterns: readonly string[],
    readonly group: string | null,
    readonly bindingKey: string,
    readonly handler: EventHandler | BatchEventHandler,
    readonly middleware: readonly Middleware[],
    readonly filter: ((event: AgentEvent) => boolean) | undefined,
    readonly once: boolean,
    readonly minPriority: EventPriority | undefined,
    readonly priority: EventPriority | undefined,
    readonly timeout: number | undefined,
    readonly maxAttempts: number,
    readonly retryDelay: number,
    readonly maxRetryDelay: number,
    readonly maxConcurrency: number,
  ) {}

  queued(): number {
    return (this.parked?.size ?? 0) + (this.batch?.buf.length ?? 0);
  }

  stats(): HandlerStats {
    const d = this.durations;
    return {
      id: this.id,
      patterns: this.patterns,
      group: this.group,
      paused: this.paused,
      processed: this.processed,
      failed: this.failed,
      retried: this.retried,
      deadLettered: this.deadLettered,
      inFlight: this.inFlight,
      queued: this.queued(),
      averageDurationMs: d.count === 0 ? 0 : d.sumUs / d.count / 1000,
      p99DurationMs: d.quantileMs(0.99),
    };
  }
}

/** One pending handler call. Doubles as the handler's `ConsumeContext`. */
class Task implements ConsumeContext {
  startedAt = 0;
  constructor(
    readonly sub: Subscription,
    readonly delivery: Delivery,
    readonly share: Share | null,
    public attempt: number,
    readonly level: EventPriority,
    readonly nodeId: string,
  ) {}
  get subscriptionId(): string {
    return this.sub.id;
  }
  get patterns(): readonly string[] {
    return this.sub.patterns;
  }
  get group(): string | null {
    return this.sub.group;
  }
  get maxAttempts(): number {
    return this.sub.maxAttempts;
  }
  get exclusive(): boolean {
    return this.share === null;
  }
}

interface Binding {
  key: string;
  /** `bindingIdentity`: how dead letters and redrives name this binding. */
  identity: string;
  group: string | null;
  subs: Subscription[];
  consumer: TransportConsumer | null;
  opening: Promise<void> | null;
  sink: DeliverySink;
  rr: number;
  startFrom: StartFrom | undefined;
  /** A group's patterns (part of its key, so fixed); null for the broadcast binding. */
  matcher: PatternIndex<true> | null;
}

const SAMPLE_INTERVAL_MS = 1000;
/** Handler calls dispatched in microtasks before the bus lets the event loop turn. */
const YIELD_EVERY = 1024;
const HISTOGRAM_ROTATE_TICKS = 10; // 6 slots x 10 s = a 60 s latency window
const RATE_WINDOW_S = 5;

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return x !== null && typeof x === 'object' && typeof (x as { then?: unknown }).then === 'function';
}

/** A middleware attached to this bus, and by how many users (the bus itself, subscriptions). */
interface Attachment {
  users: number;
  detach: (() => void) | undefined;
}

function checkNonNegInt(field: string, v: unknown, allowZero = true): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1))
    throw new ValidationError(field, `must be an integer >= ${allowZero ? 0 : 1}`);
}

function checkPriority(field: string, v: unknown): void {
  if (v === undefined) return;
  if (v !== 0 && v !== 1 && v !== 2 && v !== 3 && v !== 4)
    throw new ValidationError(field, 'must be an EventPriority (0 CRITICAL .. 4 BULK)');
}

/**
 * The event bus: validates and publishes events through middleware to a
 * transport, and dispatches deliveries to subscriptions by weighted-fair
 * priority, with retries, dead letters, bounded queues and metrics.
 *
 * Guarantees (SEMANTICS.md): every broadcast subscription on every bus gets
 * every matching event; a group hands each event to one member; events of one
 * publisher and priority reach a subscription in publish order (with the
 * default `maxConcurrency: 1` they are also handled in that order); a more
 * urgent event overtakes queued less urgent ones, and no level starves. A
 * delivery is acknowledged to the transport only after every subscription it
 * reached has handled it or dead-lettered it.
 *
 * Emits `error` (only when someone listens, so an unhandled bus error never
 * crashes the process), `deadLetter`, `started`, `stopped`.
 */
/** A correlation id to look up history by: a non-empty string of at most 256 characters. */
function checkCorrelationId(id: unknown): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > 256)
    throw new ValidationError('correlationId', 'must be a non-empty string of at most 256 characters');
}

export class QEEventBus<M extends EventMap = AnyEventMap> extends EventEmitter {
  readonly nodeId: string;
  readonly transport: Transport;
  private readonly logger: Logger;
  private readonly middleware: Middleware[] = [];
  /** Every middleware attached to this bus (bus-wide or per subscription), attached once and detached by its last user. */
  private readonly attached = new Map<Middleware, Attachment>();
  /** Set by stop(), which detaches every middleware; a restart attaches them again. */
  private middlewareDetached = false;
  private publishChain!: PublishFn;
  private readonly publishOptions: PublishOptions;
  private readonly singleCtx: PublishContext;
  private readonly batchCtx: PublishContext;
  private state: State = 'idle';
  private startedAt = 0;

  private readonly retryAttempts: number;
  private readonly retryDelay: number;
  private readonly maxRetryDelay: number;
  private readonly durableRetryAboveMs: number;
  private readonly defaultMaxConcurrency: number;
  private readonly maxQueue: number;
  private readonly shedFrom: number;
  private readonly shutdownTimeoutMs: number;
  private readonly freeze: boolean;
  private readonly stampSource: boolean;

  private subSeq = 0;
  private readonly subs = new Map<string, Subscription>();
  private readonly bindings = new Map<string, Binding>();
  private readonly broadcastIndex = new PatternIndex<Subscription>((a, b) => a.seq - b.seq);

  private readonly queue = new LevelQueue<Task>();
  private readySubs: Subscription[] = [];
  private scheduled = false;
  private readonly drainFn = () => this.drain();
  private queued = 0;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  /** In-memory retry timers, for stop() to clear: a SlotList, not a Set (see slot-list.ts). */
  private readonly timers = new SlotList<RetryTimer>();

  // counters
  private published = 0;
  private publishErrors = 0;
  private delivered = 0;
  private processed = 0;
  private errors = 0;
  private retried = 0;
  private durableRetries = 0;
  private deadLettered = 0;
  private shed = 0;
  private readonly shedByPriority = [0, 0, 0, 0, 0];
  private readonly latency = new WindowedHistogram(6);
  private readonly samples: { t: number; processed: number; published: number; errors: number }[] = [];
  private sampler: NodeJS.Timeout | null = null;
  private ticks = 0;

  constructor(config: QEEventBusConfig) {
    super();
    if (config === null || typeof config !== 'object') throw new ConfigError('config', 'must be an object');
    assertKnownKeys(config, BUS_CONFIG_KEYS, '', SPEC_000_KEYS);
    if (typeof config.nodeId !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(config.nodeId))
      throw new ConfigError('nodeId', 'must be 1-128 characters of [A-Za-z0-9_.:-]');
    assertKnownKeys(config.backpressure, ['maxQueueSize', 'onFull', 'shedPriority'], 'backpressure.');
    if (config.middleware !== undefined && !Array.isArray(config.middleware))
      throw new ConfigError('middleware', 'must be an array of middleware');
    const t = config.transport as Partial<Transport> | undefined;
    if (t !== undefined && (t === null || typeof t.publish !== 'function' || typeof t.consume !== 'function'))
      throw new ConfigError('transport', 'must be a Transport (publish, consume, connect, close, ...)');
    const lg = config.logger as Partial<Logger> | undefined;
    if (lg !== undefined && (lg === null || typeof lg.error !== 'function' || typeof lg.info !== 'function'))
      throw new ConfigError('logger', 'must be a Logger (debug, info, warn, error)');
    checkBooleanSetting('freezeEvents', config.freezeEvents);
    checkBooleanSetting('stampSource', config.stampSource);
    checkNonNegInt('retryAttempts', config.retryAttempts);
    checkNonNegInt('retryDelay', config.retryDelay);
    checkNonNegInt('maxRetryDelay', config.maxRetryDelay);
    checkNonNegInt('durableRetryAboveMs', config.durableRetryAboveMs);
    checkNonNegInt('defaultMaxConcurrency', config.defaultMaxConcurrency, false);
    checkNonNegInt('backpressure.maxQueueSize', config.backpressure?.maxQueueSize, false);
    checkNonNegInt('shutdownTimeoutMs', config.shutdownTimeoutMs);
    checkPriority('backpressure.shedPriority', config.backpressure?.shedPriority);
    const onFull = config.backpressure?.onFull ?? 'wait';
    if (onFull !== 'wait' && onFull !== 'fail')
      throw new ConfigError('backpressure.onFull', `must be 'wait' or 'fail', got ${JSON.stringify(onFull)}`);
    this.nodeId = config.nodeId;
    this.transport = config.transport ?? new MemoryTransport();
    this.logger = config.logger ?? noopLogger;
    this.retryAttempts = config.retryAttempts ?? 3;
    this.retryDelay = config.retryDelay ?? 1000;
    this.maxRetryDelay = config.maxRetryDelay ?? 30_000;
    this.durableRetryAboveMs = config.durableRetryAboveMs ?? 1000;
    this.defaultMaxConcurrency = config.defaultMaxConcurrency ?? 1;
    this.maxQueue = config.backpressure?.maxQueueSize ?? 10_000;
    this.shedFrom = config.backpressure?.shedPriority ?? Number.POSITIVE_INFINITY;
    this.shutdownTimeoutMs = config.shutdownTimeoutMs ?? 10_000;
    this.freeze = config.freezeEvents ?? process.env.NODE_ENV !== 'production';
    this.stampSource = config.stampSource ?? false;
    this.publishOptions = { onFull };
    this.singleCtx = Object.freeze({ nodeId: this.nodeId, batch: false });
    this.batchCtx = Object.freeze({ nodeId: this.nodeId, batch: true });
    for (const m of config.middleware ?? []) this.addMiddleware(m);
    this.rebuildPublishChain();
  }

  // ---------------------------------------------------------------- middleware attachment

  private attachMiddleware(m: Middleware): void {
    const a = this.attached.get(m);
    if (a) {
      a.users++;
      return;
    }
    const detach = m.attach?.(this as unknown as MiddlewareHost);
    this.attached.set(m, { users: 1, detach: typeof detach === 'function' ? detach : undefined });
  }

  private releaseMiddleware(m: Middleware): void {
    const a = this.attached.get(m);
    if (!a || --a.users > 0) return;
    this.attached.delete(m);
    this.runDetach(m, a);
  }

  private runDetach(m: Middleware, a: Attachment): void {
    try {
      a.detach?.();
    } catch (err) {
      this.reportError(
        new EventBusError('CONFIG', `middleware ${m.name} failed to detach: ${toError(err).message}`, {
          cause: err,
        }),
      );
    }
  }

  /** stop(): every middleware is detached (a circuit breaker shuts its breakers down). */
  private detachAllMiddleware(): void {
    for (const [m, a] of this.attached) this.runDetach(m, a);
    this.attached.clear();
    this.middlewareDetached = true;
  }

  /** A restart after stop(): attach the bus's middleware and its subscriptions' again. */
  private reattachMiddleware(): void {
    if (!this.middlewareDetached) return;
    this.middlewareDetached = false;
    for (const m of this.middleware) this.attachMiddleware(m);
    for (const s of this.subs.values()) for (const m of s.middleware) this.attachMiddleware(m);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Connects the transport and opens consumers for subscriptions made so far. Idempotent. */
  async start(): Promise<void> {
    if (this.state === 'running') return;
    if (this.state === 'starting') throw new EventBusError('CONFIG', 'start() is already in progress');
    if (this.state === 'stopping') throw new ClosedError('the bus is stopping');
    this.state = 'starting';
    this.reattachMiddleware();
    try {
      await this.transport.connect({
        nodeId: this.nodeId,
        logger: this.logger,
        onError: (err) => this.reportError(err),
      });
    } catch (err) {
      this.state = 'idle';
      throw err instanceof EventBusError
        ? err
        : new TransportError(`cannot connect transport ${this.transport.name}: ${toError(err).message}`, {
            cause: err,
          });
    }
    this.state = 'running';
    this.startedAt = Date.now();
    this.samples.length = 0;
    this.sample();
    this.sampler = setInterval(() => this.tick(), SAMPLE_INTERVAL_MS);
    this.sampler.unref();
    await Promise.all([...this.bindings.values()].map((b) => this.openBinding(b)));
    this.logger.info('bus started', { nodeId: this.nodeId, transport: this.transport.name });
    this.emit('started');
  }

  /**
   * Stops taking new deliveries, waits for queued and in-flight handlers
   * (acking as they finish), then closes the transport, which flushes those
   * acks first. Returns within `shutdownTimeoutMs` whatever the transport does:
   * handlers get all of it but a slice (a quarter, at most 1 s) kept for the
   * transport's close. Deliveries not finished by then stay unacked: a durable
   * transport redelivers them. `leave: true` also removes this node's durable consumer
   * state (its broadcast consumer group) for good.
   */
  async stop(options: { leave?: boolean } = {}): Promise<void> {
    assertKnownKeys(options, ['leave'], '', {}, 'validation');
    if (options.leave !== undefined && typeof options.leave !== 'boolean')
      throw new ValidationError('leave', 'must be true or false');
    if (this.state !== 'running') {
      if (this.state === 'idle') this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    const leave = options.leave ?? false;
    // stop() returns within shutdownTimeoutMs whatever the transport does; a slice of it
    // is kept for the transport to flush the acks of the last handlers and close
    const deadline = Date.now() + this.shutdownTimeoutMs;
    const closeBy = deadline - Math.min(1000, Math.floor(this.shutdownTimeoutMs / 4));
    const closing = Promise.all(
      [...this.bindings.values()].map(async (b) => {
        await b.opening?.catch(() => {});
        const c = b.consumer;
        b.consumer = null;
        // groups are shared with other nodes: only a broadcast binding is this node's to remove
        if (c) await c.close({ leave: leave && b.group === null }).catch((e) => this.reportError(toError(e)));
      }),
    );
    let closeTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      closing,
      new Promise<void>((r) => {
        closeTimer = setTimeout(r, Math.max(0, closeBy - Date.now()));
      }),
    ]);
    clearTimeout(closeTimer);
    for (const s of this.subs.values()) if (s.batch && s.batch.buf.length > 0) this.flushBatch(s);
    const drained = await this.waitIdle(Math.max(0, closeBy - Date.now()));
    if (!drained)
      this.logger.warn('stop: handlers still running after shutdownTimeoutMs; leaving them unacked', {
        queued: this.queued,
        inFlight: this.inFlight,
      });
    for (const t of this.timers) clearTimeout(t.timer);
    this.timers.clear();
    if (this.sampler) clearInterval(this.sampler);
    this.sampler = null;
    for (const s of this.subs.values()) if (s.batch?.timer) clearTimeout(s.batch.timer);
    this.detachAllMiddleware();
    try {
      // a transport that does not honour timeoutMs (or wraps one that does not) is not waited for past it
      const timeoutMs = Math.max(0, deadline - Date.now());
      const closed = this.transport.close({ timeoutMs });
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = await Promise.race([
        closed.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), timeoutMs + 100);
        }),
      ]);
      clearTimeout(timer);
      if (gaveUp) {
        closed.catch((e) => this.reportError(toError(e)));
        this.logger.warn('stop: the transport did not close within shutdownTimeoutMs; not waiting for it', {
          transport: this.transport.name,
        });
      }
    } finally {
      this.state = 'stopped';
      for (const w of this.waiters.splice(0)) w();
      this.logger.info('bus stopped', { nodeId: this.nodeId });
      this.emit('stopped');
    }
  }

  isConnected(): boolean {
    return this.state === 'running' && this.transport.isConnected();
  }

  // ---------------------------------------------------------------- middleware

  /** Adds bus-wide middleware (outermost last-added-inside). Applies to existing subscriptions too. */
  use(middleware: Middleware): this {
    this.addMiddleware(middleware);
    this.rebuildPublishChain();
    for (const s of this.subs.values()) this.composeSub(s);
    return this;
  }

  private addMiddleware(m: Middleware): void {
    if (m === null || typeof m !== 'object' || typeof m.name !== 'string')
      throw new ValidationError('middleware', 'must be an object with a name');
    this.middleware.push(m);
    this.attachMiddleware(m);
  }

  private rebuildPublishChain(): void {
    const last: PublishFn = (events) => this.sendToTransport(events);
    this.publishChain = this.middleware.some((m) => m.publish) ? composePublish(this.middleware, last) : last;
  }

  private sendToTransport(events: readonly AgentEvent[]): Promise<void> {
    let p: Promise<void>;
    try {
      p = this.transport.publish(events, this.publishOptions);
    } catch (err) {
      return Promise.reject(this.wrapTransportError(err));
    }
    return p;
  }

  private wrapTransportError(err: unknown, what: 'publish' | 'subscribe' = 'publish'): EventBusError {
    if (err instanceof EventBusError) return err;
    return new TransportError(`transport ${this.transport.name} failed to ${what}: ${toError(err).message}`, {
      cause: err,
    });
  }

  // ---------------------------------------------------------------- publish

  /**
   * Validates, completes (id, timestamp, priority) and publishes one event.
   * Resolves with the published event once the transport accepted it. Throws
   * `ValidationError` naming the bad field before anything is sent.
   */
  /**
   * Spec 003's shape: `publish('user.created', data, options?)`. The event's
   * `agentId` is `options.agentId` or this bus's `nodeId`; `options` may also
   * give `priority`, `swarmId`, `id` and `metadata` (with `correlationId` etc.).
   */
  async publish<
    T extends Extract<keyof M, string> | (string extends Extract<keyof M, string> ? string : never),
  >(
    type: T,
    data: T extends keyof M ? M[T] : unknown,
    options?: PublishShorthandOptions,
  ): Promise<AgentEvent>;
  async publish(input: EventInputFor<M>): Promise<AgentEvent>;
  async publish(
    input: EventInputFor<M> | string,
    data?: unknown,
    options?: PublishShorthandOptions,
  ): Promise<AgentEvent> {
    if (this.state !== 'running') throw this.notRunning();
    const event = normalizeEvent(
      (typeof input === 'string' ? this.shorthand(input, data, options) : input) as EventInputFor<M>,
      this.stampSource ? this.nodeId : undefined,
    );
    if (this.freeze && !Object.isFrozen(event)) Object.freeze(event);
    this.published++;
    try {
      await this.publishChain([event], this.singleCtx);
    } catch (err) {
      this.published--;
      this.publishErrors++;
      this.errors++;
      throw this.wrapTransportError(err);
    }
    return event;
  }

  /** Publishes a batch: validated whole (all or nothing) and handed to the transport in one call. */
  async publishBatch(inputs: readonly EventInputFor<M>[]): Promise<AgentEvent[]> {
    if (this.state !== 'running') throw this.notRunning();
    const events = normalizeBatch(inputs, this.stampSource ? this.nodeId : undefined);
    if (events.length === 0) return events;
    if (this.freeze) for (const e of events) if (!Object.isFrozen(e)) Object.freeze(e);
    this.published += events.length;
    try {
      await this.publishChain(events, this.batchCtx);
    } catch (err) {
      this.published -= events.length;
      this.publishErrors += events.length;
      this.errors++;
      throw this.wrapTransportError(err);
    }
    return events;
  }

  /** The event of `publish(type, data, options)`; options are checked like every other. */
  private shorthand(type: string, data: unknown, options: PublishShorthandOptions | undefined): EventInput {
    assertKnownKeys(options, PUBLISH_SHORTHAND_KEYS, '', {}, 'validation');
    const o = options ?? {};
    return {
      type,
      data,
      agentId: o.agentId ?? this.nodeId,
      ...(o.id === undefined ? {} : { id: o.id }),
      ...(o.priority === undefined ? {} : { priority: o.priority }),
      ...(o.swarmId === undefined ? {} : { swarmId: o.swarmId }),
      ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
    };
  }

  private notRunning(): EventBusError {
    return this.state === 'stopping' || this.state === 'stopped'
      ? new ClosedError()
      : new NotConnectedError();
  }

  // ---------------------------------------------------------------- subscribe

  /**
   * Subscribes a handler to one pattern or several. Returns an unsubscribe
   * function carrying the subscription `id` and a `ready` promise. Throws
   * `InvalidPatternError`/`ValidationError` for bad patterns or options.
   */
  /** Spec 001's shape, options before the handler: `subscribe('task.*', { maxConcurrency: 5 }, handler)`. */
  subscribe<P extends string>(
    pattern: P | readonly P[],
    options: SubscriptionOptions<EventFor<M, P>>,
    handler: EventHandler<EventFor<M, P>>,
  ): Unsubscribe;
  subscribe<P extends string>(
    pattern: P | readonly P[],
    handler: EventHandler<EventFor<M, P>>,
    options?: SubscriptionOptions<EventFor<M, P>>,
  ): Unsubscribe;
  subscribe<P extends string>(
    pattern: P | readonly P[],
    a: EventHandler<EventFor<M, P>> | SubscriptionOptions<EventFor<M, P>>,
    b?: EventHandler<EventFor<M, P>> | SubscriptionOptions<EventFor<M, P>>,
  ): Unsubscribe {
    const swapped = typeof a !== 'function' && typeof b === 'function';
    const handler = (swapped ? b : a) as EventHandler<EventFor<M, P>>;
    const options = ((swapped ? a : b) ?? {}) as SubscriptionOptions<EventFor<M, P>>;
    if (typeof handler !== 'function') throw new ValidationError('handler', 'must be a function');
    assertKnownKeys(options, SUBSCRIPTION_KEYS, '', SUBSCRIPTION_HINTS, 'validation');
    return this.addSubscription(pattern, handler as EventHandler, options as SubscriptionOptions, null);
  }

  /** Subscribes a handler that receives arrays of events (`batchSize`, `batchTimeoutMs`). */
  subscribeBatch<P extends string>(
    pattern: P | readonly P[],
    handler: BatchEventHandler<EventFor<M, P>>,
    options: BatchSubscriptionOptions<EventFor<M, P>> = {},
  ): Unsubscribe {
    if (typeof handler !== 'function') throw new ValidationError('handler', 'must be a function');
    assertKnownKeys(options, BATCH_SUBSCRIPTION_KEYS, '', {}, 'validation');
    checkNonNegInt('batchSize', options.batchSize, false);
    checkNonNegInt('batchTimeoutMs', options.batchTimeoutMs);
    return this.addSubscription(pattern, handler as BatchEventHandler, options as SubscriptionOptions, {
      size: options.batchSize ?? 100,
      timeoutMs: options.batchTimeoutMs ?? 1000,
    });
  }

  private addSubscription(
    pattern: string | readonly string[],
    handler: EventHandler | BatchEventHandler,
    o: SubscriptionOptions,
    batch: { size: number; timeoutMs: number } | null,
  ): Unsubscribe {
    if (this.state === 'stopping' || this.state === 'stopped') throw new ClosedError();
    if (o === null || typeof o !== 'object') throw new ValidationError('options', 'must be an object');
    const patterns = typeof pattern === 'string' ? [pattern] : pattern;
    if (!Array.isArray(patterns) || patterns.length === 0)
      throw new ValidationError('pattern', 'must be a pattern or a non-empty array of patterns');
    for (const p of patterns) validatePattern(p);
    const unique = [...new Set(patterns)];
    if (o.group !== undefined && (typeof o.group !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(o.group)))
      throw new ValidationError('group', 'must be 1-128 characters of [A-Za-z0-9_.:-]');
    if (o.filter !== undefined && typeof o.filter !== 'function')
      throw new ValidationError('filter', 'must be a function');
    checkPriority('minPriority', o.minPriority);
    checkPriority('priority', o.priority);
    checkNonNegInt('timeout', o.timeout, false);
    checkNonNegInt('retryAttempts', o.retryAttempts);
    checkNonNegInt('retryDelay', o.retryDelay);
    checkNonNegInt('maxRetryDelay', o.maxRetryDelay);
    checkNonNegInt('maxConcurrency', o.maxConcurrency, false);
    if (o.once !== undefined && typeof o.once !== 'boolean')
      throw new ValidationError('once', 'must be true or false');
    if (o.startFrom !== undefined && o.startFrom !== 'new' && o.startFrom !== 'earliest')
      throw new ValidationError('startFrom', "must be 'new' or 'earliest'");
    if (o.middleware !== undefined && !Array.isArray(o.middleware))
      throw new ValidationError('middleware', 'must be an array');
    for (const [i, m] of (o.middleware ?? []).entries()) {
      if (m === null || typeof m !== 'object' || typeof m.name !== 'string')
        throw new ValidationError(`middleware[${i}]`, 'must be an object with a name');
      // a subscription's middleware only wraps its handler: one without the matching hook would do nothing
      const hook = batch ? 'consumeBatch' : 'consume';
      if (typeof m[hook] !== 'function')
        throw new ValidationError(
          `middleware[${i}]`,
          `${m.name} has no ${hook}(), so it would do nothing on this subscription${batch ? ' (a batch subscription)' : ''}; add it with bus.use() for publish-side middleware`,
        );
    }

    const group = o.group ?? null;
    const bindingKey = group === null ? 'broadcast' : `group:${group}:${[...unique].sort().join(',')}`;
    const seq = ++this.subSeq;
    const id = `${this.nodeId}:sub-${seq}`;
    const sub = new Subscription(
      seq,
      id,
      unique,
      group,
      bindingKey,
      handler,
      o.middleware ?? [],
      o.filter,
      o.once ?? false,
      o.minPriority,
      o.priority,
      o.timeout,
      (o.retryAttempts ?? this.retryAttempts) + 1,
      o.retryDelay ?? this.retryDelay,
      o.maxRetryDelay ?? this.maxRetryDelay,
      o.maxConcurrency ?? this.defaultMaxConcurrency,
    );
    if (batch) sub.batch = { ...batch, buf: [], timer: null };
    this.composeSub(sub);
    this.subs.set(id, sub);
    for (const m of sub.middleware) this.attachMiddleware(m);

    let b = this.bindings.get(bindingKey);
    if (b && o.startFrom !== undefined && o.startFrom !== (b.startFrom ?? 'new'))
      // one binding, one starting point: the first subscription of a binding chose it
      throw new ValidationError(
        'startFrom',
        `${group === null ? "this bus's broadcast binding" : `group ${group}`} already starts from '${b.startFrom ?? 'new'}'; startFrom applies to the first subscription of a binding`,
      );
    if (!b) {
      b = this.createBinding(bindingKey, group, o.startFrom, unique);
      this.bindings.set(bindingKey, b);
    }
    b.subs.push(sub);
    if (group === null) for (const p of unique) this.broadcastIndex.add(p, sub);
    let ready: Promise<void>;
    if (this.state === 'running') {
      if (b.consumer) b.consumer.setPatterns(this.patternUnion(b));
      ready = b.consumer ? Promise.resolve() : this.openBinding(b);
    } else {
      ready = new Promise<void>((resolve, reject) => {
        const onStart = () => {
          this.off('stopped', onStop);
          resolve((b as Binding).opening ?? undefined);
        };
        const onStop = () => {
          this.off('started', onStart);
          reject(new ClosedError('the bus stopped before the subscription became ready'));
        };
        this.once('started', onStart);
        this.once('stopped', onStop);
      });
    }
    ready.catch(() => {}); // observed through `ready`; never an unhandled rejection
    const unsubscribe = (() => this.unsubscribe(id)) as Unsubscribe;
    Object.defineProperty(unsubscribe, 'id', { value: id, enumerable: true });
    Object.defineProperty(unsubscribe, 'ready', { value: ready, enumerable: true });
    return unsubscribe;
  }

  private composeSub(s: Subscription): void {
    const all = s.middleware.length > 0 ? [...this.middleware, ...s.middleware] : this.middleware;
    if (s.batch) s.batchFn = composeConsumeBatch(all, s.handler as BatchConsumeFn);
    else s.fn = composeConsume(all, s.handler as ConsumeFn);
  }

  private createBinding(
    key: string,
    group: string | null,
    startFrom: StartFrom | undefined,
    patterns: readonly string[],
  ): Binding {
    let matcher: PatternIndex<true> | null = null;
    if (group !== null) {
      matcher = new PatternIndex<true>();
      for (const p of patterns) matcher.add(p, true);
    }
    const b: Binding = {
      matcher,
      key,
      identity: bindingIdentity(key, group, this.nodeId),
      group,
      subs: [],
      consumer: null,
      opening: null,
      rr: 0,
      startFrom,
      sink: {
        deliver: (d) => this.onDelivery(b, d),
        deliverMany: (ds) => {
          for (let i = 0; i < ds.length; i++) this.onDelivery(b, ds[i]!);
        },
        capacity: () => this.maxQueue - this.queued,
        ready: () => this.whenReady(),
        sheds: (p) => p >= this.shedFrom,
      },
    };
    if (group !== null)
      b.sink.concurrency = () => {
        let n = 0;
        for (const s of b.subs) if (!s.closed) n += s.maxConcurrency * (s.batch?.size ?? 1);
        return n;
      };
    return b;
  }

  private patternUnion(b: Binding): string[] {
    const set = new Set<string>();
    for (const s of b.subs) for (const p of s.patterns) set.add(p);
    return [...set];
  }

  private openBinding(b: Binding): Promise<void> {
    if (b.consumer) return Promise.resolve();
    if (b.opening) return b.opening;
    const spec = { id: b.key, group: b.group, patterns: this.patternUnion(b), startFrom: b.startFrom };
    let consuming: ReturnType<Transport['consume']>;
    try {
      consuming = this.transport.consume(spec, b.sink);
    } catch (err) {
      // a transport that throws instead of rejecting: the same typed rejection of ready
      consuming = Promise.reject(err);
    }
    b.opening = consuming.then(
      (c) => {
        b.opening = null;
        if (b.subs.length === 0 || this.state !== 'running') {
          void c.close().catch((e) => this.reportError(toError(e)));
          return;
        }
        b.consumer = c;
        const union = this.patternUnion(b);
        if (union.length !== spec.patterns.length) c.setPatterns(union);
      },
      (err) => {
        b.opening = null;
        const e = this.wrapTransportError(err, 'subscribe');
        this.reportError(e);
        throw e;
      },
    );
    return b.opening;
  }

  /**
   * Removes a subscription, by id or by the function `subscribe` returned.
   * Returns true if it existed. Queued events for it are released; its own
   * middleware is detached once no other subscription of this bus uses it.
   */
  unsubscribe(subscription: string | Unsubscribe): boolean {
    const id = typeof subscription === 'function' ? subscription.id : subscription;
    if (typeof id !== 'string')
      throw new ValidationError(
        'subscription',
        'must be a subscription id or the function subscribe returned',
      );
    const s = this.subs.get(id);
    if (!s) return false;
    this.subs.delete(id);
    s.closed = true;
    this.detach(s);
    if (!this.middlewareDetached) for (const m of s.middleware) this.releaseMiddleware(m);
    if (s.parked) for (const t of s.parked.drain()) this.release(t);
    if (s.batch) {
      if (s.batch.timer) clearTimeout(s.batch.timer);
      for (const t of s.batch.buf.splice(0)) this.release(t);
    }
    return true;
  }

  /** Takes a subscription out of matching (index and binding) without dropping its running work. */
  private detach(s: Subscription): void {
    if (s.detached) return;
    s.detached = true;
    const b = this.bindings.get(s.bindingKey);
    if (s.group === null) for (const p of s.patterns) this.broadcastIndex.remove(p, s);
    if (!b) return;
    b.subs = b.subs.filter((x) => x !== s);
    if (b.subs.length === 0 && b.group !== null) {
      this.bindings.delete(b.key);
      const c = b.consumer;
      b.consumer = null;
      if (c) void c.close().catch((e) => this.reportError(toError(e)));
    } else if (b.consumer) {
      if (b.subs.length > 0) b.consumer.setPatterns(this.patternUnion(b));
    }
  }

  /** Gives back a task that will not run: a group delivery goes to another member, a broadcast one is done. */
  private release(t: Task): void {
    if (t.share === null && t.sub.group !== null) {
      t.delivery.nack(0);
      this.deliverySettled();
    } else this.settleTask(t);
  }

  /** Stops delivery to a subscription; events wait (nothing is lost on a durable transport). */
  pause(subscription: string | Unsubscribe): boolean {
    const s = this.subs.get(typeof subscription === 'function' ? subscription.id : subscription);
    if (!s) return false;
    s.paused = true;
    const b = this.bindings.get(s.bindingKey);
    if (b && b.group !== null && b.subs.every((x) => x.paused)) b.consumer?.pause();
    return true;
  }

  resume(subscription: string | Unsubscribe): boolean {
    const s = this.subs.get(typeof subscription === 'function' ? subscription.id : subscription);
    if (!s) return false;
    if (!s.paused) return true;
    s.paused = false;
    const b = this.bindings.get(s.bindingKey);
    if (b && b.group !== null) b.consumer?.resume();
    this.markReady(s);
    return true;
  }

  // ---------------------------------------------------------------- dispatch

  private onDelivery(b: Binding, d: Delivery): void {
    this.delivered++;
    const ev = d.event;
    const md = ev.metadata;
    if (md !== undefined && md[REDRIVE_BINDING_KEY] !== undefined && md[REDRIVE_BINDING_KEY] !== b.identity) {
      d.ack(); // a redrive meant for another binding
      return;
    }
    if (this.queued >= this.maxQueue && ev.priority >= this.shedFrom) {
      this.shed++;
      this.shedByPriority[ev.priority]!++;
      d.ack();
      return;
    }
    if (this.state !== 'running') {
      // consumers are closing: give it back rather than start work we may not finish
      d.nack(0);
      return;
    }
    let targets: readonly Subscription[];
    if (b.group === null) targets = this.broadcastIndex.match(ev.type);
    else if (b.matcher !== null && b.matcher.match(ev.type).length === 0) {
      d.ack(); // the transport over-delivered: not this group's business
      return;
    } else {
      const m = this.pickLocalMember(b);
      targets = m ? [m] : [];
    }
    let first: Subscription | undefined;
    let more: Subscription[] | undefined;
    // a redriven dead letter goes back to the subscription that failed it, if it is here
    let redriveTo = md?.[REDRIVE_TARGET_KEY] as string | undefined;
    if (redriveTo !== undefined && !targets.some((s) => s.id === redriveTo)) redriveTo = undefined;
    for (let i = 0; i < targets.length; i++) {
      const s = targets[i]!;
      if (s.closed) continue;
      if (s.minPriority !== undefined && ev.priority > s.minPriority) continue;
      if (s.filter !== undefined && !this.passes(s, ev)) continue;
      if (redriveTo !== undefined && s.id !== redriveTo && b.group === null) continue;
      if (s.once) {
        if (s.onceFired) continue;
        s.onceFired = true;
        this.detach(s);
        this.subs.delete(s.id);
      }
      if (first === undefined) first = s;
      else (more ??= []).push(s);
    }
    if (first === undefined) {
      if (b.group !== null && b.subs.length === 0) d.nack(0);
      else d.ack();
      return;
    }
    this.queued++;
    // a scheduled retry carries its attempt number, so the count survives the process that scheduled it
    const attempt = md === undefined ? d.attempt : carriedAttempt(ev, d.attempt);
    if (more === undefined) {
      this.enqueue(new Task(first, d, null, attempt, this.levelFor(first, ev), this.nodeId));
    } else {
      const share: Share = { remaining: more.length + 1, nack: false };
      this.enqueue(new Task(first, d, share, attempt, this.levelFor(first, ev), this.nodeId));
      for (const s of more) this.enqueue(new Task(s, d, share, attempt, this.levelFor(s, ev), this.nodeId));
    }
  }

  private pickLocalMember(b: Binding): Subscription | undefined {
    const subs = b.subs;
    if (subs.length === 0) return undefined;
    if (subs.length === 1) return subs[0];
    for (let i = 0; i < subs.length; i++) {
      const s = subs[b.rr++ % subs.length]!;
      if (!s.paused && !s.closed) return s;
    }
    return subs[b.rr++ % subs.length];
  }

  private passes(s: Subscription, ev: AgentEvent): boolean {
    try {
      return s.filter!(ev) === true;
    } catch (err) {
      this.errors++;
      this.reportError(
        new HandlerError(`filter of subscription ${s.id} threw: ${toError(err).message}`, { cause: err }),
      );
      return false;
    }
  }

  private levelFor(s: Subscription, ev: AgentEvent): EventPriority {
    const p = s.priority;
    return p !== undefined && p < ev.priority ? p : ev.priority;
  }

  private enqueue(t: Task): void {
    this.queue.push(t, t.level);
    if (!this.scheduled) {
      // new work from a publisher or a transport: dispatch at once
      this.scheduled = true;
      queueMicrotask(this.drainFn);
    }
  }

  /**
   * A subscription freed a slot (a handler finished). Dispatch runs in
   * microtasks for latency, but a chain of async handlers resolving one after
   * another would then never let the event loop turn, starving the transport's
   * I/O (its next read, its acks). After `YIELD_EVERY` handler calls with no
   * turn of the event loop in between, the next round waits for one.
   */
  private markReady(s: Subscription): void {
    if (s.parked === null || s.parked.size === 0) return;
    this.readySubs.push(s);
    if (this.scheduled) return;
    this.scheduled = true;
    if (this.sinceTurn < YIELD_EVERY) queueMicrotask(this.drainFn);
    else setImmediate(this.drainFn);
  }

  /** Handler calls since the event loop last turned (reset by a setImmediate marker). */
  private sinceTurn = 0;
  private turnMarked = false;
  private readonly turnFn = () => {
    this.turnMarked = false;
    this.sinceTurn = 0;
  };

  private drain(): void {
    this.scheduled = false;
    let budget = 4096;
    if (this.readySubs.length > 0) {
      const ready = this.readySubs;
      this.readySubs = [];
      for (const s of ready) {
        const parked = s.parked;
        while (
          parked !== null &&
          parked.size > 0 &&
          !s.paused &&
          s.inFlight < s.maxConcurrency &&
          budget-- > 0
        ) {
          const t = parked.shift()!;
          if (s.closed) this.release(t);
          else this.run(t);
        }
        if (parked !== null && parked.size > 0 && !s.paused && s.inFlight < s.maxConcurrency)
          this.readySubs.push(s);
      }
    }
    while (budget-- > 0) {
      const t = this.queue.shift();
      if (t === undefined) break;
      this.dispatch(t);
    }
    this.sinceTurn += 4096 - budget;
    if (!this.turnMarked) {
      // fires as soon as the event loop turns: proof that I/O had its chance
      this.turnMarked = true;
      setImmediate(this.turnFn);
    }
    if ((this.queue.size > 0 || this.readySubs.length > 0) && !this.scheduled) {
      // a long backlog: let I/O in between rounds
      this.scheduled = true;
      setImmediate(this.drainFn);
    }
  }

  private dispatch(t: Task): void {
    const s = t.sub;
    if (s.closed) {
      this.release(t);
      return;
    }
    if (s.batch !== null) {
      this.addToBatch(s, t);
      return;
    }
    if (s.paused || s.inFlight >= s.maxConcurrency || (s.parked !== null && s.parked.size > 0)) {
      (s.parked ??= new LevelQueue<Task>()).push(t, t.level);
      if (!s.paused && s.inFlight < s.maxConcurrency) this.markReady(s);
      return;
    }
    this.run(t);
  }

  private run(t: Task): void {
    const s = t.sub;
    s.inFlight++;
    this.inFlight++;
    const d = t.delivery;
    // one clock read per call: it dates both the latency sample and the duration
    const started = performance.now();
    t.startedAt = started;
    if (t.attempt === d.attempt) this.latency.recordMs(toEpoch(started) - d.publishedAt);
    let r: unknown;
    try {
      r = s.fn!(d.event, t);
    } catch (err) {
      this.onFailure(t, err, started);
      return;
    }
    if (isThenable(r)) {
      const p = s.timeout === undefined ? r : this.withTimeout(r, s.timeout, s.id);
      p.then(
        () => this.onSuccess(t, started),
        (err) => this.onFailure(t, err, started),
      );
    } else this.onSuccess(t, (s.processed & 15) === 0 ? started : -1);
  }

  private withTimeout(p: PromiseLike<unknown>, ms: number, subId: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new TimeoutError(`handler of subscription ${subId} took longer than ${ms} ms`)),
        ms,
      );
      p.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  /** `started < 0`: a synchronous call whose duration is not sampled (1 in 16 are, to spare clock reads). */
  private onSuccess(t: Task, started: number): void {
    const s = t.sub;
    s.inFlight--;
    this.inFlight--;
    s.processed++;
    this.processed++;
    if (started >= 0) s.durations.recordMs(performance.now() - started);
    this.settleTask(t);
    this.afterCall(s);
  }

  private onFailure(t: Task, thrown: unknown, started: number): void {
    const s = t.sub;
    s.inFlight--;
    this.inFlight--;
    s.durations.recordMs(performance.now() - started);
    const err = toError(thrown);
    if (err instanceof RetryLaterError) {
      const delay = Math.max(0, err.delayMs);
      // a retry middleware says how many calls it made (details.attempts); other postponements use none
      const made = Number(err.details?.attempts) || 0;
      this.retryLater(t, delay, Math.max(t.attempt, made + 1), () => this.enqueue(t));
    } else if (err instanceof PermanentError || t.attempt >= s.maxAttempts || this.state !== 'running') {
      if (this.state !== 'running' && !(err instanceof PermanentError) && t.attempt < s.maxAttempts) {
        // stopping: do not burn the remaining attempts; let the transport redeliver (durable) or drop (memory)
        this.giveBack(t);
      } else {
        s.failed++;
        this.deadLetterTask(t, err, err instanceof PermanentError ? 'permanent' : 'max_attempts');
      }
    } else {
      s.failed++;
      s.retried++;
      this.retried++;
      const delay = this.backoff(s, t.attempt);
      t.attempt++;
      this.retryLater(t, delay, t.attempt, () => this.enqueue(t));
    }
    this.afterCall(s);
  }

  /**
   * Runs `fallback` after `delay`, or, for a long delay on a transport with
   * `scheduleRetry`, stores the retry there and settles this task: a shared
   * entry is then acknowledged once its other subscriptions are done, and a
   * crash of this process loses nothing. If the transport cannot store it,
   * the retry falls back to a timer here (the error is reported), so the
   * event is never dropped.
   */
  private retryLater(t: Task, delay: number, attempt: number, fallback: () => void): void {
    const transport = this.transport;
    // a `once` subscription left the index at its first event: a stored retry could not find it
    if (transport.scheduleRetry === undefined || delay < this.durableRetryAboveMs || t.sub.once) {
      this.later(delay, fallback);
      return;
    }
    const s = t.sub;
    const target = {
      binding: bindingIdentity(s.bindingKey, s.group, this.nodeId),
      subscriptionId: s.id,
      attempt,
    };
    let p: Promise<void>;
    try {
      p = transport.scheduleRetry(t.delivery.event, target, delay);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      () => {
        this.durableRetries++;
        this.settleTask(t);
      },
      (e) => {
        this.reportError(
          new TransportError(
            `cannot schedule a retry of event ${t.delivery.event.id} for ${s.id}; retrying from memory: ${toError(e).message}`,
            { cause: e },
          ),
        );
        this.later(delay, fallback);
      },
    );
  }

  private giveBack(t: Task): void {
    if (t.share === null) {
      t.delivery.nack();
      this.deliverySettled();
    } else {
      t.share.nack = true;
      this.settleTask(t);
    }
  }

  /** Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2^(n-1))]. */
  private backoff(s: Subscription, attempt: number): number {
    const ceiling = Math.min(s.maxRetryDelay, s.retryDelay * 2 ** (attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  private later(ms: number, fn: () => void): void {
    const entry: RetryTimer = {
      timer: setTimeout(() => {
        this.timers.delete(entry);
        fn();
      }, ms),
      slot: -1,
    };
    this.timers.add(entry);
  }

  private afterCall(s: Subscription): void {
    if (s.batch !== null) {
      if (s.batch.buf.length >= s.batch.size || (s.batch.buf.length > 0 && s.batch.timer === null))
        this.flushBatch(s);
      return;
    }
    if (s.parked !== null && s.parked.size > 0 && !s.paused) this.markReady(s);
  }

  private deadLetterTask(t: Task, err: Error, reason: DeadLetterInfo['reason']): void {
    const s = t.sub;
    s.deadLettered++;
    this.deadLettered++;
    this.errors++;
    this.processed++;
    const info: DeadLetterInfo = {
      reason,
      error: {
        name: err.name,
        message: err.message,
        ...(typeof (err as unknown as { code?: unknown }).code === 'string'
          ? { code: (err as unknown as { code: string }).code }
          : {}),
        ...(err.stack === undefined ? {} : { stack: err.stack }),
      },
      // a retry middleware made more calls than the bus saw; it says how many in details.attempts
      attempts: Math.max(
        t.attempt,
        Number((err as { details?: { attempts?: unknown } }).details?.attempts) || 0,
      ),
      subscriptionId: s.id,
      pattern: s.patterns.join(','),
      group: s.group,
      nodeId: this.nodeId,
      binding: bindingIdentity(s.bindingKey, s.group, this.nodeId),
    };
    const event = t.delivery.event;
    if (this.listenerCount('deadLetter') > 0) this.emit('deadLetter', { event, ...info });
    this.reportError(
      new HandlerError(
        `handler of ${s.id} failed ${t.attempt} time(s) on ${event.type} ${event.id}: ${err.message}`,
        {
          cause: err,
          details: { eventId: event.id, type: event.type, subscriptionId: s.id, attempts: t.attempt, reason },
        },
      ),
    );
    const onStoreError = (e: unknown) => {
      this.reportError(
        new TransportError(`cannot dead-letter event ${event.id}: ${toError(e).message}`, { cause: e }),
      );
    };
    if (t.share === null) {
      t.delivery.deadLetter(info).then(
        () => this.deliverySettled(),
        (e) => {
          onStoreError(e);
          t.delivery.nack();
          this.deliverySettled();
        },
      );
      return;
    }
    const store = this.transport.deadLetters;
    if (!store) {
      this.settleTask(t);
      return;
    }
    store.add(event, info).then(
      () => this.settleTask(t),
      (e) => {
        onStoreError(e);
        t.share!.nack = true;
        this.settleTask(t);
      },
    );
  }

  private settleTask(t: Task): void {
    const sh = t.share;
    if (sh === null) t.delivery.ack();
    else {
      if (--sh.remaining > 0) return;
      if (sh.nack) t.delivery.nack();
      else t.delivery.ack();
    }
    this.deliverySettled();
  }

  private deliverySettled(): void {
    this.queued--;
    // wake as many waiting publishers as there are free places, not all of them (no thundering herd)
    for (let free = this.maxQueue - this.queued; free > 0 && this.waiters.length > 0; free--)
      this.waiters.shift()!();
    if (this.queued === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private whenReady(): Promise<void> {
    if (this.queued < this.maxQueue || this.state !== 'running') return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.queued === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  // ---------------------------------------------------------------- batches

  private addToBatch(s: Subscription, t: Task): void {
    const b = s.batch!;
    b.buf.push(t);
    if (b.buf.length >= b.size) this.flushBatch(s);
    else if (b.timer === null) {
      b.timer = setTimeout(() => {
        b.timer = null;
        this.flushBatch(s);
      }, b.timeoutMs);
    }
  }

  private flushBatch(s: Subscription): void {
    const b = s.batch!;
    if (b.buf.length === 0 || s.paused || s.inFlight >= s.maxConcurrency) return;
    if (b.timer) {
      clearTimeout(b.timer);
      b.timer = null;
    }
    const tasks = b.buf.splice(0, b.size);
    this.runBatch(s, tasks, Math.min(...tasks.map((t) => t.attempt)));
    if (b.buf.length > 0 && b.timer === null) {
      b.timer = setTimeout(() => {
        b.timer = null;
        this.flushBatch(s);
      }, b.timeoutMs);
    }
  }

  private runBatch(s: Subscription, tasks: Task[], attempt: number): void {
    s.inFlight++;
    this.inFlight++;
    const now = epochNow();
    for (const t of tasks)
      if (t.attempt === t.delivery.attempt) this.latency.recordMs(now - t.delivery.publishedAt);
    const ctx: BatchConsumeContext = {
      nodeId: this.nodeId,
      subscriptionId: s.id,
      patterns: s.patterns,
      group: s.group,
      attempt,
      maxAttempts: s.maxAttempts,
      deliveries: tasks.map((t) => t.delivery),
    };
    const started = performance.now();
    const done = (err: unknown, failed: boolean) => {
      s.inFlight--;
      this.inFlight--;
      s.durations.recordMs(performance.now() - started);
      if (!failed) {
        s.processed += tasks.length;
        this.processed += tasks.length;
        for (const t of tasks) this.settleTask(t);
      } else {
        const e = toError(err);
        if (e instanceof RetryLaterError) this.later(e.delayMs, () => this.runBatch(s, tasks, attempt));
        else if (e instanceof PermanentError || attempt >= s.maxAttempts || this.state !== 'running') {
          s.failed++;
          for (const t of tasks) {
            t.attempt = attempt;
            this.deadLetterTask(t, e, e instanceof PermanentError ? 'permanent' : 'max_attempts');
          }
        } else {
          s.failed++;
          s.retried++;
          this.retried++;
          this.later(this.backoff(s, attempt), () => this.runBatch(s, tasks, attempt + 1));
        }
      }
      this.afterCall(s);
    };
    let r: unknown;
    try {
      r = s.batchFn!(
        tasks.map((t) => t.delivery.event),
        ctx,
      );
    } catch (err) {
      done(err, true);
      return;
    }
    if (isThenable(r)) {
      const p = s.timeout === undefined ? r : this.withTimeout(r, s.timeout, s.id);
      p.then(
        () => done(undefined, false),
        (err) => done(err, true),
      );
    } else done(undefined, false);
  }

  // ---------------------------------------------------------------- errors

  private reportError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else this.logger.error(err.message, { code: (err as { code?: string }).code, nodeId: this.nodeId });
  }

  // ---------------------------------------------------------------- history

  /** Recent events from the transport's history (spec 001), oldest first. */
  async getRecentEvents(query: HistoryQuery = {}): Promise<AgentEvent[]> {
    assertKnownKeys(query, ['pattern', 'limit', 'since', 'correlationId'], '', {}, 'validation');
    if (query.pattern !== undefined) validatePattern(query.pattern);
    checkNonNegInt('limit', query.limit, false);
    if (query.since !== undefined && (typeof query.since !== 'number' || !Number.isFinite(query.since)))
      throw new ValidationError('since', 'must be a number (epoch ms)');
    const { correlationId, ...rest } = query;
    if (correlationId !== undefined) {
      checkCorrelationId(correlationId);
      // one transaction's events: replay the range, keep the matching ones, the most recent `limit`
      const limit = query.limit ?? 100;
      const out: AgentEvent[] = [];
      await this.replay(
        {
          ...(rest.pattern === undefined ? {} : { pattern: rest.pattern }),
          ...(rest.since === undefined ? {} : { from: rest.since }),
          correlationId,
        },
        (e) => {
          out.push(e);
          if (out.length > limit) out.shift();
        },
      );
      return out;
    }
    if (!this.transport.getRecentEvents)
      throw new UnsupportedError(`transport ${this.transport.name} keeps no history`);
    return this.transport.getRecentEvents(rest);
  }

  /** Replays stored events (spec 004 event store) in publish order to `onEvent`. */
  async replay(query: ReplayQuery, onEvent: (event: AgentEvent) => void | Promise<void>): Promise<number> {
    assertKnownKeys(
      query,
      ['pattern', 'from', 'to', 'fromId', 'toId', 'limit', 'correlationId'],
      '',
      {},
      'validation',
    );
    if (query.pattern !== undefined) validatePattern(query.pattern);
    if (!this.transport.replay) throw new UnsupportedError(`transport ${this.transport.name} cannot replay`);
    const { correlationId, ...rest } = query;
    if (correlationId === undefined) return this.transport.replay(rest, onEvent);
    checkCorrelationId(correlationId);
    // the transport replays the range; only this correlation's events reach onEvent, and `limit` counts them
    const { limit, ...range } = rest;
    checkNonNegInt('limit', limit, false);
    let n = 0;
    await this.transport.replay(range, async (e) => {
      if (e.metadata?.correlationId !== correlationId || (limit !== undefined && n >= limit)) return;
      n++;
      await onEvent(e);
    });
    return n;
  }

  /** The transport's dead-letter store, when it has one. */
  get deadLetters(): DeadLetterStore | undefined {
    return this.transport.deadLetters;
  }

  // ---------------------------------------------------------------- metrics

  private tick(): void {
    this.sample();
    if (++this.ticks % HISTOGRAM_ROTATE_TICKS === 0) this.latency.rotate();
  }

  private sample(): void {
    this.samples.push({
      t: performance.now(),
      processed: this.processed,
      published: this.published,
      errors: this.errors,
    });
    if (this.samples.length > 61) this.samples.shift();
  }

  private rate(field: 'processed' | 'published' | 'errors', windowS: number): number {
    const now = performance.now();
    const cur = this[field];
    let base = this.samples[0];
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const smp = this.samples[i]!;
      base = smp;
      if (now - smp.t >= windowS * 1000) break;
    }
    if (!base) return 0;
    const dt = (now - base.t) / 1000;
    return dt <= 0.05 ? 0 : (cur - base[field]) / dt;
  }

  /** Spec 000's `PerformanceMetrics`: latencies over the last ~60 s, rates over the last ~5 s. */
  getMetrics(): PerformanceMetrics {
    const h = this.latency.merged();
    const snap = h.snapshot();
    const tstats = this.transport.stats();
    return {
      eventsProcessed: this.processed,
      eventsPerSecond: this.rate('processed', RATE_WINDOW_S),
      averageLatency: snap.mean,
      maxLatency: snap.max,
      minLatency: snap.min,
      p95Latency: snap.p95,
      p99Latency: snap.p99,
      errorCount: this.errors,
      errorRate: this.errors / Math.max(1, this.processed + this.publishErrors),
      queueSize: this.queued,
      memoryUsage: process.memoryUsage.rss(),
      activeConnections:
        typeof tstats.connections === 'number' ? tstats.connections : this.isConnected() ? 1 : 0,
      throughput: this.rate('published', RATE_WINDOW_S),
      timestamp: Date.now(),
    };
  }

  /** `getMetrics()` plus queue sizes per priority, per-handler stats and transport stats. */
  getDetailedMetrics(): DetailedMetrics {
    const base = this.getMetrics();
    const sizes = this.queue.sizes();
    for (const s of this.subs.values()) {
      if (s.parked) {
        const ps = s.parked.sizes();
        for (let i = 0; i < 5; i++) sizes[i]! += ps[i]!;
      }
    }
    const named = <T>(arr: readonly T[]) =>
      Object.fromEntries(PRIORITY_NAMES.map((n, i) => [n, arr[i]])) as Record<
        (typeof PRIORITY_NAMES)[number],
        T
      >;
    const snap = this.latency.merged().snapshot();
    return {
      ...base,
      queueSizes: named(sizes),
      inFlight: this.inFlight,
      published: this.published,
      publishErrors: this.publishErrors,
      delivered: this.delivered,
      retried: this.retried,
      durableRetries: this.durableRetries,
      retryTimers: this.timers.size,
      deadLettered: this.deadLettered,
      shed: this.shed,
      shedByPriority: named(this.shedByPriority),
      latency: { p50: snap.p50, p90: snap.p90, p99: snap.p99, p999: snap.p999, count: snap.count },
      handlerStats: [...this.subs.values()].map((s) => s.stats()),
      transport: this.transport.stats(),
    };
  }

  /** Spec 001's subscriber stats. */
  getSubscriberStats(): SubscriberStats {
    const subs = [...this.subs.values()];
    return {
      active: subs.filter((s) => !s.paused).length,
      paused: subs.filter((s) => s.paused).length,
      eventsPerSecond: this.rate('processed', RATE_WINDOW_S),
      errorsPerMinute: this.rate('errors', 60) * 60,
      subscribers: subs.map((s) => s.stats()),
    };
  }

  /** Health of the bus and its transport, with reasons when not healthy. */
  async healthCheck(): Promise<BusHealth> {
    let transport: TransportHealth;
    try {
      transport = await this.transport.healthCheck();
    } catch (err) {
      transport = { status: 'unhealthy', connected: false, reasons: [toError(err).message] };
    }
    const reasons = [...transport.reasons];
    let status: HealthStatus = transport.status;
    const worse = (s: HealthStatus) => {
      if (s === 'unhealthy' || (s === 'degraded' && status === 'healthy')) status = s;
    };
    if (this.state !== 'running') {
      worse('unhealthy');
      reasons.push(`bus is ${this.state}`);
    }
    if (this.queued >= this.maxQueue) {
      worse('degraded');
      reasons.push(`queue full (${this.queued}/${this.maxQueue})`);
    } else if (this.queued >= this.maxQueue * 0.8) {
      worse('degraded');
      reasons.push(`queue above 80% (${this.queued}/${this.maxQueue})`);
    }
    return {
      status,
      nodeId: this.nodeId,
      connected: this.isConnected(),
      reasons,
      uptimeMs: this.state === 'running' ? Date.now() - this.startedAt : 0,
      queue: { size: this.queued, max: this.maxQueue },
      transport,
    };
  }
}

/** The priority level names, for labels and logs. */
export function priorityName(p: EventPriority): string {
  return PRIORITY_NAMES[p] ?? String(p);
}

export { EventPriority };
