import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  type ConsumerSpec,
  checkIntSetting,
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
import { MOVE_ENTRIES_N, ROUTE_EVENTS_N } from './scripts.js';
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

const OPTION_KEYS = ['inner', 'redis', 'prefix', 'strategy', 'heartbeatMs', 'memberTtlMs', 'lanes'] as const;

/** The custom commands the router defines on its ioredis client. */
interface RouterCommands {
  qeRouteEvents(numKeys: number, ...args: (string | Buffer | number)[]): Promise<number>;
  qeMoveEntries(numKeys: number, ...args: (string | Buffer | number)[]): Promise<[number, number]>;
}

const versionNumber = (v: string | null | undefined): number => Number(v ?? 0);

/** A stream id's order: `a` before `b` is negative. */
function compareIds(a: string, b: string): number {
  const [am, as = '0'] = a.split('-');
  const [bm, bs = '0'] = b.split('-');
  const d = BigInt(am!) - BigInt(bm!);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const e = BigInt(as) - BigInt(bs);
  return e === 0n ? 0 : e < 0n ? -1 : 1;
}

/** One publish's routing for one group: events assigned to members, or held for a group with none. */
interface GroupPlan {
  members: GroupMember[];
  picks: { member: number; event: AgentEvent }[];
  held: AgentEvent[];
}

/** An inbox or pending-stream entry, decoded. */
interface Entry {
  id: string;
  fields: Record<string, Buffer>;
  event: AgentEvent;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** KEYS[1] members zset; ARGV member, cutoff: removes the member only if its last beat is older than the cutoff. */
const REMOVE_IF_STALE = `local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) < tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0`;

/** KEYS[1] members zset, KEYS[2] inbox; ARGV member: deletes the inbox only if the member is not back in the group. */
const DELETE_IF_ABSENT = `if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[2])`;

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
 * Nothing routed to a group is dropped: while a group has no live member its
 * events wait in the group's pending stream in Redis, and the next member to
 * join (or any live member, every heartbeat) moves them to inboxes. A member
 * whose bus stops cleanly leaves the group at once and hands its inbox over.
 * Every publish checks the registry's version in the same round trip as its
 * appends, so a group or member that joined before the publish started is
 * seen (`ready` holds: events published from then on reach it).
 *
 * Keys: `<prefix>:groups` (hash: group key -> patterns), `<prefix>:version`
 * (bumped on every join, leave and reap), `<prefix>:members:{<group>}` (sorted
 * set: member -> last heartbeat), `<prefix>:inbox:{<group>}:<member>` (stream),
 * `<prefix>:pending:{<group>}` (stream: events waiting for a member).
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
  /** The registry version the view above was read at (`<prefix>:version`). */
  private version: string | null = null;
  private refreshing: Promise<void> | null = null;
  /** Groups this publisher is holding events for (logged once per spell without members). */
  private readonly holding = new Set<string>();
  private readonly assigned = new Map<string, number>();
  private readonly strategies = new Map<string, Strategy>();
  private consumers = new Set<InboxConsumer>();
  private refresher: NodeJS.Timeout | null = null;
  private connected = false;
  /**
   * `held`: events put in a group's pending stream (no live member, or the
   * chosen one had left); `released`: moved from there to members;
   * `handedOver`: moved out of this node's inboxes when it left a group;
   * `undecodable`: entries that could not be decoded, deleted (each logged).
   */
  readonly counters = {
    published: 0,
    routed: 0,
    delivered: 0,
    acked: 0,
    reassigned: 0,
    redelivered: 0,
    held: 0,
    released: 0,
    handedOver: 0,
    undecodable: 0,
  };

