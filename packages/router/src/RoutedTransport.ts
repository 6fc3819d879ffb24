import {
  type AgentEvent,
  type ConsumerSpec,
  createSerializer,
  type DeadLetterInfo,
  type Delivery,
  type DeliverySink,
  epochNow,
  type GroupMember,
  type Logger,
  noopLogger,
  PatternIndex,
  type PublishOptions,
  type Serializer,
  type Transport,
  type TransportCapabilities,
  type TransportConsumer,
  type TransportContext,
  TransportError,
  type TransportHealth,
  type TransportStats,
} from '@qe/core';
import type { Redis } from 'ioredis';
import { roundRobin, type Strategy } from './strategies.js';

export interface RoutedTransportOptions {
  /** Carries broadcast events (memory, Redis Streams, ...). Group events go through the router. */
  inner: Transport;
  /** A plain ioredis client for membership and inboxes; the router duplicates it for blocking reads. */
  redis: Redis;
  /** Key prefix. Default `qe:router`. */
  prefix?: string;
  /** The strategy, for every group or per group key. Default round-robin. */
  strategy?: Strategy | ((groupKey: string) => Strategy);
  /** How often members announce themselves. Default 1,000 ms. */
  heartbeatMs?: number;
  /** A member silent for this long is dead: its events go to live members. Default 3,000 ms. */
  memberTtlMs?: number;
  /**
   * Per-key serial lanes: events of one key (default `agentId`) are handed to
   * the bus one at a time, in order, while different keys run in parallel.
   * Give the subscription a `maxConcurrency` above 1 to use it.
   */
  lanes?: { key?: (event: AgentEvent) => string };
}

type RawEntry = [Buffer, Buffer[] | null];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Routes group events across processes with a chosen strategy. Each member of
 * a group (one per bus instance) announces itself in Redis with a heartbeat
 * and reads its own inbox stream; a publisher picks the member for each event
 * with the strategy over the live members and appends the event to that
 * member's inbox. When a member stops heartbeating for `memberTtlMs`, a live
 * member moves everything in the dead member's inbox (unread and in flight)
 * to live members: nothing is lost, duplicates are possible (at-least-once).
 * Broadcast events go through `inner` unchanged.
 *
 * Keys: `<prefix>:groups` (hash: group key -> patterns), `<prefix>:members:<group>`
 * (sorted set: member -> last heartbeat), `<prefix>:inbox:<group>:<member>` (stream).
 */
export class RoutedTransport implements Transport {
  readonly name: string;
  readonly capabilities: TransportCapabilities;
  readonly serializer: Serializer = createSerializer('json');
  private readonly prefix: string;
  private readonly heartbeatMs: number;
  private readonly ttlMs: number;
  private nodeId = 'router';
  private logger: Logger = noopLogger;
  private onError: (e: Error) => void = () => {};
  private groups = new Map<string, { patterns: PatternIndex<true>; raw: string }>();
  private members = new Map<string, { list: GroupMember[]; at: number }>();
  private readonly assigned = new Map<string, number>();
  private readonly strategies = new Map<string, Strategy>();
  private consumers = new Set<InboxConsumer>();
  private refresher: NodeJS.Timeout | null = null;
  private connected = false;
  readonly counters = { published: 0, routed: 0, delivered: 0, acked: 0, reassigned: 0, redelivered: 0 };

  constructor(readonly options: RoutedTransportOptions) {
    this.prefix = options.prefix ?? 'qe:router';
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    this.ttlMs = options.memberTtlMs ?? 3000;
    this.name = `routed(${options.inner.name})`;
    this.capabilities = Object.freeze({ ...options.inner.capabilities, groups: true, crossProcess: true });
    const inner = options.inner;
    if (inner.scheduleRetry)
      this.scheduleRetry = (event, target, delayMs) => inner.scheduleRetry!(event, target, delayMs);
  }

  get redis(): Redis {
    return this.options.redis;
  }

  get deadLetters() {
    return this.options.inner.deadLetters;
  }

