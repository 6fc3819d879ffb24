import { createHash, randomBytes } from 'node:crypto';
import {
  type AgentEvent,
  bindingIdentity,
  ClosedError,
  type ConsumerSpec,
  carriedAttempt,
  compilePattern,
  createSerializer,
  type DeadLetterInfo,
  type Delivery,
  type DeliverySink,
  EventBusError,
  epochNow,
  type HistoryQuery,
  type Logger,
  NotConnectedError,
  noopLogger,
  type PublishOptions,
  QueueFullError,
  type ReplayQuery,
  type RetryTarget,
  retryEventFor,
  type Serializer,
  SlotList,
  TimeoutError,
  type Transport,
  type TransportCapabilities,
  type TransportConsumer,
  type TransportContext,
  TransportError,
  type TransportHealth,
  type TransportStats,
} from '@qe/core';
import { Cluster, Redis } from 'ioredis';
import { dispatch, keySlot, LeanCommand, send } from './command.js';
import { groupName, Keys } from './keys.js';
import { type RedisTransportOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { RedisDeadLetterStore } from './RedisDeadLetterStore.js';
import { DEAD_LETTER_2, DELAYED_HEADER_LEN, PROMOTE_6, PUBLISH_6, REDRIVE_2, SCHEDULE_2 } from './scripts.js';

export type RedisClient = Redis | Cluster;

/** The custom commands defined from `scripts.ts`. */
interface ScriptCommands {
  qeDeadLetter(
    stream: string,
    dlq: string,
    group: string,
    id: string,
    frame: Buffer,
    info: string,
    maxLen: number,
  ): Promise<string>;
  qeRedrive(
    dlq: string,
    stream: string,
    dlId: string,
    frame: Buffer,
    t: string,
    maxLen: number,
  ): Promise<string | null>;
  qeSchedule(
    delayed: string,
    stream: string,
    delayMs: number,
    member: Buffer,
    group: string,
    id: string,
  ): Promise<number>;
  qePromote(
    delayed: string,
    s0: string,
    s1: string,
    s2: string,
    s3: string,
    s4: string,
    limit: number,
  ): Promise<number>;
}

/** XPENDING page of a consumer's own entries taken back at a restart. */
const OWN_PAGE = 1000;
/** XPENDING page of idle entries looked at per stream and claim round. */
const IDLE_PAGE = 200;
/** An XPENDING extended-form row: id, consumer, idle ms, delivery count. */
type PendingRow = [string, string, number, number];

/** Due scheduled retries moved per script call; a full page is followed by another at once. */
const PROMOTE_PAGE = 200;

const CAPABILITIES: TransportCapabilities = Object.freeze({
  durable: true,
  groups: true,
  ordering: true,
  replay: true,
  priorities: true,
  deadLetters: true,
  crossProcess: true,
});

type RawEntry = [Buffer, Buffer[] | null];
type RawRead = [Buffer, RawEntry[]][] | null;

interface PendingPublish {
  events: readonly AgentEvent[];
  frames: (Buffer | string)[];
  t: string;
  resolve: () => void;
  reject: (err: Error) => void;
  left: number;
  error: Error | undefined;
  /** Events Redis confirmed. */
  confirmed: number;
  /** Some chunk passed `publishTimeoutMs`; `unknown`: one of them had been sent. */
  timedOut: false | 'none' | 'unknown';
}

/** One `publish-5` call: the command under way (EVALSHA, then maybe EVAL) and its publishes. */
interface Chunk {
  args: (string | Buffer)[];
  owners: PendingPublish[];
  cmd: LeanCommand | null;
  done: boolean;
}

/** Events per `publish-5` call: large enough to amortise a request, small enough not to hold Redis long. */
const PUBLISH_CHUNK = 256;
const LEVEL_ARG = ['0', '1', '2', '3', '4'] as const;

/** A Lua script with its SHA1 and key count, run by `runScript`. */
interface LuaScript {
  readonly lua: string;
  readonly sha: string;
  readonly keys: number;
}

const script = (lua: string, keys: number): LuaScript => ({
  lua,
  sha: createHash('sha1').update(lua).digest('hex'),
  keys,
});

const PUBLISH_6_SCRIPT = script(PUBLISH_6, 6);

/**
 * Runs a script: EVALSHA, then EVAL once when Redis does not know it yet. `args` start with its keys.
 * `onSend` sees each command as it is sent (to cancel it at a deadline).
 */
function runScript(
  client: RedisClient,
  s: LuaScript,
  args: (string | Buffer)[],
  onSend?: (cmd: LeanCommand) => void,
): Promise<unknown> {
  const key = args[0] as string;
  const go = (name: string, head: string) => {
    const cmd = new LeanCommand(name, [head, s.keys, ...args], key, false);
    onSend?.(cmd);
    return dispatch(client, cmd);
  };
  return go('evalsha', s.sha).catch((err: Error) => {
    if (!/NOSCRIPT/.test(err.message)) throw err;
    return go('eval', s.lua);
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A command written at most once: if ioredis would write it again (a resend
 * after a reconnect), it fails instead. For WAIT, whose answer counts the
 * replicas of the writes made on the connection it is sent on: sent again on
 * a new connection (or routed to another node), it would confirm writes it
 * never saw.
 */
class OnceCommand extends LeanCommand {
  override toWritable(socket?: unknown): string | Buffer {
    if (this.written) this.cancel(new Error('connection lost before Redis answered'));
    return super.toWritable(socket);
  }
}

/**
 * The connection a Cluster uses for `key`'s node (the one the publish script
 * went through), so a command on it is never redirected to another node;
 * the client itself when standalone.
 */
function nodeOf(client: RedisClient, key: string): RedisClient {
  if (!(client instanceof Cluster)) return client;
  const nodeKey = client.slots[keySlot(key)]?.[0];
  const pool = (client as unknown as { connectionPool?: { getInstanceByKey(k: string): Redis | undefined } })
    .connectionPool;
  return (nodeKey && pool?.getInstanceByKey(nodeKey)) || client;
}

/** Chunks waiting for a node's next WAIT; `short`: its last WAIT came back short. */
interface ReplicaWaits {
  /** `socket`: the connection the chunk's script went out on; a WAIT on another one does not cover it. */
  queue: { events: number; part: number; socket: unknown; done: (err: Error | null) => void }[];
  busy: boolean;
  short: boolean;
}

/** WAIT timeout on a node whose last WAIT came back short. */
const SHORT_WAIT_MS = 20;

/** How long `healthCheck()` reports writes whose replication could not be confirmed. */
export const UNREPLICATED_REPORT_MS = 60_000;
/** How often a Cluster transport probes every partition's node. */
const PROBE_EVERY_MS = 1000;

/** Resolves with `p`'s value, or `fallback` after `ms`. */
function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function createClient(o: ResolvedOptions): RedisClient {
  return o.cluster ? new Cluster(o.cluster.nodes, o.cluster.options) : new Redis(o.redis);
}

/** Whether a field name is the one-byte name `c` (compared on bytes: no string per field). */
function isField(name: Buffer, c: number): boolean {
  return name.length === 1 && name[0] === c;
}
const FIELD_E = 0x65; // 'e': the frame
const FIELD_T = 0x74; // 't': publish time, ms

const FIELD_O = 0x6f; // 'o': the publisher's clock (see RedisStreamsTransport.tick)
const FIELD_P = 0x70; // 'p': the publisher's id

/**
 * Where an entry read back for history or replay stands in publish order: the
 * publisher's clock and id (fields `o`, `p`), then the stream id and key. An
 * entry written without them (before this field existed, a promoted retry, a
 * redrive) stands at its stream id's time (ms * 1000 + sequence, capped), as
 * if published then by a publisher sorting first.
 */
interface Ordered {
  o: number;
  p: string;
  id: string;
  key: string;
  event: AgentEvent;
}

/** The frame (field `e`) and order of a stream entry read back for history or replay. */
function entryOf(
  key: string,
  idBuf: Buffer,
  fields: Buffer[] | null,
): { frame: Buffer | undefined; order: Omit<Ordered, 'event'> } {
  let frame: Buffer | undefined;
  let o: number | undefined;
  let p = '';
  if (fields)
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const k = fields[i]!;
      if (isField(k, FIELD_E)) frame = fields[i + 1]!;
      else if (isField(k, FIELD_O)) o = Number(fields[i + 1]!.toString('latin1'));
      else if (isField(k, FIELD_P)) p = fields[i + 1]!.toString();
    }
  const id = idBuf.toString('latin1');
  if (o === undefined || !Number.isFinite(o)) {
    const dash = id.indexOf('-');
    o = Number(id.slice(0, dash)) * 1000 + Math.min(999, Number(id.slice(dash + 1)));
    p = '';
  }
  return { frame, order: { o, p, id, key } };
}

/** Publish order across streams and masters: publisher clock, publisher id, then stream id and key. */
export function comparePublishOrder(a: Omit<Ordered, 'event'>, b: Omit<Ordered, 'event'>): number {
  if (a.o !== b.o) return a.o - b.o;
  if (a.p !== b.p) return a.p < b.p ? -1 : 1;
  return compareIds(a.id, b.id) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** Compares two stream ids (`ms-seq`). */
export function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-');
  const [bm, bs] = b.split('-');
  return Number(am) - Number(bm) || Number(as) - Number(bs);
}

/**
 * Redis Streams transport: at-least-once delivery with consumer groups.
 *
 * - Publish is XADD, coalesced per tick into one pipeline per partition.
 * - Each bus instance reads every stream with its own consumer group (broadcast);
 *   a group's members share one consumer group and each entry goes to one member.
 * - An entry is XACKed only after the bus settles it; dead-lettering is one Lua
 *   script (XADD to the dead-letter stream + XACK).
 * - Entries a dead consumer held are claimed by a live member after
 *   `claimIdleMs`; entries still being handled have their idle time refreshed so
 *   they are not stolen mid-handler. Delivery counts come from Redis, so the
 *   attempt number survives crashes; past `maxDeliveries` an entry is
 *   dead-lettered without calling handlers.
 * - Five streams per partition, one per priority; every read takes from all
 *   five, so a CRITICAL entry is read on the next read however long the BULK
 *   backlog is, and the bus's weighted-fair queue does the rest.
 * - After a Redis restart or failover, missing groups are re-created and
 *   reading resumes by itself.
 * - Long retries (`scheduleRetry`, `nack(delay)` of at least
 *   `scheduleNackAboveMs`) wait in a sorted set per partition, not in memory;
 *   every transport promotes due ones into the streams with one script, so a
 *   crash loses none and none is published twice.
 */
export class RedisStreamsTransport implements Transport {
  readonly name: string = 'redis-streams';
  readonly capabilities: TransportCapabilities = CAPABILITIES;
  readonly options: ResolvedOptions;
  readonly keys: Keys;
  readonly serializer: Serializer;
  readonly deadLetters: RedisDeadLetterStore;
  client: RedisClient | null = null;
  nodeId = 'redis';
  logger: Logger = noopLogger;
  private reportError: (e: Error) => void = () => {};
  private connected = false;
  private closed = false;
  private readonly consumers = new Set<StreamConsumer>();
  private pending: PendingPublish[] = [];
  private flushScheduled = false;
  private inFlightEvents = 0;
  private publishWaiters: (() => void)[] = [];
  private lastErrorAt = 0;
  readonly counters = {
    published: 0,
    delivered: 0,
    acked: 0,
    redelivered: 0,
    deadLettered: 0,
    claimed: 0,
    trimmedWhilePending: 0,
    /** Entries trimmed before some consumer group read them (a group lagged past maxLen + retainUnread). */
    trimmedUnread: 0,
    decodeErrors: 0,
    /** Retries stored in the delayed sets (`scheduleRetry`, long `nack(delay)`). */
    scheduled: 0,
    /** Scheduled retries this transport moved into the streams when due. */
    promoted: 0,
    /** Events whose publish passed `publishTimeoutMs` (rejected with TIMEOUT). */
    publishTimeouts: 0,
    /** Of those, events Redis applied after all (sent before the deadline, answered after it). */
    publishedAfterTimeout: 0,
    /** Events whose replication WAIT confirmed (option `replicas`). */
    replicated: 0,
    /** Events written to the master whose replication could not be confirmed (WAIT: fewer than `replicas.wait`). */
    unreplicated: 0,
    /** Times a Cluster partition became unavailable (its node failed a read or a probe). */
    partitionOutages: 0,
    /** Consumer groups found missing and re-created: Redis lost its data (see `groupLost`). */
    groupsLost: 0,
    /** Events of publish calls sent again after a reconnect whose first sending had been applied: not written twice. */
    repeatedPublishes: 0,
  };
  /** Cluster partitions whose node does not answer, since when and why (see `markPartition`). */
  private readonly partitionsDown = new Map<number, { since: number; error: string; seen: number }>();
  /**
   * Orders what was learnt about partitions: every answer or failure takes the
   * next number when it arrives, and an answer clears only a failure seen
   * before it (a probe round that began before an outage must not clear it).
   */
  private observations = 0;
  private prober: NodeJS.Timeout | null = null;
  private probing: Promise<void> | null = null;
  /** The last unreplicated write, for health: `{ at, events, acked, wanted }`. */
  private lastUnreplicated: { at: number; events: number; acked: number; wanted: number } | null = null;
  private promoter: NodeJS.Timeout | null = null;
  private promoting = false;
  /** This publisher's id in its entries (field `p`): node id and a random tag per transport. */
  publisherId = '';
  /** The last value of this publisher's clock (`tick`). */
  private clock = 0;
  /** Publish script calls made, for each call's mark (see PUBLISH_6). */
  private publishCalls = 0;

  constructor(options: RedisTransportOptions = {}) {
    this.options = resolveOptions(options);
    this.keys = new Keys(this.options.keyPrefix, this.options.partitions);
    this.serializer = createSerializer(this.options.serialization);
    this.deadLetters = new RedisDeadLetterStore(this);
  }

  get scripts(): ScriptCommands {
    return this.requireClient() as unknown as ScriptCommands;
  }

  requireClient(): RedisClient {
    if (!this.client || this.closed) throw new NotConnectedError('redis transport is not connected');
    return this.client;
  }

  /** A new connection of the same kind, for a blocking reader. */
  duplicate(): RedisClient {
    const c = this.requireClient();
    return c instanceof Cluster
      ? c.duplicate()
      : c.duplicate({ maxRetriesPerRequest: null, lazyConnect: true });
  }

  async connect(context: TransportContext): Promise<void> {
    if (this.closed) throw new ClosedError('this redis transport was closed; create a new one');
    if (this.connected) return;
    this.nodeId = context.nodeId;
    this.publisherId = `${context.nodeId}/${randomBytes(4).toString('hex')}`;
    this.logger = context.logger;
    this.reportError = context.onError;
    const client = createClient(this.options);
    client.defineCommand('qeDeadLetter', { numberOfKeys: 2, lua: DEAD_LETTER_2 });
    client.defineCommand('qeRedrive', { numberOfKeys: 2, lua: REDRIVE_2 });
    client.defineCommand('qeSchedule', { numberOfKeys: 2, lua: SCHEDULE_2 });
    client.defineCommand('qePromote', { numberOfKeys: 6, lua: PROMOTE_6 });
    client.on('error', (err: Error) => this.throttledError(err));
    this.client = client;
    try {
      await client.connect();
      await client.ping();
    } catch (err) {
      client.disconnect();
      this.client = null;
      throw new TransportError(`cannot connect to Redis: ${(err as Error).message}`, { cause: err });
    }
    this.connected = true;
    // every transport promotes: whoever is alive publishes a due retry, and the script makes it once
    this.promoter = setInterval(() => {
      if (!this.promoting) void this.track(this.promoteDue().then(() => {}));
    }, this.options.delayedPollMs);
    this.promoter.unref();
    if (client instanceof Cluster) {
      this.prober = setInterval(() => void this.probePartitions(), PROBE_EVERY_MS);
      this.prober.unref();
    }
  }

  /**
   * A consumer found its group missing and re-created it: Redis lost its data
   * (a restart without persistence, a failover before replication), and what
   * the group had not read is gone. Counted (`groupsLost`), logged, reported.
   */
  groupLost(group: string): void {
    this.counters.groupsLost++;
    this.logger.warn('consumer group missing: Redis lost its data; re-created it', { group });
    this.reportError(
      new TransportError(
        `redis: consumer group ${group} was missing and has been re-created: Redis lost its data (a restart without persistence, or a failover before replication); entries stored before the loss are gone`,
        { details: { group } },
      ),
    );
  }

  /** Connection errors come in bursts while Redis is away: report at most one per second. */
  throttledError(err: Error): void {
    const now = Date.now();
    if (now - this.lastErrorAt < 1000) return;
    this.lastErrorAt = now;
    this.logger.warn('redis connection error', { error: err.message });
    this.reportError(new TransportError(`redis: ${err.message}`, { cause: err }));
  }

  /**
   * The connection's real state; on a Cluster also false while some partition's
   * node does not answer (its events can be neither published nor read, see
   * `unavailablePartitions()`).
   */
  isConnected(): boolean {
    return (
      this.connected &&
      !this.closed &&
      this.client !== null &&
      this.client.status === 'ready' &&
      this.partitionsDown.size === 0
    );
  }

  // ------------------------------------------------------------------ cluster partitions

  /** Partitions (Cluster) whose node does not answer now, with their slot and node. */
  unavailablePartitions(): {
    partition: number;
    slot: number;
    node: string | undefined;
    since: number;
    error: string;
  }[] {
    return [...this.partitionsDown]
      .sort(([a], [b]) => a - b)
      .map(([partition, d]) => ({
        partition,
        ...this.partitionWhere(partition),
        since: d.since,
        error: d.error,
      }));
  }

  isPartitionDown(p: number): boolean {
    return this.partitionsDown.has(p);
  }

  /** The slot of a partition and the node ioredis routes it to (`host:port`). */
  partitionWhere(p: number): { slot: number; node: string | undefined } {
    const slot = keySlot(this.keys.tag(p));
    const c = this.client;
    return { slot, node: c instanceof Cluster ? c.slots[slot]?.[0] : undefined };
  }

  /**
   * What a read, a publish or a probe learnt about partition `p`'s node on a
   * Cluster: `err` marks it unavailable (logged and reported as an error once
   * per outage), `null` available again.
   */
  markPartition(p: number, err: Error | null, seen: number = this.nextObservation()): void {
    if (!this.options.cluster || this.closed) return;
    const was = this.partitionsDown.get(p);
    if (err) {
      if (was) {
        was.error = err.message;
        was.seen = Math.max(was.seen, seen);
        return;
      }
      this.partitionsDown.set(p, { since: Date.now(), error: err.message, seen });
      this.counters.partitionOutages++;
      const { slot, node } = this.partitionWhere(p);
      const down = [...this.partitionsDown.keys()].sort((a, b) => a - b);
      this.logger.warn('redis cluster degraded: a partition is unavailable', {
        partition: p,
        slot,
        node,
        unavailable: down,
        error: err.message,
      });
      this.reportError(
        new TransportError(
          `redis cluster degraded: partition ${p} (slot ${slot}${node ? ` on ${node}` : ''}) unavailable: ${err.message}`,
          { cause: err, details: { partition: p, slot, node, unavailable: down } },
        ),
      );
    } else if (was && seen > was.seen) {
      this.partitionsDown.delete(p);
      this.logger.info('redis cluster: partition available again', {
        partition: p,
        downMs: Date.now() - was.since,
      });
    }
  }

  /** The next observation number (see `markPartition`). */
  nextObservation(): number {
    return ++this.observations;
  }

  /** One cheap keyed command (EXISTS) to partition `p`'s node, bounded by `probeTimeoutMs`. */
  private probePartition(client: RedisClient, p: number): Promise<{ err: Error | null; seen: number }> {
    const key = this.keys.stream(p, 0);
    const cmd = new LeanCommand('exists', [key], key, false);
    const ms = this.options.probeTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      dispatch(client, cmd).then(
        () => ({ err: null, seen: this.nextObservation() }),
        (e: Error) => ({ err: e, seen: this.nextObservation() }),
      ),
      new Promise<{ err: Error; seen: number }>((r) => {
        timer = setTimeout(() => {
          const e = new Error(`no answer within ${ms} ms`);
          cmd.cancel(e);
          r({ err: e, seen: this.nextObservation() });
        }, ms);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /**
   * Probes every partition's node at once (Cluster; every second, and by
   * `healthCheck()`), so an outage is known within about `probeTimeoutMs` even
   * on a node that only publishes. Concurrent callers share one round;
   * `fresh` waits for a round that was already under way and runs a new one
   * (the bound is then twice `probeTimeoutMs`).
   */
  probePartitions(options: { fresh?: boolean } = {}): Promise<void> {
    const client = this.client;
    if (!(client instanceof Cluster) || this.closed) return Promise.resolve();
    if (options.fresh && this.probing) {
      // a round already under way may have sent its commands before what the caller wants to know
      return this.probing.then(() => this.probePartitions());
    }
    this.probing ??= (async () => {
      try {
        const answers = await Promise.all(
          Array.from({ length: this.keys.partitions }, (_, p) => this.probePartition(client, p)),
        );
        for (let p = 0; p < answers.length; p++) this.markPartition(p, answers[p]!.err, answers[p]!.seen);
      } finally {
        this.probing = null;
      }
    })();
    return this.probing;
  }

  /**
   * Stops the consumers, writes the publishes of this tick, flushes the acks of
   * everything settled (those of the last tick included) and waits for them,
   * then quits. Returns within `timeoutMs` (default `closeTimeoutMs`) whatever
   * Redis does: past it, the connections are dropped and what was not
   * confirmed stays as it is (unacked entries are redelivered; unconfirmed
   * publishes reject).
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopPromoter();
    const timeoutMs = Math.max(0, options.timeoutMs ?? this.options.closeTimeoutMs);
    const c = this.client;
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = await Promise.race([
      this.drainForClose().then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    this.client = null;
    this.connected = false;
    if (!c) return;
    if (gaveUp) {
      this.logger.warn('redis transport: close timed out; dropping the connections', {
        timeoutMs,
        pendingPublishes: this.inFlightEvents,
        backgroundWrites: this.tracked,
      });
      for (const consumer of this.consumers) consumer.kill();
      c.disconnect();
      return;
    }
    // QUIT is answered after everything sent before it; a Redis that stopped answering gets no longer than the rest
    const quitBy = new Promise<void>((r) => {
      timer = setTimeout(r, Math.max(0, timeoutMs));
    });
    await Promise.race([c.quit().catch(() => {}), quitBy]);
    clearTimeout(timer);
    c.disconnect();
  }

  /** Everything a clean close waits for: consumers, this tick's publishes, every ack flush. */
  private async drainForClose(): Promise<void> {
    await Promise.all([...this.consumers].map((c) => c.close()));
    if (this.pending.length > 0) await this.flush();
    // acks are flushed once per tick (setImmediate): let the ones scheduled run, then wait for them
    do {
      await new Promise((r) => setImmediate(r));
      await Promise.race([this.trackedDone(), sleep(5)]);
    } while (
      this.client !== null && // null: close() gave up waiting
      (this.inFlightEvents > 0 || this.tracked > 0 || this.ackFlushesScheduled > 0)
    );
  }

  /** Consumers (open or closed) with an ack flush scheduled and not started yet. */
  ackFlushesScheduled = 0;

  /**
   * Drops every connection at once, with no acks and no clean-up, as a crashed
   * process would. For fault tests; the transport is unusable afterwards.
   */
  async kill(): Promise<void> {
    this.closed = true;
    this.stopPromoter();
    for (const c of this.consumers) c.kill();
    this.client?.disconnect();
    this.client = null;
    this.connected = false;
  }

  private stopPromoter(): void {
    if (this.promoter) clearInterval(this.promoter);
    this.promoter = null;
    if (this.prober) clearInterval(this.prober);
    this.prober = null;
  }

  // ------------------------------------------------------------------ delayed retries

  /**
   * A member of a delayed set: priority digit, random id, `:`, then the frame.
   * The random id keeps two identical events scheduled together apart.
   */
  delayedMember(event: AgentEvent): Buffer {
    const level = event.priority >= 0 && event.priority <= 4 ? event.priority : 2;
    const header = Buffer.from(`${level}${randomBytes(8).toString('hex')}:`, 'latin1');
    if (header.length !== DELAYED_HEADER_LEN) throw new Error('delayed member header has the wrong length');
    return Buffer.concat([header, this.serializer.encode(event)]);
  }

  /**
   * Stores a retry in the partition's delayed set (script `schedule-2`); the
   * promoter publishes it to the event's stream after `delayMs`, tagged for
   * `target` (see `Transport.scheduleRetry`). Resolves once Redis stored it.
   */
  async scheduleRetry(event: AgentEvent, target: RetryTarget, delayMs: number): Promise<void> {
    const part = this.keys.partitionFor(event.agentId);
    try {
      const member = this.delayedMember(retryEventFor(event, target));
      await this.scripts.qeSchedule(
        this.keys.delayed(part),
        this.keys.stream(part, event.priority),
        Math.max(0, Math.ceil(delayMs)),
        member,
        '',
        '',
      );
    } catch (err) {
      throw err instanceof EventBusError
        ? err
        : new TransportError(`cannot schedule a retry of ${event.id}: ${(err as Error).message}`, {
            cause: err,
          });
    }
    this.counters.scheduled++;
  }

  /**
   * Moves due scheduled retries into the streams (script `promote-6`), every
   * partition, a page at a time. Runs on a timer; exposed for tests. Returns
   * how many it moved.
   */
  async promoteDue(): Promise<number> {
    const client = this.client;
    if (this.promoting || this.closed || !client || client.status !== 'ready') return 0;
    this.promoting = true;
    let moved = 0;
    try {
      const scripts = client as unknown as ScriptCommands;
      await Promise.all(
        Array.from({ length: this.keys.partitions }, async (_, p) => {
          const [s0, s1, s2, s3, s4] = this.keys.streams(p) as [string, string, string, string, string];
          // bounded: a huge due backlog is moved over several ticks, never in one long burst
          for (let page = 0; page < 10; page++) {
            const n = Number(await scripts.qePromote(this.keys.delayed(p), s0, s1, s2, s3, s4, PROMOTE_PAGE));
            moved += n;
            if (n < PROMOTE_PAGE) break;
          }
        }),
      );
    } catch (err) {
      // the members stay in the set; the next tick (of this or another process) moves them
      if (!this.closed) this.throttledError(err as Error);
    } finally {
      this.promoting = false;
      this.counters.promoted += moved;
    }
    return moved;
  }

  // ------------------------------------------------------------------ publish

  /**
   * The next value of this publisher's hybrid logical clock (field `o` of each
   * entry): wall-clock microseconds, strictly increasing from event to event in
   * publish order, and never behind an entry this transport has read (`observe`),
   * so an event published in reaction to another comes after it. History and
   * replay order entries by it, ties broken by publisher id.
   */
  tick(): number {
    const now = Date.now() * 1000;
    this.clock = now > this.clock ? now : this.clock + 1;
    return this.clock;
  }

  /** Moves this publisher's clock past a clock value read from an entry. */
  observe(o: number): void {
    if (o > this.clock) this.clock = o;
  }

  publish(events: readonly AgentEvent[], options?: PublishOptions): Promise<void> {
    if (this.closed || !this.client)
      return Promise.reject(new NotConnectedError('redis transport is not connected'));
    if (events.length === 0) return Promise.resolve();
    if (this.inFlightEvents + events.length > this.options.maxPendingPublishes && this.inFlightEvents > 0) {
      if (options?.onFull === 'fail')
        return Promise.reject(
          new QueueFullError(
            `${this.inFlightEvents} events are waiting for Redis (maxPendingPublishes ${this.options.maxPendingPublishes})`,
          ),
        );
      return this.waitForRoom(events.length).then(() => this.publish(events, options));
    }
    let frames: (Buffer | string)[];
    try {
      frames = events.map((e) => this.serializer.encodeWire(e));
    } catch (err) {
      return Promise.reject(err);
    }
    this.inFlightEvents += events.length;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({
        events,
        frames,
        t: String(epochNow()),
        resolve,
        reject,
        left: 0,
        error: undefined,
        confirmed: 0,
        timedOut: false,
      });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(() => void this.flush());
      }
    });
  }

  /** Waits for room among the publishes waiting for Redis, at most `publishTimeoutMs`. */
  private waitForRoom(n: number): Promise<void> {
    const ms = this.options.publishTimeoutMs;
    return new Promise<void>((resolve, reject) => {
      const waiter = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.publishWaiters = this.publishWaiters.filter((w) => w !== waiter);
        reject(
          new TimeoutError(
            `${n} events waited ${ms} ms for room among ${this.inFlightEvents} publishes waiting for Redis (maxPendingPublishes ${this.options.maxPendingPublishes})`,
            { details: { stored: 'none', timeoutMs: ms } },
          ),
        );
      }, ms);
      this.publishWaiters.push(waiter);
    });
  }

  /** Retention as the publish script's three trim arguments: strategy, threshold, cap. */
  private trimArgs(): [string, string, string] {
    const o = this.options;
    const cap = String(o.maxLen + o.retainUnread);
    return o.ttlMs === undefined
      ? ['MAXLEN', String(o.maxLen), cap]
      : ['MINID', `${Math.max(0, Date.now() - o.ttlMs)}-0`, cap];
  }

  /**
   * Writes every waiting publish: per partition, one `publish-5` script call
   * per `PUBLISH_CHUNK` events (one request, one small reply), in publish
   * order. A failed call rejects the publishes it carried; entries it wrote
   * before failing stay (at-least-once: a retried publish may duplicate them).
   * A call not answered within `publishTimeoutMs` rejects them with
   * `TIMEOUT`; if it was not sent yet it never is (`LeanCommand.cancel`).
   */
  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const client = this.client;
    if (!client) {
      for (const p of batch)
        this.finishPublish(p, new NotConnectedError('redis transport closed'), p.events.length);
      return;
    }
    const trim = this.trimArgs();
    const keys = this.keys;
    const replicas = this.options.replicas;
    const calls: Promise<void>[] = [];
    const chunks: Chunk[] = [];
    const timeoutMs = this.options.publishTimeoutMs;
    // a call is never sent again past its deadline (cancelled, it goes out as a PING), so its mark
    // need outlive it only by the time a reconnect takes to resend
    const markTtl = String(timeoutMs + 30_000);
    // built only when a deadline passes (an Error captures a stack): not once per flush
    const timeout = () => new TimeoutError(`publish not confirmed by Redis within ${timeoutMs} ms`);
    // one argument list per partition under construction; a full one is sent at once
    const open = new Map<number, Chunk>();
    const sendChunk = (part: number, chunk: Chunk) => {
      const { args, owners } = chunk;
      chunks.push(chunk);
      const onSend = (cmd: LeanCommand) => {
        chunk.cmd = cmd;
        if (chunk.done) cmd.cancel(timeout()); // an EVAL after NOSCRIPT, past the deadline
      };
      calls.push(
        runScript(
          client,
          PUBLISH_6_SCRIPT,
          [
            ...keys.streams(part),
            keys.published(part, `${this.publisherId}:${++this.publishCalls}`),
            trim[0],
            trim[1],
            trim[2],
            this.publisherId,
            markTtl,
            ...args,
          ],
          onSend,
        ).then(
          async (reply) => {
            // a repeat of a call already applied (sent again after a reconnect): nothing written twice
            if ((reply as unknown[] | null)?.[2] === 1) this.counters.repeatedPublishes += owners.length;
            if (chunk.done) {
              // sent, then timed out, then applied after all: the caller was told `unknown`
              this.counters.publishedAfterTimeout += owners.length;
              return;
            }
            const lost = Number((reply as [number, number] | null)?.[1] ?? 0);
            if (lost > 0) this.noteTrimmedUnread(lost);
            // replicated acks: resolve only once enough replicas have the chunk
            const unreplicated = replicas
              ? await this.waitReplicas(client, part, owners.length, chunk.cmd?.writtenOn)
              : null;
            if (chunk.done) return; // the publish deadline passed meanwhile: the caller was told `unknown`
            chunk.done = true;
            for (const p of owners) this.finishPublish(p, unreplicated, 1);
          },
          (err: Error) => {
            if (chunk.done) return;
            chunk.done = true;
            for (const p of owners) this.finishPublish(p, err, 1);
          },
        ),
      );
    };
    for (const p of batch) {
      p.left = p.events.length;
      for (let i = 0; i < p.events.length; i++) {
        const ev = p.events[i]!;
        const part = keys.partitionFor(ev.agentId);
        let chunk = open.get(part);
        if (!chunk) open.set(part, (chunk = { args: [], owners: [], cmd: null, done: false }));
        chunk.args.push(LEVEL_ARG[ev.priority]!, p.t, String(this.tick()), p.frames[i]!);
        chunk.owners.push(p);
        if (chunk.owners.length >= PUBLISH_CHUNK) {
          sendChunk(part, chunk);
          open.delete(part);
        }
      }
    }
    for (const [part, chunk] of open) sendChunk(part, chunk);
    const timer = setTimeout(() => {
      for (const chunk of chunks) {
        if (chunk.done) continue;
        chunk.done = true;
        const err = timeout();
        const unseen = chunk.cmd === null || chunk.cmd.cancel(err);
        this.counters.publishTimeouts += chunk.owners.length;
        for (const p of chunk.owners) {
          if (!unseen || p.timedOut !== 'unknown') p.timedOut = unseen ? 'none' : 'unknown';
          this.finishPublish(p, err, 1);
        }
      }
    }, timeoutMs);
    await Promise.all(calls);
    clearTimeout(timer);
  }

  /**
   * Resolves once `WAIT wait timeoutMs`, sent on the connection of partition
   * `part`'s node after its publish script there (so it covers that write),
   * has answered: null when enough replicas confirmed, otherwise the error the
   * chunk's publishes reject with (the write is on the master; counted, logged
   * and reported by health as unreplicated).
   *
   * WAIT blocks the node's connection, so there is at most one per node at a
   * time: chunks confirmed by the master meanwhile wait for the next one,
   * which covers them all. While the last WAIT on a node came back short (a
   * replica missing, a promoted master without one) the next ones wait only
   * `SHORT_WAIT_MS`, so what is queued behind them on that node is not held up
   * `timeoutMs` each time.
   */
  private waitReplicas(
    client: RedisClient,
    part: number,
    events: number,
    socket: unknown,
  ): Promise<Error | null> {
    const key = this.keys.stream(part, 0);
    const node = nodeOf(client, key);
    let w = this.replicaWaits.get(node);
    if (!w) this.replicaWaits.set(node, (w = { queue: [], busy: false, short: false }));
    const waiter = w;
    return new Promise<Error | null>((done) => {
      waiter.queue.push({ events, part, socket, done });
      if (!waiter.busy) void this.runWaits(node, key, waiter);
    });
  }

  private async runWaits(node: RedisClient, key: string, w: ReplicaWaits): Promise<void> {
    w.busy = true;
    const { wait } = this.options.replicas!;
    while (w.queue.length > 0) {
      const batch = w.queue;
      w.queue = [];
      const timeoutMs = w.short ? SHORT_WAIT_MS : this.options.replicas!.timeoutMs;
      const cmd = new OnceCommand('wait', [wait, timeoutMs], key, false);
      let acked = -1;
      let err: Error | null = null;
      try {
        acked = Number(await dispatch(node, cmd));
        if (acked < wait)
          err = new TimeoutError(
            `publish written but confirmed by ${acked} of ${wait} replicas within ${timeoutMs} ms (a failover may lose it)`,
            { details: { stored: 'unreplicated', replicas: acked, wanted: wait, timeoutMs } },
          );
      } catch (e) {
        err = new TransportError(
          `publish written but its replication could not be confirmed: ${(e as Error).message}`,
          {
            cause: e,
            details: { stored: 'unreplicated', replicas: null, wanted: wait },
          },
        );
      }
      w.short = err !== null;
      let confirmed = 0;
      let unconfirmed = 0;
      const parts = new Set<number>();
      let moved: Error | undefined;
      for (const b of batch) {
        // the connection dropped between the script and the WAIT: this WAIT says nothing of it
        const e =
          err ??
          (b.socket === cmd.writtenOn
            ? null
            : (moved ??= new TransportError(
                'publish written but the connection changed before WAIT: its replication could not be confirmed',
                { details: { stored: 'unreplicated', replicas: null, wanted: wait } },
              )));
        if (e) {
          unconfirmed += b.events;
          parts.add(b.part);
        } else confirmed += b.events;
        b.done(e);
      }
      this.counters.replicated += confirmed;
      if (unconfirmed > 0)
        this.noteUnreplicated([...parts], unconfirmed, acked, wait, timeoutMs, err ?? moved!);
    }
    w.busy = false;
  }

  private noteUnreplicated(
    partitions: number[],
    events: number,
    acked: number,
    wait: number,
    timeoutMs: number,
    err: Error,
  ): void {
    this.counters.unreplicated += events;
    const now = Date.now();
    this.lastUnreplicated = { at: now, events, acked, wanted: wait };
    if (now - this.unreplicatedLoggedAt < 1000) return;
    this.unreplicatedLoggedAt = now;
    this.logger.warn('redis: publish not confirmed by enough replicas', {
      partitions,
      events,
      replicas: acked,
      wanted: wait,
      timeoutMs,
      unreplicatedTotal: this.counters.unreplicated,
      error: err.message,
    });
  }

  private unreplicatedLoggedAt = 0;
  /** One WAIT at a time per node connection (see `waitReplicas`). */
  private readonly replicaWaits = new Map<RedisClient, ReplicaWaits>();

  private noteTrimmedUnread(n: number): void {
    this.counters.trimmedUnread += n;
    this.logger.warn('stream trimmed past entries a consumer group had not read', {
      entries: n,
      hint: 'a group lags by more than maxLen + retainUnread (a stale group of a crashed node counts too)',
    });
  }

  private finishPublish(p: PendingPublish, err: Error | null, n: number): void {
    if (err && !p.error) p.error = err;
    if (!err) p.confirmed += n;
    p.left -= n;
    this.inFlightEvents -= n;
    if (p.left > 0) return;
    if (p.timedOut) {
      const ms = this.options.publishTimeoutMs;
      const stored = p.timedOut === 'unknown' ? 'unknown' : p.confirmed > 0 ? 'partial' : 'none';
      p.reject(
        new TimeoutError(
          `publish of ${p.events.length} events not confirmed by Redis within ${ms} ms (stored: ${stored})`,
          { details: { stored, confirmed: p.confirmed, events: p.events.length, timeoutMs: ms } },
        ),
      );
    } else if (p.error) {
      p.reject(
        p.error instanceof EventBusError
          ? p.error
          : new TransportError(`redis rejected a publish: ${p.error.message}`, { cause: p.error }),
      );
    } else {
      this.counters.published += p.events.length;
      p.resolve();
    }
    if (this.publishWaiters.length > 0 && this.inFlightEvents < this.options.maxPendingPublishes)
      for (const w of this.publishWaiters.splice(0)) w();
  }

  // ------------------------------------------------------------------ consume

  async consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
    this.requireClient();
    const c = new StreamConsumer(this, spec, sink);
    this.consumers.add(c);
    try {
      await c.open();
    } catch (err) {
      this.consumers.delete(c);
      await c.close();
      throw err instanceof EventBusError
        ? err
        : new TransportError(`cannot open consumer ${spec.id}: ${(err as Error).message}`, { cause: err });
    }
    return c;
  }

  /** Background writes under way (ack flushes, retry schedules); a count, not a Set (see SlotList). */
  private tracked = 0;
  private trackedIdle: (() => void)[] = [];

  /** Keeps a background write (an ack flush) visible to `close()`, which waits for it. */
  track(p: Promise<void>): Promise<void> {
    this.tracked++;
    const done = () => {
      if (--this.tracked > 0) return;
      const waiters = this.trackedIdle;
      this.trackedIdle = [];
      for (const w of waiters) w();
    };
    p.then(done, done);
    return p;
  }

  /** Resolves once no tracked write is under way. */
  private trackedDone(): Promise<void> {
    return this.tracked === 0 ? Promise.resolve() : new Promise((r) => this.trackedIdle.push(r));
  }

  forget(c: StreamConsumer): void {
    this.consumers.delete(c);
  }

  /** Decodes a frame, counting failures. */
  decode(frame: Buffer): AgentEvent | undefined {
    try {
      return this.serializer.decode(frame);
    } catch (err) {
      this.counters.decodeErrors++;
      this.logger.warn('undecodable stream entry', { error: (err as Error).message });
      return undefined;
    }
  }

  // ------------------------------------------------------------------ history

  /**
   * The last `limit` matching events, oldest first, in publish order across
   * every stream and master (see `comparePublishOrder`): each stream is read
   * newest first (XREVRANGE) up to `limit` matches, then merged.
   */
  async getRecentEvents(query: HistoryQuery = {}): Promise<AgentEvent[]> {
    const client = this.requireClient();
    const limit = query.limit ?? 100;
    const matcher = query.pattern === undefined ? undefined : compilePattern(query.pattern);
    const end = '+';
    const start = query.since === undefined ? '-' : `${Math.max(0, Math.floor(query.since))}-0`;
    const found: Ordered[] = [];
    const page = Math.max(100, Math.min(limit * 4, 2000));
    const scanCap = 50_000;
    await Promise.all(
      this.keys.allStreams().map(async (key) => {
        let upper = end;
        let scanned = 0;
        let kept = 0;
        while (scanned < scanCap && kept < limit) {
          const rows = (await send(
            client,
            'xrevrange',
            [key, upper, start, 'COUNT', page],
            key,
            true,
          )) as RawEntry[];
          if (rows.length === 0) break;
          for (const [idBuf, fields] of rows) {
            const { frame, order } = entryOf(key, idBuf, fields);
            if (!frame) continue;
            const event = this.decode(frame);
            if (!event || (matcher && !matcher.matches(event.type))) continue;
            found.push({ ...order, event });
            kept++;
          }
          scanned += rows.length;
          const last = rows[rows.length - 1]![0].toString();
          upper = `(${last}`;
          if (rows.length < page) break;
        }
      }),
    );
    found.sort(comparePublishOrder);
    return found.slice(-limit).map((f) => f.event);
  }

  /** Calls `onEvent` in publish order across every stream and master (see `comparePublishOrder`). */
  async replay(query: ReplayQuery, onEvent: (event: AgentEvent) => void | Promise<void>): Promise<number> {
    const client = this.requireClient();
    const matcher = query.pattern === undefined ? undefined : compilePattern(query.pattern);
    const start = query.fromId ?? (query.from === undefined ? '-' : `${Math.floor(query.from)}-0`);
    const end = query.toId ?? (query.to === undefined ? '+' : `${Math.floor(query.to)}-99999999999`);
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    const rows: Ordered[] = [];
    await Promise.all(
      this.keys.allStreams().map(async (key) => {
        let lower = start;
        for (;;) {
          const page = (await send(
            client,
            'xrange',
            [key, lower, end, 'COUNT', 1000],
            key,
            true,
          )) as RawEntry[];
          for (const [idBuf, fields] of page) {
            const { frame, order } = entryOf(key, idBuf, fields);
            const event = frame && this.decode(frame);
            if (event && (!matcher || matcher.matches(event.type))) rows.push({ ...order, event });
          }
          if (page.length < 1000) break;
          lower = `(${page[page.length - 1]![0].toString()}`;
        }
      }),
    );
    rows.sort(comparePublishOrder);
    let n = 0;
    for (const r of rows) {
      if (n >= limit) break;
      await onEvent(r.event);
      n++;
    }
    return n;
  }

  // ------------------------------------------------------------------ health

  /**
   * Bounded: each step waits at most `probeTimeoutMs` (a ping or, on a
   * Cluster, one probe per partition's node, all at once; then the groups'
   * lag and the stream lengths of the partitions that answered). A Cluster
   * with partitions unavailable is `degraded` (`unhealthy` when none
   * answers), naming each partition, its slot and node in `reasons` and
   * `details.unavailable`.
   */
  async healthCheck(): Promise<TransportHealth> {
    const reasons: string[] = [];
    const client = this.client;
    if (!client || this.closed) return { status: 'unhealthy', connected: false, reasons: ['not connected'] };
    const bound = this.options.probeTimeoutMs;
    const started = performance.now();
    if (client instanceof Cluster) {
      await this.probePartitions({ fresh: true });
      if (this.partitionsDown.size >= this.keys.partitions)
        return {
          status: 'unhealthy',
          connected: false,
          reasons: [`redis cluster unreachable: no partition's node answered within ${bound} ms`],
          details: { status: client.status, mode: 'cluster', unavailable: this.unavailablePartitions() },
        };
    } else {
      try {
        await Promise.race([
          client.ping(),
          sleep(bound).then(() => {
            throw new Error(`ping timed out after ${bound} ms`);
          }),
        ]);
      } catch (err) {
        return {
          status: 'unhealthy',
          connected: false,
          reasons: [`redis unreachable: ${(err as Error).message}`],
          details: { status: client.status },
        };
      }
    }
    const latencyMs = performance.now() - started;
    const unavailable = this.unavailablePartitions();
    if (unavailable.length > 0)
      reasons.push(
        `redis cluster degraded: ${unavailable.length} of ${this.keys.partitions} partitions unavailable (` +
          unavailable
            .map((u) => `partition ${u.partition} slot ${u.slot}${u.node ? ` on ${u.node}` : ''}: ${u.error}`)
            .join('; ') +
          '); their events can be neither published nor read until the node or its replica is back',
      );
    const down = new Set(unavailable.map((u) => u.partition));
    const live = this.keys.allStreams().filter((k) => !down.has(this.keys.partitionOf(k)));
    const groups: Record<string, { pending: number; lag: number | null }> = {};
    const [lags, streamLength] = await Promise.all([
      Promise.all(
        [...this.consumers].map((c) =>
          within(
            c.lagAndPending(live).catch(() => ({ pending: -1, lag: null })),
            bound,
            { pending: -1, lag: null },
          ).then((r) => [c.group, r] as const),
        ),
      ),
      within(
        Promise.all(live.map((k) => client.xlen(k))).then(
          (lens) => lens.reduce((a, b) => a + b, 0),
          () => -1,
        ),
        bound,
        -1,
      ),
    ]);
    for (const [g, r] of lags) groups[g] = r;
    if (this.counters.trimmedUnread > 0)
      reasons.push(
        `${this.counters.trimmedUnread} entries were trimmed before a consumer group read them (a group lags past maxLen + retainUnread)`,
      );
    if (this.counters.trimmedWhilePending > 0)
      reasons.push(
        `${this.counters.trimmedWhilePending} entries were trimmed while still pending (raise maxLen/ttl)`,
      );
    if (this.inFlightEvents > this.options.maxPendingPublishes * 0.8)
      reasons.push(`publish backlog ${this.inFlightEvents}/${this.options.maxPendingPublishes}`);
    const u = this.lastUnreplicated;
    if (u && Date.now() - u.at < UNREPLICATED_REPORT_MS)
      reasons.push(
        `${this.counters.unreplicated} published events could not be confirmed on ${u.wanted} replicas ` +
          `(last ${new Date(u.at).toISOString()}: ${u.events} events, ${u.acked} replicas acknowledged); ` +
          'a failover may lose them',
      );
    return {
      status: reasons.length > 0 ? 'degraded' : 'healthy',
      connected: this.isConnected(),
      latencyMs,
      reasons,
      details: {
        groups,
        streamLength,
        mode: this.options.cluster ? 'cluster' : 'standalone',
        partitions: this.options.partitions,
        ordering: this.orderScope,
        ...(unavailable.length > 0 ? { unavailable } : {}),
        ...(this.options.replicas
          ? {
              replicas: {
                wait: this.options.replicas.wait,
                replicated: this.counters.replicated,
                unreplicated: this.counters.unreplicated,
                lastUnreplicated: u,
              },
            }
          : {}),
      },
    };
  }

  /**
   * What order a broadcast subscriber gets: `global` (one partition: every
   * publisher's events in publish order, across agents too) or `per-agentId`
   * (several partitions: one publisher's events of one `agentId` in order, not
   * across agents).
   */
  get orderScope(): 'global' | 'per-agentId' {
    return this.keys.partitions === 1 ? 'global' : 'per-agentId';
  }

  stats(): TransportStats {
    return {
      ...this.counters,
      pendingPublishes: this.inFlightEvents,
      // open connections, whether or not every partition answers (isConnected() also says that)
      connections: this.connected && this.client?.status === 'ready' ? 1 + this.consumers.size : 0,
      unavailablePartitions: this.partitionsDown.size,
      consumers: this.consumers.size,
    };
  }
}

