import type { AgentEvent, EventMetadata, EventPriority } from './event.js';
import type { Logger } from './logger.js';

/**
 * What a transport can promise. The bus and the conformance kit read these
 * flags; a test is skipped only when a transport declares it cannot do the
 * thing (never because it happens to fail).
 */
export interface TransportCapabilities {
  /** Events survive a crash of the consuming process; deliveries must be acked and are redelivered otherwise. */
  readonly durable: boolean;
  /** Competing consumers (group subscriptions) across bus instances sharing the transport's backend. */
  readonly groups: boolean;
  /** Events of one publisher with one priority reach a broadcast consumer in publish order. */
  readonly ordering: boolean;
  /** `getRecentEvents` and `replay` work. */
  readonly replay: boolean;
  /** A more urgent event overtakes a backlog held inside the transport. */
  readonly priorities: boolean;
  /** `deadLetters` is a store that keeps dead letters with their payloads. */
  readonly deadLetters: boolean;
  /** Bus instances in different processes can talk through it. */
  readonly crossProcess: boolean;
}

/** Given to `connect()`. */
export interface TransportContext {
  /** The bus's node id: stable across restarts of the same logical node. */
  readonly nodeId: string;
  readonly logger: Logger;
  /** Report an error that happened outside any call (a dropped connection, a failed read). */
  onError(error: Error): void;
}

/**
 * Where a consumer starts when it has no stored position.
 * `new`: only events published after the consumer exists (default).
 * `earliest`: everything the transport still holds.
 */
export type StartFrom = 'new' | 'earliest';

/**
 * A binding between the bus and the transport. The bus opens one broadcast
 * consumer (`group: null`) per bus instance and one consumer per group key.
 */
export interface ConsumerSpec {
  /**
   * Stable id of the binding inside the bus, usable as a durable name: `broadcast`
   * or `group:<name>` (plus a pattern hash when patterns differ).
   */
  readonly id: string;
  /**
   * `null`: a broadcast consumer of this bus instance, which receives every event
   * (each bus instance its own cursor). A string: members of the same group key on
   * all bus instances compete; each event goes to exactly one of them.
   */
  readonly group: string | null;
  /**
   * Union of the patterns the bus wants on this binding. A transport may use it
   * to skip events early; the bus re-checks every delivery, so over-delivering is
   * safe and under-delivering is a bug.
   */
  readonly patterns: readonly string[];
  readonly startFrom?: StartFrom;
}

/**
 * The bus side of a consumer: a bounded queue with flow control. A transport
 * calls `deliver` only while `capacity() > 0` (or when `sheds(priority)` says
 * the bus will shed it), and otherwise waits for `ready()`; it never buffers
 * without bound on the bus's behalf.
 */
export interface DeliverySink {
  /** Hand one delivery to the bus. Never throws; the bus settles it later (ack, nack or dead-letter). */
  deliver(delivery: Delivery): void;
  /**
   * Hand a batch read in one go (an XREADGROUP reply, say). Same contract as
   * `deliver` for each; the bus schedules the whole batch before dispatching any.
   */
  deliverMany(deliveries: readonly Delivery[]): void;
  /** How many more deliveries the bus accepts right now. */
  capacity(): number;
  /** Resolves when `capacity() > 0`. */
  ready(): Promise<void>;
  /** Whether the bus sheds an event of this priority while full (configured load shedding). */
  sheds(priority: EventPriority): boolean;
  /**
   * Group bindings only: how many deliveries this node's members of the group
   * can run at once (the sum of their `maxConcurrency`, times `batchSize` for
   * batch subscriptions). A transport that reads ahead for competing members
   * holds no more unsettled deliveries than this, so an idle member on another
   * node is never starved by a busy one's read-ahead (SEMANTICS: members
   * compete fairly).
   */
  concurrency?(): number;
}

/**
 * Metadata key a dead-letter store sets on a redriven event: the id of the
 * subscription that dead-lettered it. The bus then hands the event to that
 * subscription only (when it exists on the receiving node), so subscribers that
 * already handled the event are not bothered again.
 */
export const REDRIVE_TARGET_KEY = 'redriveTarget';

/**
 * Metadata key a dead-letter store sets on a redriven event: the identity of
 * the binding that dead-lettered it (`bindingIdentity`). Every other binding
 * that receives the event (other nodes' broadcast consumers, other groups)
 * acknowledges it without handling it, so a redrive never duplicates work
 * that already succeeded elsewhere.
 */
export const REDRIVE_BINDING_KEY = 'redriveBinding';

/**
 * The identity of a consumer binding across the system: a group's key
 * (`ConsumerSpec.id`, shared by all members), or `<spec.id>@<nodeId>` for a
 * node's own broadcast binding.
 */
export function bindingIdentity(specId: string, group: string | null, nodeId: string): string {
  return group === null ? `${specId}@${nodeId}` : specId;
}