  constructor(readonly options: RoutedTransportOptions) {
    assertKnownKeys(options, OPTION_KEYS);
    const inner = options.inner as Partial<Transport> | undefined;
    if (!inner || typeof inner.publish !== 'function' || typeof inner.consume !== 'function')
      throw new ConfigError('inner', 'must be a Transport (it carries broadcast events)');
    if (!options.redis || typeof (options.redis as Partial<Redis>).pipeline !== 'function')
      throw new ConfigError('redis', 'must be an ioredis client');
    if (options.prefix !== undefined && (typeof options.prefix !== 'string' || options.prefix === ''))
      throw new ConfigError('prefix', 'must be a non-empty string');
    const st = options.strategy as unknown;
    if (
      st !== undefined &&
      typeof st !== 'function' &&
      (st === null || typeof st !== 'object' || typeof (st as Strategy).pick !== 'function')
    )
      throw new ConfigError('strategy', 'must be a Strategy (pick) or a function from group key to Strategy');
    checkIntSetting('heartbeatMs', options.heartbeatMs, 10);
    checkIntSetting('memberTtlMs', options.memberTtlMs, 1);
    assertKnownKeys(options.lanes, ['key'], 'lanes.');
    if (options.lanes?.key !== undefined && typeof options.lanes.key !== 'function')
      throw new ConfigError('lanes.key', 'must be a function');
    this.prefix = options.prefix ?? 'qe:router';
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    this.ttlMs = options.memberTtlMs ?? 3000;
    // a TTL within one heartbeat would declare live members dead between two beats
    if (this.ttlMs <= this.heartbeatMs)
      throw new ConfigError(
        'memberTtlMs',
        `must be longer than heartbeatMs (${this.heartbeatMs}), got ${this.ttlMs}; three heartbeats is usual`,
      );
    const r = options.redis as unknown as Partial<RouterCommands> & Redis;
    if (!r.qeRouteEvents) r.defineCommand('qeRouteEvents', { lua: ROUTE_EVENTS_N });
    if (!r.qeMoveEntries) r.defineCommand('qeMoveEntries', { lua: MOVE_ENTRIES_N });
    this.name = `routed(${options.inner.name})`;
    this.capabilities = Object.freeze({ ...options.inner.capabilities, groups: true, crossProcess: true });
    const innerT = options.inner;
    if (innerT.scheduleRetry)
      this.scheduleRetry = (event, target, delayMs) => innerT.scheduleRetry!(event, target, delayMs);
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

  key(
    kind: 'groups' | 'version' | 'members' | 'inbox' | 'pending' | 'reap',
    group = '',
    member = '',
  ): string {
    if (kind === 'groups') return `${this.prefix}:groups`;
    if (kind === 'version') return `${this.prefix}:version`;
    if (kind === 'pending') return `${this.prefix}:pending:{${group}}`;
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

  /** Reloads the group registry, live members and their loads (inbox lengths). Concurrent calls share one reload. */
  refresh(): Promise<void> {
    if (!this.refreshing)
      this.refreshing = this.load().finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const r = this.redis;
    // the version first: a change after this read makes the next publish reload again
    const version = await r.get(this.key('version'));
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
      } catch (e) {
        // a group nobody can route to: say so every reload rather than skip it quietly
        this.onError(
          new TransportError(
            `router: group ${g} has unreadable patterns ${JSON.stringify(raw.slice(0, 200))}`,
            {
              cause: e,
            },
          ),
        );
        continue;
      }
      next.set(g, { patterns: idx, raw });
    }
    const now = Date.now();
    const members = new Map<string, { list: GroupMember[]; at: number }>();
    for (const g of next.keys()) {
      const ids = await r.zrangebyscore(this.key('members', g), now - this.ttlMs, '+inf');
      ids.sort();
      const pipe = r.pipeline();
      for (const id of ids) pipe.xlen(this.key('inbox', g, id));
      const lens = (await pipe.exec()) ?? [];
      members.set(g, {
        list: ids.map((id, i) => ({ id, inFlight: Number(lens[i]?.[1] ?? 0) })),
        at: now,
      });
      if (ids.length > 0) this.holding.delete(g);
    }
    // the whole view at once: a publish never sees a new group without its members
    this.groups = next;
    this.members = members;
    this.version = version;
    this.assigned.clear();
  }