/** An entry handed to the bus. Settling is idempotent. */
class RedisDelivery implements Delivery {
  settled = false;
  /** Its index in the consumer's in-flight SlotList, -1 when not there. */
  slot = -1;
  constructor(
    readonly consumer: StreamConsumer,
    readonly stream: string,
    readonly transportId: string,
    readonly frame: Buffer,
    readonly event: AgentEvent,
    readonly attempt: number,
    readonly publishedAt: number,
  ) {}

  ack(): void {
    if (this.settled) return;
    this.settled = true;
    this.consumer.settled(this);
    this.consumer.ack(this.stream, this.transportId);
  }

  nack(delayMs?: number): void {
    if (this.settled) return;
    this.settled = true;
    this.consumer.settled(this);
    this.consumer.redeliver(this, delayMs);
  }

  async deadLetter(info: DeadLetterInfo): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.consumer.settled(this);
    await this.consumer.deadLetter(this.stream, this.transportId, this.frame, this.event, info);
  }
}

/** One consumer group binding: read loop(s), acks, claims and heartbeats. */
class StreamConsumer implements TransportConsumer {
  readonly group: string;
  readonly identity: string;
  private readonly me: string;
  private closed = false;
  private paused = false;
  private resumeWaiters: (() => void)[] = [];
  /** Deliveries handed to the bus and not settled yet (their idle time is refreshed). */
  private readonly inflight = new SlotList<RedisDelivery>();
  /** Ids to XACK per stream at the next flush. Never cleared (see SlotList): arrays are swapped out. */
  private readonly ackBuf = new Map<string, string[]>();
  private ackScheduled = false;
  private readers: RedisClient[] = [];
  private loops: Promise<void>[] = [];
  private timers: NodeJS.Timeout[] = [];
  private recovering = false;
  /** Idle entries of others were left unclaimed (no free slot): the read loop claims them first. */
  private idleBacklog = false;
  /** Read loops waiting for a free slot (a group member holding all it can run). */
  private slotWaiters: (() => void)[] = [];
  /** Blocking reads under way, cancelled by close() so a read on a dead connection cannot hold it up. */
  private readonly reads = new Set<LeanCommand>();
  private wake: () => void = () => {};
  private readonly closedSignal = new Promise<void>((r) => {
    this.wake = r;
  });