/**
 * Metadata key of a scheduled retry: the attempt number its next delivery
 * counts as (the first call is 1). A transport that schedules retries
 * (`Transport.scheduleRetry`) stores it with the event, so the count survives
 * a crash of the bus that scheduled the retry and retries still end after
 * `retryAttempts`. Distinct from `metadata.retryCount`, which counts
 * re-publications (redrives) and starts a fresh round of attempts.
 */
export const RETRY_ATTEMPT_KEY = 'retryAttempt';

/** Who a scheduled retry is for (`Transport.scheduleRetry`). */
export interface RetryTarget {
  /** `bindingIdentity` of the binding the failed delivery came through. */
  readonly binding: string;
  /** The subscription to call again; every other subscription of that binding skips the retry. */
  readonly subscriptionId?: string;
  /** The attempt number of the retried call (2 for the first retry). */
  readonly attempt: number;
}

/**
 * The event a scheduled retry delivers: `event` marked (as a redrive is) for
 * the binding and subscription of `target`, with the attempt it counts as.
 * Other bindings acknowledge it unhandled; a transport stores this copy.
 */
export function retryEventFor(event: AgentEvent, target: RetryTarget): AgentEvent {
  const metadata: EventMetadata = {
    ...event.metadata,
    [REDRIVE_BINDING_KEY]: target.binding,
    [RETRY_ATTEMPT_KEY]: target.attempt,
  };
  if (target.subscriptionId !== undefined) metadata[REDRIVE_TARGET_KEY] = target.subscriptionId;
  return { ...event, metadata };
}

/**
 * The attempt a delivery counts as: the transport's own number, or the
 * attempt a scheduled retry carries (`RETRY_ATTEMPT_KEY`) when that is higher.
 */
export function carriedAttempt(event: AgentEvent, attempt: number): number {
  const carried = event.metadata?.[RETRY_ATTEMPT_KEY];
  return typeof carried === 'number' && Number.isInteger(carried) && carried > attempt ? carried : attempt;
}

/** Why an event was dead-lettered. */
export interface DeadLetterInfo {
  readonly reason: 'max_attempts' | 'permanent' | 'rejected' | 'expired' | 'decode_error' | 'shed';
  readonly error?: { name: string; message: string; code?: string; stack?: string };
  /** Attempts made, counting the first. */
  readonly attempts: number;
  readonly subscriptionId?: string;
  readonly pattern?: string;
  readonly group?: string | null;
  readonly nodeId?: string;
  /** `bindingIdentity` of the binding the event was dead-lettered from (filled by the bus); redrive targets it. */
  readonly binding?: string;
}

/** A stored dead letter: the original event, untouched, and why it died. */
export interface DeadLetter extends DeadLetterInfo {
  /** Id of the dead letter (not of the event). */
  readonly id: string;
  readonly event: AgentEvent;
  /** Epoch ms. */
  readonly deadAt: number;
}

export interface DeadLetterQuery {
  limit?: number;
  /** Only dead letters whose event type matches this pattern. */
  pattern?: string;
  /** Resume listing after this dead-letter id. */
  after?: string;
}

/**
 * Dead letters kept by a transport (memory: a bounded list; Redis: a stream).
 * Redrive publishes the original event again (with `metadata.retryCount`
 * incremented) and removes the dead letter only once the publish succeeded.
 */
export interface DeadLetterStore {
  add(event: AgentEvent, info: DeadLetterInfo): Promise<DeadLetter>;
  list(query?: DeadLetterQuery): Promise<DeadLetter[]>;
  get(id: string): Promise<DeadLetter | undefined>;
  count(): Promise<number>;
  /** Redrive the given ids, or every dead letter matching `filter` when ids are omitted. Returns how many were republished. */
  redrive(selector?: { ids?: readonly string[]; pattern?: string; limit?: number }): Promise<number>;
  /** Delete the given ids, or all when omitted. Returns how many were removed. */
  purge(selector?: { ids?: readonly string[]; pattern?: string }): Promise<number>;
}

/**
 * One event handed to a consumer. Settle it exactly once: `ack`, `nack` or
 * `deadLetter`. Settling twice is a no-op (idempotent), never an error.
 */
export interface Delivery {
  readonly event: AgentEvent;
  /** 1 on the first delivery; from the transport's own counter where it has one, so it survives crashes. */
  readonly attempt: number;
  /** Epoch ms (fractional) when the event was published; publish-to-handler latency is measured from it. */
  readonly publishedAt: number;
  /** The transport's own id of this entry (a stream id, a sequence number), for logs and DLQ records. */
  readonly transportId?: string;
  /** Done with it: the transport forgets it. */
  ack(): void;
  /**
   * Give it back for redelivery after `delayMs` (default: the transport's
   * redelivery idle time). On a durable transport a long delay is scheduled in the
   * backend, not held in memory.
   */
  nack(delayMs?: number): void;
  /** Store it in the dead-letter store and ack it, atomically where the backend allows. */
  deadLetter(info: DeadLetterInfo): Promise<void>;
}