  isConnected(): boolean {
    return this.connected && this.options.inner.isConnected() && this.redis.status === 'ready';
  }

  /**
   * Leaves every group this node is in (their consumers close, if the bus did
   * not close them already) and hands over what is left in its inboxes, then
   * closes `inner`. Called after the bus settled what it could, so entries
   * still unacked here are handed over too (at-least-once: their handlers may
   * have run).
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.connected = false;
    if (this.refresher) clearInterval(this.refresher);
    const consumers = [...this.consumers];
    // a failed handover is reported, not thrown: inner must close whatever Redis does
    const report = (e: unknown) => this.onError(e instanceof Error ? e : new Error(String(e)));
    const handover = (async () => {
      await Promise.all(consumers.map((c) => c.close().catch(report)));
      await Promise.all(consumers.map((c) => c.finish().catch(report)));
    })();
    const { timeoutMs } = options;
    if (timeoutMs === undefined) {
      await handover;
      return this.options.inner.close();
    }
    // the deadline covers the handover and inner's close together: half for the handover at most
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      handover.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), Math.floor(timeoutMs / 2));
      }),
    ]);
    clearTimeout(timer);
    if (late)
      report(
        new Error(
          `router: handing over this node's group entries did not finish within ${Math.floor(timeoutMs / 2)} ms; what was not handed over is redelivered after the members' TTL`,
        ),
      );
    await this.options.inner.close({ timeoutMs: Math.max(1, timeoutMs - (Date.now() - started)) });
  }

  /**
   * Publishes through `inner`, then appends each event matching a group to
   * the inbox of the member the strategy picks (or to the group's pending
   * stream when it has no live member), in one round trip that also reads the
   * registry version. If the version moved (a group or member joined or left
   * since this publisher's view), the view is reloaded and the events are
   * routed to the groups it did not know.
   */
  async publish(events: readonly AgentEvent[], options?: PublishOptions): Promise<void> {
    await this.options.inner.publish(events, options);
    this.counters.published += events.length;
    const seenVersion = this.version;
    const known = [...this.groups.keys()];
    const version = await this.route(events, known, true);
    if (version === seenVersion) return;
    // a reload already under way may have read the version before it moved: reload until the view is as new
    for (let i = 0; i < 3 && versionNumber(this.version) < versionNumber(version); i++) await this.refresh();
    const fresh = [...this.groups.keys()].filter((g) => !known.includes(g));
    if (fresh.length > 0) await this.route(events, fresh, false);
  }

  /** Routes `events` to `groups` in one pipeline; returns the registry version read with it (when asked). */
  private async route(
    events: readonly AgentEvent[],
    groups: readonly string[],
    readVersion: boolean,
  ): Promise<string | null | undefined> {
    const plans = this.plan(events, groups);
    if (plans.size === 0 && !readVersion) return undefined;
    const pipe = this.redis.pipeline();
    if (readVersion) pipe.get(this.key('version'));
    const t = String(epochNow());
    // where each group's script reply will be among the pipeline's replies
    const scripted: { group: string; assigned: number; reply: number }[] = [];
    let queued = readVersion ? 1 : 0;
    let held = 0;
    for (const [g, plan] of plans) {
      for (const e of plan.held)
        pipe.xadd(this.key('pending', g), '*', 'e', this.serializer.encodeWire(e), 't', t, 'a', '1');
      queued += plan.held.length;
      held += plan.held.length;
      if (plan.held.length > 0) this.warnHolding(g, 'it has no live member');
      if (plan.picks.length === 0) continue;
      // only the members this publish assigned events to: their inboxes are the script's keys
      const slot = new Map<number, number>();
      const ids: string[] = [];
      const pairs: (string | Buffer)[] = [];
      for (const { member, event } of plan.picks) {
        let n = slot.get(member);
        if (n === undefined) {
          n = ids.length + 1;
          slot.set(member, n);
          ids.push(plan.members[member]!.id);
        }
        pairs.push(String(n), this.serializer.encodeWire(event));
      }
      (pipe as unknown as RouterCommands).qeRouteEvents(
        2 + ids.length,
        this.key('members', g),
        this.key('pending', g),
        ...ids.map((id) => this.key('inbox', g, id)),
        t,
        ...ids,
        ...pairs,
      );
      scripted.push({ group: g, assigned: plan.picks.length, reply: queued++ });
    }
    const res = (await pipe.exec()) ?? [];
    const failed = res.find(([err]) => err);
    if (failed)
      throw new TransportError(`router could not append to an inbox: ${failed[0]!.message}`, {
        cause: failed[0],
      });
    const version = readVersion ? (res[0]![1] as string | null) : undefined;
    this.counters.held += held;
    scripted.forEach(({ group, assigned, reply }) => {
      const late = Number(res[reply]![1]); // assigned to a member that had just left
      this.counters.routed += assigned - late;
      if (late > 0) {
        this.counters.held += late;
        this.warnHolding(group, 'the member picked had left');
      }
    });
    return version;
  }