  /**
   * Long retries of shared (broadcast) deliveries are stored by the inner
   * transport, whose broadcast consumers they come back through; present only
   * when the inner transport has it, so the bus falls back to its timer
   * otherwise.
   */
  readonly scheduleRetry?: Transport['scheduleRetry'];

  strategyFor(group: string): Strategy {
    let s = this.strategies.get(group);
    if (!s) {
      const o = this.options.strategy;
      s = typeof o === 'function' ? o(group) : (o ?? roundRobin());
      this.strategies.set(group, s);
    }
    return s;
  }

  key(kind: 'groups' | 'members' | 'inbox' | 'reap', group = '', member = ''): string {
    if (kind === 'groups') return `${this.prefix}:groups`;
    if (kind === 'members') return `${this.prefix}:members:{${group}}`;
    if (kind === 'inbox') return `${this.prefix}:inbox:{${group}}:${member}`;
    return `${this.prefix}:reap:{${group}}:${member}`;
  }

  async connect(context: TransportContext): Promise<void> {
    this.nodeId = context.nodeId;
    this.logger = context.logger;
    this.onError = context.onError;
    await this.options.inner.connect(context);
    await this.refresh();
    this.refresher = setInterval(
      () => void this.refresh().catch((e) => this.onError(e)),
      Math.min(500, this.heartbeatMs),
    );
    this.refresher.unref();
    this.connected = true;
  }

  /** Reloads the group registry, live members and their loads (inbox lengths). */
  async refresh(): Promise<void> {
    const r = this.redis;
    const all = (await r.hgetall(this.key('groups'))) as Record<string, string>;
    const next = new Map<string, { patterns: PatternIndex<true>; raw: string }>();
    for (const [g, raw] of Object.entries(all)) {
      const prev = this.groups.get(g);
      if (prev && prev.raw === raw) {
        next.set(g, prev);
        continue;
      }
      const idx = new PatternIndex<true>();
      try {
        for (const p of JSON.parse(raw) as string[]) idx.add(p, true);
      } catch {
        continue;
      }
      next.set(g, { patterns: idx, raw });
    }
    this.groups = next;
    const now = Date.now();
    for (const g of next.keys()) {
      const ids = await r.zrangebyscore(this.key('members', g), now - this.ttlMs, '+inf');
      ids.sort();
      const pipe = r.pipeline();
      for (const id of ids) pipe.xlen(this.key('inbox', g, id));
      const lens = (await pipe.exec()) ?? [];
      this.members.set(g, {
        list: ids.map((id, i) => ({ id, inFlight: Number(lens[i]?.[1] ?? 0) })),
        at: now,
      });
    }
    this.assigned.clear();
  }

  isConnected(): boolean {
    return this.connected && this.options.inner.isConnected() && this.redis.status === 'ready';
  }

  async close(): Promise<void> {
    this.connected = false;
    if (this.refresher) clearInterval(this.refresher);
    await Promise.all([...this.consumers].map((c) => c.close()));
    await this.options.inner.close();
  }

  async publish(events: readonly AgentEvent[], options?: PublishOptions): Promise<void> {
    await this.options.inner.publish(events, options);
    this.counters.published += events.length;
    if (this.groups.size === 0) return;
    const pipe = this.redis.pipeline();
    let n = 0;
    const t = String(epochNow());
    // one load snapshot per group per call; picks update it, so a batch spreads by load too
    const snapshots = new Map<string, GroupMember[]>();
    for (const e of events) {
      for (const [g, { patterns }] of this.groups) {
        if (patterns.match(e.type).length === 0) continue;
        let live = snapshots.get(g);
        if (!live) {
          const m = this.members.get(g);
          live = (m?.list ?? []).map((x) => ({
            id: x.id,
            inFlight: x.inFlight + (this.assigned.get(`${g}\u0000${x.id}`) ?? 0),
          }));
          snapshots.set(g, live);
        }
        if (live.length === 0) continue; // nobody in the group right now: as with any group, no member, no delivery
        const i = this.strategyFor(g).pick(e, live, g);
        const chosen = live[i >= 0 && i < live.length ? i : 0]!;
        (chosen as { inFlight: number }).inFlight++;
        pipe.xadd(this.key('inbox', g, chosen.id), '*', 'e', this.serializer.encodeWire(e), 't', t, 'a', '1');
        n++;
      }
    }
    for (const [g, live] of snapshots) {
      const base = this.members.get(g)?.list ?? [];
      for (let i = 0; i < live.length; i++)
        this.assigned.set(`${g}\u0000${live[i]!.id}`, live[i]!.inFlight - (base[i]?.inFlight ?? 0));
    }
    if (n === 0) return;
    const res = await pipe.exec();
    const failed = res?.find(([err]) => err);
    if (failed)
      throw new TransportError(`router could not append to an inbox: ${failed[0]!.message}`, {
        cause: failed[0],
      });
    this.counters.routed += n;
  }