/** A live consumer binding. */
export interface TransportConsumer {
  readonly id: string;
  /** Change the pattern union (subscriptions came or went). */
  setPatterns(patterns: readonly string[]): void;
  /** Stop handing out deliveries until `resume()`; nothing is lost on a durable transport. */
  pause(): void;
  resume(): void;
  /**
   * Stop handing out deliveries. Deliveries handed out before remain settleable
   * (ack, nack, dead-letter) until the transport itself is closed, so the bus
   * can drain in-flight handlers after closing its consumers. With `leave: true` the binding's durable state
   * (a per-instance consumer group, a group membership) is removed for good.
   */
  close(options?: { leave?: boolean }): Promise<void>;
}

export interface PublishOptions {
  /** When a consumer's queue is full: wait for room (default) or fail with `QueueFullError`. */
  readonly onFull?: 'wait' | 'fail';
  readonly signal?: AbortSignal;
}

export interface HistoryQuery {
  /** Only events whose type matches this pattern. Default: all. */
  pattern?: string;
  /** At most this many (the most recent ones). Default 100. */
  limit?: number;
  /** Only events published at or after this epoch ms. */
  since?: number;
  /**
   * Only events whose `metadata.correlationId` is this (one transaction,
   * one saga). Answered by the bus from a replay of the range, so it needs a
   * transport that can replay; pair it with `since` to bound the scan.
   */
  correlationId?: string;
}

export interface ReplayQuery {
  pattern?: string;
  /** Epoch ms, inclusive. */
  from?: number;
  /** Epoch ms, inclusive. Default: now. */
  to?: number;
  /** Transport ids, inclusive, when the transport has them (stream ids). */
  fromId?: string;
  toId?: string;
  limit?: number;
  /** Only events whose `metadata.correlationId` is this; `limit` counts matching events. */
  correlationId?: string;
}

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface TransportHealth {
  readonly status: HealthStatus;
  readonly connected: boolean;
  /** Round-trip time of a ping, ms, where the transport has a server. */
  readonly latencyMs?: number;
  readonly reasons: readonly string[];
  readonly details?: Record<string, unknown>;
}

/** Counters and gauges a transport can report cheaply (no I/O). */
export interface TransportStats {
  readonly published: number;
  readonly delivered: number;
  readonly acked: number;
  readonly redelivered: number;
  readonly deadLettered: number;
  /** Events waiting inside the transport for this node (backlog), when known. */
  readonly backlog?: number;
  readonly connections?: number;
  readonly [key: string]: unknown;
}

/**
 * A transport moves events between bus instances. The bus owns subscriptions,
 * patterns, dispatch and retries; the transport owns storage, fan-out between
 * instances, groups and redelivery.
 *
 * Contract:
 * - `publish` resolves only when every event of the batch is accepted by the
 *   backend (durably, where `durable`), and rejects with an `EventBusError`
 *   otherwise; a rejected batch may have been partly accepted only when the
 *   backend cannot do better, and then the error says how many were.
 * - Each broadcast consumer receives every published event (after it exists);
 *   each group key hands each event to one member.
 * - Deliveries respect the sink's flow control.
 * - Settling a delivery is idempotent. On a durable transport an unsettled
 *   delivery is redelivered (with `attempt` incremented) after the member that
 *   held it died or after the redelivery idle time.
 * - `close()` stops consumers, waits for in-flight publishes, and releases
 *   connections; it never throws for an already closed transport.
 */
export interface Transport {
  readonly name: string;
  readonly capabilities: TransportCapabilities;
  connect(context: TransportContext): Promise<void>;
  /**
   * `timeoutMs`: return within about this long whatever the backend does
   * (flush what can be flushed, then drop the connections). The bus passes
   * what is left of its `shutdownTimeoutMs`.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  isConnected(): boolean;
  publish(events: readonly AgentEvent[], options?: PublishOptions): Promise<void>;
  consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer>;
  healthCheck(): Promise<TransportHealth>;
  stats(): TransportStats;
  /** Present when `capabilities.replay`. Ascending publish order, the last `limit` matching. */
  getRecentEvents?(query: HistoryQuery): Promise<AgentEvent[]>;
  /** Present when `capabilities.replay`. Calls `onEvent` in publish order; resolves with the count. */
  replay?(query: ReplayQuery, onEvent: (event: AgentEvent) => void | Promise<void>): Promise<number>;
  /** Present when `capabilities.deadLetters`. */
  readonly deadLetters?: DeadLetterStore;
  /**
   * Durable delayed retry, present where the backend can keep one (Redis
   * Streams; the memory transport has none and the bus keeps a timer).
   *
   * Once the promise resolves the retry is stored in the backend: it survives
   * a crash of this process, and nothing is held in memory for it. After
   * `delayMs` (at the earliest) the transport delivers `retryEventFor(event,
   * target)` on every binding, as for a fresh publish; the bus hands it to
   * `target.binding` only, to `target.subscriptionId` only when that
   * subscription exists there (a group: to one member), with `target.attempt`
   * as its attempt number (`RETRY_ATTEMPT_KEY`). The caller still settles the
   * delivery the retry replaces. A rejection means nothing was stored.
   */
  scheduleRetry?(event: AgentEvent, target: RetryTarget, delayMs: number): Promise<void>;
}