  /** Which member of which group gets each event, from this publisher's view. */
  private plan(events: readonly AgentEvent[], groups: readonly string[]): Map<string, GroupPlan> {
    const plans = new Map<string, GroupPlan>();
    for (const e of events) {
      for (const g of groups) {
        const entry = this.groups.get(g);
        if (!entry || entry.patterns.match(e.type).length === 0) continue;
        let plan = plans.get(g);
        if (!plan) {
          // one load snapshot per group per call; picks update it, so a batch spreads by load too
          const m = this.members.get(g);
          plan = {
            members: (m?.list ?? []).map((x) => ({
              id: x.id,
              inFlight: x.inFlight + (this.assigned.get(`${g}\u0000${x.id}`) ?? 0),
            })),
            picks: [],
            held: [],
          };
          plans.set(g, plan);
        }
        const live = plan.members;
        if (live.length === 0) {
          plan.held.push(e); // nobody in the group right now: the event waits in Redis for a member
          continue;
        }
        const i = this.strategyFor(g).pick(e, live, g);
        const k = i >= 0 && i < live.length ? i : 0;
        (live[k] as { inFlight: number }).inFlight++;
        plan.picks.push({ member: k, event: e });
      }
    }
    for (const [g, plan] of plans) {
      const base = this.members.get(g)?.list ?? [];
      for (let i = 0; i < plan.members.length; i++)
        this.assigned.set(
          `${g}\u0000${plan.members[i]!.id}`,
          plan.members[i]!.inFlight - (base[i]?.inFlight ?? 0),
        );
    }
    return plans;
  }

  private warnHolding(group: string, why: string): void {
    if (this.holding.has(group)) return;
    this.holding.add(group);
    this.logger.warn('router: holding events for a group in Redis until a member takes them', {
      group,
      why,
      key: this.key('pending', group),
    });
  }

  /**
   * Moves stream entries from `source` (a dead or leaving member's inbox, or
   * the group's pending stream) to the group's live members, chosen by the
   * strategy; to the pending stream when there is none. Each entry moves once
   * even if several members move the same entries at once. `bump(id)` is
   * added to an entry's attempt number (1 for entries a member had read).
   */
  async moveEntries(
    group: string,
    source: string,
    raw: readonly RawEntry[],
    bump: (id: string) => number,
  ): Promise<{ moved: number; held: number }> {
    const r = this.redis;
    const entries = await this.decodeAll(source, raw);
    if (entries.length === 0) return { moved: 0, held: 0 };
    const live = (await r.zrangebyscore(this.key('members', group), Date.now() - this.ttlMs, '+inf'))
      .sort()
      .map((id) => ({ id, inFlight: 0 }));
    const strategy = this.strategyFor(group);
    const args: (string | Buffer)[] = [String(live.length), ...live.map((m) => m.id)];
    for (const { id, fields, event } of entries) {
      let target = 0; // the pending stream
      if (live.length > 0) {
        const i = strategy.pick(event, live, group);
        target = (i >= 0 && i < live.length ? i : 0) + 1;
      }
      args.push(
        id,
        String(target),
        fields.e!,
        fields.t ?? String(epochNow()),
        String(Number(fields.a?.toString() ?? 1) + bump(id)),
      );
    }
    const [moved, held] = await (r as unknown as RouterCommands).qeMoveEntries(
      3 + live.length,
      source,
      this.key('members', group),
      this.key('pending', group),
      ...live.map((m) => this.key('inbox', group, m.id)),
      ...args,
    );
    this.counters.held += held;
    if (held > 0) this.warnHolding(group, 'it has no live member');
    return { moved, held };
  }