  async consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
    if (spec.group === null) return this.options.inner.consume(spec, sink);
    const c = new InboxConsumer(this, spec, sink);
    this.consumers.add(c);
    await c.open();
    await this.refresh();
    return c;
  }

  forget(c: InboxConsumer): void {
    this.consumers.delete(c);
  }

  get member(): string {
    return this.nodeId;
  }

  get heartbeat(): number {
    return this.heartbeatMs;
  }

  get ttl(): number {
    return this.ttlMs;
  }

  get log(): Logger {
    return this.logger;
  }

  report(e: Error): void {
    this.onError(e);
  }

  async healthCheck(): Promise<TransportHealth> {
    const inner = await this.options.inner.healthCheck();
    const reasons = [...inner.reasons];
    if (this.redis.status !== 'ready') reasons.push(`router redis is ${this.redis.status}`);
    return {
      ...inner,
      status: this.redis.status === 'ready' ? inner.status : 'unhealthy',
      reasons,
      details: {
        ...inner.details,
        groups: Object.fromEntries([...this.members].map(([g, m]) => [g, m.list])),
      },
    };
  }

  stats(): TransportStats {
    let lanes = 0;
    for (const c of this.consumers) lanes += c.keptLanes;
    return { ...this.options.inner.stats(), router: { ...this.counters, lanes } };
  }

  getRecentEvents = (q: Parameters<NonNullable<Transport['getRecentEvents']>>[0]) => {
    if (!this.options.inner.getRecentEvents) return Promise.resolve([]);
    return this.options.inner.getRecentEvents(q);
  };
}

class InboxDelivery implements Delivery {
  settled = false;
  constructor(
    readonly consumer: InboxConsumer,
    readonly transportId: string,
    readonly event: AgentEvent,
    readonly attempt: number,
    readonly publishedAt: number,
    readonly lane: string | undefined,
  ) {}
  ack(): void {
    if (this.settled) return;
    this.settled = true;
    this.consumer.done(this, true);
  }
  nack(delayMs?: number): void {
    if (this.settled) return;
    this.settled = true;
    this.consumer.done(this, false, delayMs ?? 0);
  }
  async deadLetter(info: DeadLetterInfo): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    const store = this.consumer.t.deadLetters;
    if (store) await store.add(this.event, info);
    this.consumer.done(this, true);
  }
}

/** A key's lane: busy while one of its events is with the bus; the key's later events wait in `queue`. */
interface Lane {
  busy: boolean;
  queue: InboxDelivery[];
}

/** Idle lanes kept before a sweep (when they are also more than half of all lanes). */
const IDLE_LANES_KEPT = 1024;

/** One member of one group: heartbeat, inbox reader, lanes, reaper of dead members. */
class InboxConsumer implements TransportConsumer {
  private closed = false;
  private paused = false;
  private reader: Redis | null = null;
  private loop: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly inbox: string;
  /**
   * Lanes by key. A lane that empties stays, idle, until a sweep replaces the
   * Map with one of the busy lanes only: deleting a key per event would churn
   * the Map's tables, and after a backlog the old tables keep later deliveries
   * alive through young GCs (long GC pauses for the rest of the run).
   */
  private lanes = new Map<string, Lane>();
  private idleLanes = 0;
  private readonly laneKey: ((e: AgentEvent) => string) | undefined;