  constructor(
    readonly transport: RedisStreamsTransport,
    readonly spec: ConsumerSpec,
    readonly sink: DeliverySink,
  ) {
    this.me = transport.nodeId;
    this.group = groupName(spec.id, spec.group, transport.nodeId);
    this.identity = bindingIdentity(spec.id, spec.group, transport.nodeId);
  }

  get id(): string {
    return this.spec.id;
  }

  private get streams(): string[] {
    return this.transport.keys.allStreams();
  }

  async open(): Promise<void> {
    await this.ensureGroups();
    await this.recover(true);
    const t = this.transport;
    const partitions = t.options.partitions;
    if (t.options.cluster) {
      // one loop per partition: a partition whose node is down holds up only its own loop
      for (let p = 0; p < partitions; p++) this.loops.push(this.pollLoop(p));
    } else {
      for (let p = 0; p < partitions; p++) {
        const reader = t.duplicate();
        this.readers.push(reader);
        reader.on('error', (e: Error) => t.throttledError(e));
        await reader.connect();
        this.loops.push(this.blockingLoop(reader, t.keys.streams(p)));
      }
    }
    const claimEvery = Math.max(50, Math.floor(t.options.claimIdleMs / 2));
    const extendEvery = Math.max(30, Math.floor(t.options.claimIdleMs / 3));
    this.timers.push(setInterval(() => void this.recover(false), claimEvery));
    this.timers.push(setInterval(() => void this.extend(), extendEvery));
    for (const timer of this.timers) timer.unref();
  }