  /** Decodes entries; one that cannot be decoded is deleted, counted and logged, never kept or moved quietly. */
  async decodeAll(source: string, raw: readonly RawEntry[]): Promise<Entry[]> {
    const out: Entry[] = [];
    for (const [idBuf, fields] of raw) {
      const id = idBuf.toString();
      const entry = decodeFields(this.serializer, fields);
      if (entry) out.push({ id, ...entry });
      else await this.dropUndecodable(source, id);
    }
    return out;
  }

  async dropUndecodable(source: string, id: string): Promise<void> {
    this.counters.undecodable++;
    this.logger.error('router: dropped an entry that cannot be decoded', { stream: source, id });
    await this.redis.pipeline().xack(source, 'g', id).xdel(source, id).exec();
  }

  async consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
    if (spec.group === null) return this.options.inner.consume(spec, sink);
    const c = new InboxConsumer(this, spec, sink);
    this.consumers.add(c);
    await c.open();
    await this.refresh();
    return c;
  }

  /** Bumps the registry version: publishers reload their view at their next publish. */
  async bumpVersion(): Promise<void> {
    await this.redis.incr(this.key('version'));
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

/** An entry's fields and event, or undefined when it cannot be read. */
function decodeFields(
  serializer: Serializer,
  fields: Buffer[] | null,
): { fields: Record<string, Buffer>; event: AgentEvent } | undefined {
  if (!fields) return undefined;
  const f: Record<string, Buffer> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!.toString()] = fields[i + 1]!;
  if (!f.e) return undefined;
  try {
    return { fields: f, event: serializer.decode(f.e) };
  } catch {
    return undefined;
  }
}