  constructor(
    readonly t: RoutedTransport,
    readonly spec: ConsumerSpec,
    readonly sink: DeliverySink,
  ) {
    this.inbox = t.key('inbox', spec.id, t.member);
    this.laneKey = t.options.lanes ? (t.options.lanes.key ?? ((e) => e.agentId)) : undefined;
  }

  get id(): string {
    return this.spec.id;
  }

  async open(): Promise<void> {
    const r = this.t.redis;
    await r.hset(this.t.key('groups'), this.spec.id, JSON.stringify(this.spec.patterns));
    await r.xgroup('CREATE', this.inbox, 'g', '0', 'MKSTREAM').catch((e: Error) => {
      if (!/BUSYGROUP/.test(e.message)) throw e;
    });
    await this.beat();
    // entries this member held before a restart: read its own pending list first
    await this.read('0');
    this.reader = r.duplicate();
    this.reader.on('error', () => {});
    this.loop = this.readLoop();
    this.timer = setInterval(
      () =>
        void this.beat()
          .then(() => this.reap())
          .catch((e) => this.t.report(e)),
      this.t.heartbeat,
    );
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    await this.t.redis.zadd(this.t.key('members', this.spec.id), Date.now(), this.t.member);
  }

  private async readLoop(): Promise<void> {
    while (!this.closed) {
      if (this.paused || this.sink.capacity() <= 0) {
        await (this.paused ? sleep(20) : this.sink.ready());
        continue;
      }
      try {
        await this.read('>');
      } catch (err) {
        if (this.closed) return;
        this.t.report(err as Error);
        await sleep(200);
      }
    }
  }

  private async read(id: '>' | '0'): Promise<void> {
    const conn = id === '0' ? this.t.redis : this.reader!;
    const res = (await conn.callBuffer(
      'XREADGROUP',
      'GROUP',
      'g',
      'c',
      'COUNT',
      Math.max(1, Math.min(500, this.sink.capacity())),
      ...(id === '>' ? ['BLOCK', 500] : []),
      'STREAMS',
      this.inbox,
      id,
    )) as unknown as [Buffer, RawEntry[]][] | null;
    if (!res) return;
    const out: InboxDelivery[] = [];
    for (const [, entries] of res)
      for (const [idBuf, fields] of entries) {
        const entry = this.decodeEntry(fields);
        if (!entry) {
          await this.t.redis.xack(this.inbox, 'g', idBuf.toString());
          continue;
        }
        const { f, event } = entry;
        const d = new InboxDelivery(
          this,
          idBuf.toString(),
          event,
          Number(f.a?.toString() ?? 1) + (id === '0' ? 1 : 0),
          Number(f.t?.toString() ?? epochNow()),
          this.laneKey?.(event),
        );
        out.push(d);
      }
    this.t.counters.delivered += out.length;
    for (const d of out) this.admit(d);
  }