  /**
   * Creates the consumer group on every stream (idempotent). `from` overrides
   * where a new group starts: after Redis lost its data, the recreated streams
   * hold only entries this group never saw, so it starts at `0`.
   */
  async ensureGroups(from?: '0' | '$'): Promise<void> {
    const client = this.transport.requireClient();
    const start = from ?? (this.spec.startFrom === 'earliest' ? '0' : '$');
    await Promise.all(
      this.streams.map((key) =>
        client.xgroup('CREATE', key, this.group, start, 'MKSTREAM').catch((err: Error) => {
          if (!/BUSYGROUP/.test(err.message)) throw err;
        }),
      ),
    );
  }

  private async waitUntilRunnable(): Promise<boolean> {
    while (!this.closed) {
      if (this.paused) {
        await new Promise<void>((r) => this.resumeWaiters.push(r));
        continue;
      }
      if (this.sink.capacity() <= 0) {
        await this.sink.ready();
        continue;
      }
      if (this.free() <= 0) {
        await this.slotFreed();
        continue;
      }
      if (this.idleBacklog) {
        await this.recover(false);
        if (this.free() <= 0) continue;
      }
      return true;
    }
    return false;
  }

  /**
   * Deliveries this consumer may still take: for a group, the free handler
   * slots of its members on this node (their concurrency minus what it holds
   * unsettled), so an idle member elsewhere gets the rest; unbounded for a
   * broadcast binding, which competes with nobody.
   */
  private free(): number {
    const concurrency = this.spec.group === null ? undefined : this.sink.concurrency?.();
    return concurrency === undefined ? Number.POSITIVE_INFINITY : concurrency - this.inflight.size;
  }