/** Entries read per page when moving a stream's content. */
const MOVE_PAGE = 500;

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
  /** Deliveries read from the inbox and not yet settled (with the bus, in a lane, or waiting to be redelivered). */
  private outstanding = 0;
  private finishing: Promise<void> | null = null;
  /** Set by close(): out of the members set, version bumped. The handover waits for it. */
  private left: Promise<void> = Promise.resolve();
  private flushing: Promise<void> = Promise.resolve();

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
    // publishers reload their view at their next publish: this member gets events published from now on
    await this.t.bumpVersion();
    // events that waited while the group had no member
    await this.releasePending();
    // entries this member held before a restart: read its own pending list first. A member
    // that reaped this one's previous life may have deleted the inbox after we created it:
    // join again (the reaper moved what was there)
    await this.read('0').catch(async (e: Error) => {
      if (!/NOGROUP/.test(e.message)) throw e;
      this.t.log.warn(
        'router: inbox removed while joining (taken for the dead previous member); joining again',
        {
          group: this.spec.id,
          member: this.t.member,
        },
      );
      await this.rejoin();
    });
    this.reader = r.duplicate();
    this.reader.on('error', () => {});
    this.loop = this.readLoop();
    this.timer = setInterval(
      () =>
        void this.beat()
          .then(() => this.reap())
          .then(() => this.releasePending())
          .catch((e) => this.t.report(e)),
      this.t.heartbeat,
    );
    this.timer.unref();
  }

  private async rejoin(): Promise<void> {
    await this.t.redis.xgroup('CREATE', this.inbox, 'g', '0', 'MKSTREAM').catch((e: Error) => {
      if (!/BUSYGROUP/.test(e.message)) throw e;
    });
    await this.beat();
    await this.t.bumpVersion();
  }

  private async beat(): Promise<void> {
    // a beat sent after close()'s ZREM would put a member that left back in the group
    if (this.closed) return;
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
        // taken for dead and reaped (a long pause): join again rather than fail every read
        if (/NOGROUP/.test((err as Error).message)) await this.rejoin().catch((e) => this.t.report(e));
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
        const entry = decodeFields(this.t.serializer, fields);
        if (!entry) {
          await this.t.dropUndecodable(this.inbox, idBuf.toString());
          continue;
        }
        const { fields: f, event } = entry;
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
    this.outstanding += out.length;
    for (const d of out) this.admit(d);
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
      this.settled();
    } else if (this.closed) {
      this.settled(); // left in the inbox: the handover moves it to a live member
    } else {
      this.t.counters.redelivered++;
      setTimeout(() => {
        if (this.closed) {
          this.settled();
          return;
        }
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

  /** One delivery fewer outstanding; once closed, the last one lets the handover finish. */
  private settled(): void {
    if (--this.outstanding <= 0 && this.closed) void this.finish().catch((e) => this.t.report(e));
  }

  private ackIds: string[] = [];

  /** Acks (and deletes, to keep inboxes short) everything settled in this tick, in one round trip. */
  private flushAcks(): Promise<void> {
    const ids = this.ackIds;
    this.ackIds = [];
    if (ids.length === 0) return this.flushing;
    const p = this.t.redis
      .pipeline()
      .xack(this.inbox, 'g', ...ids)
      .xdel(this.inbox, ...ids)
      .exec()
      .then(
        () => {},
        (e: Error) => this.t.report(e),
      );
    // the handover waits for every ack in flight, so it never moves an entry already handled
    this.flushing = Promise.all([this.flushing, p]).then(() => {});
    return this.flushing;
  }

  /** Moves the events that waited in the group's pending stream (no member then) to live members. */
  private async releasePending(): Promise<void> {
    if (this.closed) return;
    const pending = this.t.key('pending', this.spec.id);
    let released = 0;
    for (let page = 0; page < 20; page++) {
      const raw = (await this.t.redis.xrangeBuffer(
        pending,
        '-',
        '+',
        'COUNT',
        MOVE_PAGE,
      )) as unknown as RawEntry[];
      if (raw.length === 0) break;
      const { moved } = await this.t.moveEntries(this.spec.id, pending, raw, () => 0);
      released += moved;
      if (moved === 0) break; // no live target, or another member moved them first
    }
    if (released === 0) return;
    this.t.counters.released += released;
    this.t.log.info('router: moved events that waited for a member of their group', {
      group: this.spec.id,
      events: released,
    });
  }

  /**
   * Moves what is left in this member's inbox to live members (or the pending
   * stream). `all: false` moves only entries never read (safe while handlers
   * run); `all: true` moves the rest too, with attempt + 1 for read ones.
   */
  private async handOver(all: boolean): Promise<number> {
    const r = this.t.redis;
    const last = await this.lastDeliveredId();
    let start = all || last === null ? '-' : `(${last}`;
    let n = 0;
    for (;;) {
      const raw = (await r.xrangeBuffer(this.inbox, start, '+', 'COUNT', MOVE_PAGE)) as unknown as RawEntry[];
      if (raw.length === 0) break;
      const { moved, held } = await this.t.moveEntries(this.spec.id, this.inbox, raw, (id) =>
        last !== null && compareIds(id, last) <= 0 ? 1 : 0,
      );
      n += moved + held;
      start = `(${raw[raw.length - 1]![0].toString()}`;
    }
    this.t.counters.handedOver += n;
    return n;
  }

  /** The inbox group's last delivered id (entries after it were never read), or null without a group. */
  private async lastDeliveredId(): Promise<string | null> {
    const groups = (await this.t.redis.xinfo('GROUPS', this.inbox).catch(() => [])) as unknown[][];
    for (const g of groups) {
      const info: Record<string, unknown> = {};
      for (let i = 0; i + 1 < g.length; i += 2) info[String(g[i])] = g[i + 1];
      if (info.name === 'g') return String(info['last-delivered-id']);
    }
    return null;
  }

  /**
   * After close: hand over everything left in the inbox and delete it. Runs
   * when the last outstanding delivery settled, or when the transport closes
   * (whatever is still unsettled then is handed over too). Idempotent.
   */
  finish(): Promise<void> {
    if (!this.closed) return Promise.resolve();
    this.finishing ??= (async () => {
      await this.left; // once out of the members set, no publisher appends here any more
      await this.flushAcks();
      const n = await this.handOver(true);
      await this.t.redis.del(this.inbox);
      this.t.forget(this);
      if (n > 0)
        this.t.log.info('router: left a group and handed its events to live members', {
          group: this.spec.id,
          member: this.t.member,
          events: n,
        });
    })();
    return this.finishing;
  }

  /** Moves the inboxes of dead members to live ones (one reaper per dead member, by lock). */
  private async reap(): Promise<void> {
    if (this.closed) return;
    const r = this.t.redis;
    const group = this.spec.id;
    const dead = await r.zrangebyscore(this.t.key('members', group), '-inf', `(${Date.now() - this.t.ttl}`);
    if (dead.length === 0) return;
    for (const d of dead) {
      if (d === this.t.member) continue;
      const lock = await r.set(this.t.key('reap', group, d), this.t.member, 'PX', 10_000, 'NX');
      if (lock !== 'OK') continue;
      // out of the group first (publishers' appends for it then go to the pending stream), unless
      // it beat again since it was listed: a restarted member is not dead
      const removed = await r.eval(
        REMOVE_IF_STALE,
        1,
        this.t.key('members', group),
        d,
        Date.now() - this.t.ttl,
      );
      if (removed !== 1) continue;
      await this.t.bumpVersion();
      const inbox = this.t.key('inbox', group, d);
      let n = 0;
      for (;;) {
        const raw = (await r.xrangeBuffer(inbox, '-', '+', 'COUNT', MOVE_PAGE)) as unknown as RawEntry[];
        if (raw.length === 0) break;
        const { moved, held } = await this.t.moveEntries(group, inbox, raw, () => 1);
        n += moved + held;
        if (moved + held === 0) break;
      }
      // a member that came back meanwhile keeps its inbox (what was moved is handled twice at worst)
      await r.eval(DELETE_IF_ABSENT, 2, this.t.key('members', group), inbox, d);
      this.t.counters.reassigned += n;
      this.t.log.info('moved a dead member’s events to live members', { group, member: d, events: n });
    }
    await this.t.refresh();
  }

  setPatterns(): void {}
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }

  /**
   * Leaves the group at once (no new events are routed here; publishers see
   * it at their next publish) and hands over the entries never read. Entries
   * the bus is still handling are handed over when they settle, or when the
   * transport closes.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.reader?.disconnect();
    const r = this.t.redis;
    this.left = r.zrem(this.t.key('members', this.spec.id), this.t.member).then(() => this.t.bumpVersion());
    // awaited below, perhaps long after it failed (Redis gone mid-close): mark it handled meanwhile
    this.left.catch(() => {});
    await this.loop?.catch(() => {});
    // events waiting in lanes never reached the bus: they stay in the inbox and are handed over
    for (const lane of this.lanes.values()) this.outstanding -= lane.queue.length;
    this.lanes = new Map();
    await this.flushAcks();
    await this.left;
    await this.handOver(false);
    if (this.outstanding <= 0) await this.finish();
  }
}