  /** An inbox entry's fields and event, or undefined when it cannot be read (it is skipped). */
  private decodeEntry(fields: Buffer[] | null): { f: Record<string, Buffer>; event: AgentEvent } | undefined {
    if (!fields) return undefined;
    const f: Record<string, Buffer> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!.toString()] = fields[i + 1]!;
    if (!f.e) return undefined;
    try {
      return { f, event: this.t.serializer.decode(f.e) };
    } catch {
      return undefined;
    }
  }

  /** Lanes: a key's next event waits until the previous one of that key is settled. */
  private admit(d: InboxDelivery): void {
    if (d.lane === undefined) {
      this.sink.deliver(d);
      return;
    }
    const lane = this.lanes.get(d.lane);
    if (!lane) this.lanes.set(d.lane, { busy: true, queue: [] });
    else if (lane.busy) {
      lane.queue.push(d);
      return;
    } else {
      lane.busy = true;
      this.idleLanes--;
    }
    this.sink.deliver(d);
  }

  /** Lanes kept, busy or idle (idle ones are dropped by the next sweep). */
  get keptLanes(): number {
    return this.lanes.size;
  }

  private sweepLanes(): void {
    const busy = new Map<string, Lane>();
    for (const [key, lane] of this.lanes) if (lane.busy) busy.set(key, lane);
    this.lanes = busy;
    this.idleLanes = 0;
  }

  done(d: InboxDelivery, ok: boolean, delayMs = 0): void {
    if (ok) {
      this.t.counters.acked++;
      this.ackIds.push(d.transportId);
      if (this.ackIds.length === 1) setImmediate(() => void this.flushAcks());
    } else {
      this.t.counters.redelivered++;
      setTimeout(() => {
        if (this.closed) return;
        this.sink.deliver(
          new InboxDelivery(this, d.transportId, d.event, d.attempt + 1, d.publishedAt, undefined),
        );
      }, delayMs).unref();
    }
    if (d.lane !== undefined) {
      const lane = this.lanes.get(d.lane);
      if (!lane?.busy) return;
      const next = lane.queue.shift();
      if (next) this.sink.deliver(next);
      else {
        lane.busy = false;
        if (++this.idleLanes > IDLE_LANES_KEPT && this.idleLanes * 2 > this.lanes.size) this.sweepLanes();
      }
    }
  }

  private ackIds: string[] = [];

  /** Acks (and deletes, to keep inboxes short) everything settled in this tick, in one round trip. */
  private async flushAcks(): Promise<void> {
    const ids = this.ackIds;
    this.ackIds = [];
    if (ids.length === 0) return;
    await this.t.redis
      .pipeline()
      .xack(this.inbox, 'g', ...ids)
      .xdel(this.inbox, ...ids)
      .exec()
      .catch((e: Error) => this.t.report(e));
  }

  /** Moves the inboxes of dead members to live ones (one reaper per dead member, by lock). */
  private async reap(): Promise<void> {
    if (this.closed) return;
    const r = this.t.redis;
    const group = this.spec.id;
    const now = Date.now();
    const dead = await r.zrangebyscore(this.t.key('members', group), '-inf', `(${now - this.t.ttl}`);
    if (dead.length === 0) return;
    await this.t.refresh();
    for (const d of dead) {
      if (d === this.t.member) continue;
      const lock = await r.set(this.t.key('reap', group, d), this.t.member, 'PX', 10_000, 'NX');
      if (lock !== 'OK') continue;
      const inbox = this.t.key('inbox', group, d);
      const entries = (await r.xrangeBuffer(inbox, '-', '+')) as unknown as RawEntry[];
      const strategy = this.t.strategyFor(group);
      const live = (await r.zrangebyscore(this.t.key('members', group), now - this.t.ttl, '+inf'))
        .sort()
        .map((id) => ({ id, inFlight: 0 }));
      if (live.length === 0) continue;
      const pipe = r.pipeline();
      for (const [, fields] of entries) {
        const entry = this.decodeEntry(fields);
        if (!entry) continue;
        const { f, event } = entry;
        const target = live[strategy.pick(event, live, group)]?.id ?? live[0]!.id;
        pipe.xadd(
          this.t.key('inbox', group, target),
          '*',
          'e',
          f.e!,
          't',
          f.t ?? String(epochNow()),
          'a',
          String(Number(f.a?.toString() ?? 1) + 1),
        );
      }
      pipe.del(inbox);
      pipe.zrem(this.t.key('members', group), d);
      await pipe.exec();
      this.t.counters.reassigned += entries.length;
      this.t.log.info('moved a dead member’s events to live members', {
        group,
        member: d,
        events: entries.length,
      });
    }
  }

  setPatterns(): void {}
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }

  async close(options: { leave?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.reader?.disconnect();
    await this.loop?.catch(() => {});
    await this.flushAcks();
    if (options.leave) await this.t.redis.zrem(this.t.key('members', this.spec.id), this.t.member);
    this.t.forget(this);
  }
}