  /** Resolves when a delivery settles, the consumer closes, or after a while (members may have joined). */
  private slotFreed(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, Math.min(250, this.transport.options.blockMs));
      this.slotWaiters.push(done);
    });
  }

  /** XREADGROUP COUNT (per stream): the bus's room, and for a group no more than its free slots. */
  private readCount(): number {
    return Math.max(
      1,
      Math.min(this.transport.options.readCount, Math.floor(this.sink.capacity() / 5), this.free()),
    );
  }

  /**
   * A blocking read on a reader connection that close() can cancel: the
   * reader is dropped then, and a read waiting in its offline queue (Redis
   * down) would otherwise never settle.
   */
  private read(client: RedisClient, args: (string | number)[], key: string): Promise<RawRead> {
    const cmd = new LeanCommand('xreadgroup', args, key, true);
    this.reads.add(cmd);
    const p = dispatch(client, cmd) as Promise<RawRead>;
    const forget = () => void this.reads.delete(cmd);
    p.then(forget, forget);
    return p;
  }

  /** Sleeps `ms`, or less if the consumer closes. */
  private pause_(ms: number): Promise<void> {
    return Promise.race([sleep(ms), this.closedSignal]);
  }

  private async blockingLoop(reader: RedisClient, keys: string[]): Promise<void> {
    const ids = keys.map(() => '>');
    let backoff = 0;
    while (await this.waitUntilRunnable()) {
      try {
        const res = await this.read(
          reader,
          [
            'GROUP',
            this.group,
            this.me,
            'COUNT',
            this.readCount(),
            'BLOCK',
            this.transport.options.blockMs,
            'STREAMS',
            ...keys,
            ...ids,
          ],
          keys[0]!,
        );
        backoff = 0;
        if (res) this.handleRead(res);
      } catch (err) {
        if (this.closed) break;
        backoff = await this.onReadError(err as Error, backoff);
      }
    }
  }

  /**
   * Cluster: partitions live on different nodes. Each partition has a loop of
   * its own, reading without blocking (the connection to a node is shared) and
   * backing off when idle, so a read held up by a dead or failing-over master
   * delays only that master's partitions. (One loop reading every partition
   * together waited for the slowest read: one dead master stalled them all.)
   */
  private async pollLoop(p: number): Promise<void> {
    const t = this.transport;
    const keys = t.keys.streams(p);
    const ids = keys.map(() => '>');
    let idle = 1;
    let backoff = 0;
    while (await this.waitUntilRunnable()) {
      try {
        const client = t.requireClient();
        // cancellable by close(): a read waiting on a dead node must not hold it up
        const r = await this.read(
          client,
          ['GROUP', this.group, this.me, 'COUNT', this.readCount(), 'STREAMS', ...keys, ...ids],
          keys[0]!,
        );
        if (backoff > 0 || t.isPartitionDown(p)) t.markPartition(p, null);
        backoff = 0;
        const got = r ? this.handleRead(r) : 0;
        if (got === 0) {
          await this.pause_(idle);
          idle = Math.min(idle * 2, 50);
        } else idle = 1;
      } catch (err) {
        if (this.closed) break;
        if (!/NOGROUP/.test((err as Error).message)) t.markPartition(p, err as Error);
        backoff = await this.onReadError(err as Error, backoff);
      }
    }
  }

  private async onReadError(err: Error, backoff: number): Promise<number> {
    if (/NOGROUP/.test(err.message)) {
      // Redis lost its data (restart without persistence, failover before replication): start over
      const recreated = await this.ensureGroups('0').then(
        () => true,
        () => false,
      );
      if (recreated) this.transport.groupLost(this.group);
    } else this.transport.throttledError(err);
    const next = Math.min(2000, Math.max(50, backoff * 2));
    await this.pause_(next);
    return next;
  }

  /** Turns an XREADGROUP reply into deliveries. Returns how many entries it held. */
  private handleRead(res: [Buffer, RawEntry[]][], attempts?: Map<string, number>): number {
    const t = this.transport;
    const out: RedisDelivery[] = [];
    let n = 0;
    for (const [keyBuf, entries] of res) {
      const stream = keyBuf.toString();
      for (const [idBuf, fields] of entries) {
        n++;
        const id = idBuf.toString('latin1');
        // Redis's delivery count of this entry; maxDeliveries applies to it
        const attempt = attempts?.get(id) ?? 1;
        let e: Buffer | undefined;
        let ts: number | undefined;
        if (fields)
          for (let i = 0; i + 1 < fields.length; i += 2) {
            const k = fields[i]!;
            if (isField(k, FIELD_E)) e = fields[i + 1]!;
            else if (isField(k, FIELD_T)) ts = Number(fields[i + 1]!.toString('latin1'));
            else if (isField(k, FIELD_O)) t.observe(Number(fields[i + 1]!.toString('latin1')));
          }
        if (!e) {
          // trimmed away while pending: nothing left to deliver
          t.counters.trimmedWhilePending++;
          this.ack(stream, id);
          continue;
        }
        const event = t.decode(e);
        if (!event) {
          void this.deadLetter(stream, id, e, undefined, { reason: 'decode_error', attempts: attempt });
          continue;
        }
        if (attempt > t.options.maxDeliveries) {
          void this.deadLetter(stream, id, e, event, {
            reason: 'max_attempts',
            attempts: attempt - 1,
            error: {
              name: 'MaxDeliveriesExceeded',
              message: `delivered ${attempt - 1} times without an ack`,
            },
            nodeId: this.me,
            group: this.spec.group,
            binding: this.identity,
          });
          continue;
        }
        // a promoted retry counts on from the attempt it carries
        const counted = carriedAttempt(event, 1) + attempt - 1;
        const d = new RedisDelivery(this, stream, id, e, event, counted, ts ?? epochNow());
        this.inflight.add(d);
        out.push(d);
      }
    }
    if (out.length > 0) {
      t.counters.delivered += out.length;
      if (attempts) t.counters.redelivered += out.length;
      this.sink.deliverMany(out);
    }
    return n;
  }

  settled(d: RedisDelivery): void {
    this.inflight.delete(d);
    if (this.slotWaiters.length > 0) for (const w of this.slotWaiters.splice(0)) w();
  }

  ack(stream: string, id: string): void {
    let list = this.ackBuf.get(stream);
    if (!list) this.ackBuf.set(stream, (list = []));
    list.push(id);
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      this.transport.ackFlushesScheduled++;
      setImmediate(() => {
        void this.transport.track(this.flushAcks());
      });
    }
  }

  private async flushAcks(): Promise<void> {
    this.ackScheduled = false;
    this.transport.ackFlushesScheduled--;
    const buf: [string, string[]][] = [];
    for (const [stream, ids] of this.ackBuf)
      if (ids.length > 0) {
        buf.push([stream, ids]);
        this.ackBuf.set(stream, []);
      }
    const client = this.transport.client;
    if (!client || buf.length === 0) return;
    const t = this.transport;
    await Promise.all(
      buf.map(async ([stream, ids]) => {
        try {
          await send(client, 'xack', [stream, this.group, ...ids], stream);
          t.counters.acked += ids.length;
        } catch (err) {
          // the entries stay pending and are redelivered: at-least-once, never lost
          t.throttledError(err as Error);
        }
      }),
    );
  }

  redeliver(d: RedisDelivery, delayMs: number | undefined): void {
    // Without a delay the entry simply stays pending and is reclaimed after claimIdleMs.
    if (delayMs === undefined || this.closed) return;
    if (delayMs >= this.transport.options.scheduleNackAboveMs) {
      // a long delay: stored in Redis, not in a timer that a crash loses and that
      // another member's recover() would pre-empt after claimIdleMs
      void this.transport.track(this.schedule(d, delayMs));
      return;
    }
    this.claimAfter(d, delayMs);
  }

  /** Acks the entry and stores it as a scheduled retry for this binding, atomically (`schedule-2`). */
  private async schedule(d: RedisDelivery, delayMs: number): Promise<void> {
    const t = this.transport;
    try {
      const event = retryEventFor(d.event, { binding: this.identity, attempt: d.attempt + 1 });
      const due = await t.scripts.qeSchedule(
        t.keys.delayed(t.keys.partitionOf(d.stream)),
        d.stream,
        Math.ceil(delayMs),
        t.delayedMember(event),
        this.group,
        d.transportId,
      );
      // 0: the entry was no longer pending (settled elsewhere), so nothing was scheduled
      if (Number(due) > 0) t.counters.scheduled++;
    } catch (err) {
      // nothing stored and the entry is still pending: claim it back after the delay, as for short ones
      t.throttledError(err as Error);
      this.claimAfter(d, delayMs);
    }
  }

  private claimAfter(d: RedisDelivery, delayMs: number): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers = this.timers.filter((x) => x !== timer);
      void this.claimNow(d.stream, [d.transportId], new Map([[d.transportId, d.attempt + 1]]));
    }, delayMs);
    timer.unref();
    this.timers.push(timer);
  }

  private async claimNow(stream: string, ids: string[], attempts: Map<string, number>): Promise<void> {
    if (this.closed || ids.length === 0) return;
    const client = this.transport.client;
    if (!client) return;
    try {
      const claimed = (await send(
        client,
        'xclaim',
        [stream, this.group, this.me, 0, ...ids],
        stream,
        true,
      )) as RawEntry[];
      this.noteDeleted(stream, ids, claimed);
      this.handleRead([[Buffer.from(stream), claimed]], attempts);
    } catch (err) {
      this.transport.throttledError(err as Error);
    }
  }

  /** Entries XCLAIM did not return were deleted (trimmed) while pending. */
  private noteDeleted(stream: string, asked: string[], claimed: RawEntry[]): void {
    if (claimed.length >= asked.length) return;
    const got = new Set(claimed.map(([id]) => id.toString()));
    for (const id of asked) {
      if (got.has(id)) continue;
      this.transport.counters.trimmedWhilePending++;
      this.ack(stream, id);
    }
  }

  /**
   * Claims entries idle for `claimIdleMs` (their consumer died or gave them
   * back), plus, when `own`, this consumer's own pending entries from a previous
   * life (a restart with the same node id): all of them, page by page, as the
   * bus has room. Idle entries of others are taken only up to this member's
   * free slots (a group); what is left is claimed as slots free up.
   */
  async recover(own: boolean): Promise<void> {
    if (this.closed || this.recovering) return;
    this.recovering = true;
    if (!own) this.idleBacklog = false;
    const t = this.transport;
    try {
      const client = t.requireClient();
      // partition by partition (a claim sees the slots the previous one took), each on its
      // own: one whose node is known to be down is skipped, one that fails stops no other
      for (let p = 0; p < t.keys.partitions && !this.closed; p++) {
        if (t.isPartitionDown(p)) continue;
        try {
          for (const stream of t.keys.streams(p)) {
            if (own) await this.recoverOwn(client, stream);
            else await this.claimIdle(client, stream);
          }
        } catch (err) {
          if (!this.closed && !/NOGROUP/.test((err as Error).message)) t.throttledError(err as Error);
        }
      }
    } catch (err) {
      if (!this.closed) t.throttledError(err as Error);
    } finally {
      this.recovering = false;
    }
  }

  /** This consumer's own pending entries of `stream`, every page of XPENDING. */
  private async recoverOwn(client: RedisClient, stream: string): Promise<void> {
    let start = '-';
    while (!this.closed) {
      // flow control: a page no larger than the bus takes now
      while (!this.closed && this.sink.capacity() <= 0) await this.sink.ready();
      const page = Math.max(1, Math.min(OWN_PAGE, this.sink.capacity()));
      const rows = (await client.xpending(stream, this.group, start, '+', page, this.me)) as PendingRow[];
      if (rows.length === 0) return;
      await this.claimRows(client, stream, rows, true);
      if (rows.length < page) return;
      start = `(${rows[rows.length - 1]![0]}`;
    }
  }

  /** Entries of `stream` idle past `claimIdleMs`, up to this member's free slots. */
  private async claimIdle(client: RedisClient, stream: string): Promise<void> {
    const t = this.transport;
    const rows = (await client.xpending(
      stream,
      this.group,
      'IDLE',
      t.options.claimIdleMs,
      '-',
      '+',
      IDLE_PAGE,
    )) as PendingRow[];
    let mine: Set<string> | undefined;
    let take = rows.filter(([id, consumer]) => {
      if (consumer !== this.me) return true;
      mine ??= this.inflightIds(stream);
      return !mine.has(id);
    });
    const free = this.free();
    if (take.length > free) take = take.slice(0, Math.max(0, free));
    // more than this member takes now: the read loop claims more as its slots free up
    if (take.length < rows.length || rows.length === IDLE_PAGE) this.idleBacklog = true;
    await this.claimRows(client, stream, take, false);
  }

  private async claimRows(
    client: RedisClient,
    stream: string,
    take: PendingRow[],
    own: boolean,
  ): Promise<void> {
    if (take.length === 0 || this.closed) return;
    const t = this.transport;
    const attempts = new Map(take.map(([id, , , count]) => [id, count + 1]));
    const ids = take.map(([id]) => id);
    const claimed = (await send(
      client,
      'xclaim',
      [stream, this.group, this.me, own ? 0 : t.options.claimIdleMs, ...ids],
      stream,
      true,
    )) as RawEntry[];
    this.noteDeleted(stream, ids, claimed);
    t.counters.claimed += claimed.length;
    if (claimed.length > 0) this.handleRead([[Buffer.from(stream), claimed]], attempts);
  }

  private inflightIds(stream: string): Set<string> {
    const ids = new Set<string>();
    for (const d of this.inflight) if (d.stream === stream) ids.add(d.transportId);
    return ids;
  }

  /** Refreshes the idle time of entries still being handled, so nobody claims them mid-handler. */
  private async extend(): Promise<void> {
    if (this.closed || this.inflight.size === 0) return;
    const client = this.transport.client;
    if (!client) return;
    const byStream = new Map<string, string[]>();
    for (const d of this.inflight) {
      let list = byStream.get(d.stream);
      if (!list) byStream.set(d.stream, (list = []));
      list.push(d.transportId);
    }
    // streams at once: a partition whose node is down delays no other
    await Promise.all(
      [...byStream].map(async ([stream, ids]) => {
        for (let i = 0; i < ids.length; i += 500) {
          await client
            .xclaim(stream, this.group, this.me, 0, ...ids.slice(i, i + 500), 'JUSTID')
            .catch((e: Error) => this.transport.throttledError(e));
        }
      }),
    );
  }

  async deadLetter(
    stream: string,
    id: string,
    frame: Buffer,
    event: AgentEvent | undefined,
    info: DeadLetterInfo,
  ): Promise<void> {
    const t = this.transport;
    const part = t.keys.partitionOf(stream);
    const record = JSON.stringify({ ...info, eventId: event?.id, type: event?.type });
    await t.scripts.qeDeadLetter(stream, t.keys.dlq(part), this.group, id, frame, record, t.options.maxLen);
    t.counters.deadLettered++;
  }

  /** Pending entries and lag of this consumer's group over `streams` (default all), read at once. */
  async lagAndPending(streams = this.streams): Promise<{ pending: number; lag: number | null }> {
    const client = this.transport.requireClient();
    let pending = 0;
    let lag: number | null = 0;
    const infos = await Promise.all(streams.map((k) => client.xinfo('GROUPS', k) as Promise<unknown[][]>));
    for (const groups of infos) {
      for (const g of groups) {
        const o: Record<string, unknown> = {};
        for (let i = 0; i + 1 < g.length; i += 2) o[String(g[i])] = g[i + 1];
        if (o.name !== this.group) continue;
        pending += Number(o.pending ?? 0);
        if (lag !== null) lag = o.lag === null || o.lag === undefined ? null : lag + Number(o.lag);
      }
    }
    return { pending, lag };
  }

  setPatterns(_patterns: readonly string[]): void {
    // every entry is read; the bus filters (see DeliverySink)
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  async close(options: { leave?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    for (const w of this.resumeWaiters.splice(0)) w();
    for (const w of this.slotWaiters.splice(0)) w();
    this.wake();
    for (const r of this.readers) r.disconnect();
    for (const cmd of this.reads) cmd.cancel(new ClosedError('consumer closed'));
    await Promise.allSettled(this.loops);
    // acks still to come (handlers finishing) are flushed by the transport's close()
    this.transport.forget(this);
    if (options.leave) {
      const client = this.transport.client;
      if (client)
        await Promise.all(
          this.streams.map((key) => client.xgroup('DESTROY', key, this.group).catch(() => 0)),
        );
    }
  }

  /** Crash simulation: drop connections, no acks. */
  kill(): void {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const r of this.readers) r.disconnect();
    this.ackBuf.clear();
  }
}
