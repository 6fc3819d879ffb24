import { EventEmitter } from 'node:events';
import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  type EventHandler,
  isValidEventType,
  matchPattern,
  type QEEventBus,
  type SubscriptionOptions,
  uuidv7,
  validatePattern,
} from '@qe/core';
import type { Redis } from 'ioredis';
import semver from 'semver';
import {
  InvalidServiceError,
  InvalidVersionError,
  NoHealthyInstanceError,
  UnknownInstanceError,
} from './errors.js';

// biome-ignore lint/suspicious/noExplicitAny: the registry publishes its own types on any bus
export type AnyRegistryBus = QEEventBus<any>;

/** Event types of the registry (spec 003's "automatic service discovery via events"). */
export const ServiceEventTypes = {
  REGISTERED: 'service.registered',
  HEARTBEAT: 'service.heartbeat',
  HEALTH_CHANGED: 'service.health.changed',
  DEREGISTERED: 'service.deregistered',
  /** Published by the node that noticed an instance stopped heartbeating. */
  EXPIRED: 'service.expired',
} as const;

export type Health = 'healthy' | 'degraded' | 'unhealthy';

export interface Endpoint {
  protocol: string;
  url: string;
}

/** A schema a service declares for an event type it publishes or consumes (for `@qe/contracts`). */
export interface ContractDeclaration {
  eventType: string;
  /** A JSON Schema (any JSON object). */
  schema: Record<string, unknown>;
  /** The schema's own version. Default the service's version. */
  version?: string;
  direction?: 'publishes' | 'consumes';
}

export interface ServiceSpec {
  name: string;
  version: string;
  /** Default `<name>-<uuid>`. */
  instanceId?: string;
  endpoints?: Endpoint[];
  capabilities?: string[];
  /** Event types it publishes. */
  publishes?: string[];
  /** Patterns it consumes. */
  consumes?: string[];
  contracts?: ContractDeclaration[];
  metadata?: Record<string, string>;
  health?: Health;
}

export interface ServiceInstance {
  name: string;
  version: string;
  instanceId: string;
  nodeId: string;
  endpoints: Endpoint[];
  capabilities: string[];
  publishes: string[];
  consumes: string[];
  contracts: ContractDeclaration[];
  metadata: Record<string, string>;
  health: Health;
  registeredAt: number;
  lastSeen: number;
}

export interface ServiceQuery {
  name?: string;
  /** A semver range: `^1.2.0`, `>=2 <3`, `1.x`. */
  version?: string;
  /** Has every one of these capabilities. */
  capability?: string | string[];
  /** Publishes an event type matching this (exact type). */
  publishes?: string;
  /** Consumes this event type (one of its patterns matches it). */
  consumes?: string;
  /** Default `serving` (healthy or degraded); `any`; or one state. */
  health?: Health | 'any' | 'serving';
}

export type ServiceChange =
  | { kind: 'up'; instance: ServiceInstance }
  | { kind: 'down'; instance: ServiceInstance; reason: 'deregistered' | 'expired' }
  | { kind: 'health'; instance: ServiceInstance; previous: Health };

export interface ServiceRegistryOptions {
  bus: AnyRegistryBus;
  /** Default 1,000 ms. */
  heartbeatIntervalMs?: number;
  /** An instance not heard from for this long is dropped (`service.expired`). Default 3 intervals. */
  failureTimeoutMs?: number;
  /** An ioredis client: a registry that starts reads every live instance from Redis at once, instead of waiting one heartbeat. */
  redis?: Redis;
  keyPrefix?: string;
}

export interface RegistryStats {
  services: number;
  instances: number;
  healthy: number;
  degraded: number;
  unhealthy: number;
  /** Instances dropped because they stopped heartbeating (noticed here or announced by another registry). */
  expired: number;
  byService: Record<string, { instances: number; healthy: number; versions: string[] }>;
  timestamp: number;
}

/** What `register` returns: the instance's own controls. */
export interface ServiceHandle {
  readonly instanceId: string;
  setHealth(health: Health): Promise<void>;
  /**
   * Serves requests routed to this service (`registry.send(name, op, ...)`): a
   * member of the group `svc:<name>:<op>`, left while this instance is
   * unhealthy, so only healthy (or degraded) instances get requests.
   */
  serve(op: string, handler: EventHandler, options?: Omit<SubscriptionOptions, 'group'>): Promise<void>;
  deregister(): Promise<void>;
}

const OPTION_KEYS = ['bus', 'heartbeatIntervalMs', 'failureTimeoutMs', 'redis', 'keyPrefix'];
const SPEC_KEYS = [
  'name',
  'version',
  'instanceId',
  'endpoints',
  'capabilities',
  'publishes',
  'consumes',
  'contracts',
  'metadata',
  'health',
];
const NAME = /^[a-z0-9_-]{1,64}$/;
const ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const HEALTH: Health[] = ['healthy', 'degraded', 'unhealthy'];

interface LocalInstance {
  inst: ServiceInstance;
  served: {
    op: string;
    handler: EventHandler;
    options: Omit<SubscriptionOptions, 'group'>;
    unsub?: () => void;
  }[];
}

/**
 * Spec 003's ServiceRegistry on the bus: instances register, heartbeat and
 * deregister with events every registry hears, so each keeps the same view
 * (within one heartbeat interval); an instance that stops heartbeating is
 * dropped after `failureTimeoutMs`. Events: `change` (a `ServiceChange`).
 */
export class ServiceRegistry extends EventEmitter {
  readonly bus: AnyRegistryBus;
  readonly heartbeatIntervalMs: number;
  readonly failureTimeoutMs: number;
  private readonly redis: Redis | undefined;
  private readonly key: string;
  private readonly instances = new Map<string, ServiceInstance>();
  private readonly local = new Map<string, LocalInstance>();
  private readonly watchers = new Set<{ q: ServiceQuery; fn: (c: ServiceChange) => void }>();
  private unsub: (() => void) | undefined;
  private hb: NodeJS.Timeout | undefined;
  private checker: NodeJS.Timeout | undefined;
  private expiredCount = 0;
  private started = false;

  constructor(options: ServiceRegistryOptions) {
    super();
    if (options === null || typeof options !== 'object')
      throw new ConfigError('options', 'must be an object');
    assertKnownKeys(options, OPTION_KEYS, '');
    if (!options.bus || typeof options.bus.publish !== 'function')
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = options.bus;
    this.heartbeatIntervalMs = posInt('heartbeatIntervalMs', options.heartbeatIntervalMs, 1000, 10);
    this.failureTimeoutMs = posInt(
      'failureTimeoutMs',
      options.failureTimeoutMs,
      3 * this.heartbeatIntervalMs,
      this.heartbeatIntervalMs + 1,
    );
    if (options.redis !== undefined && typeof (options.redis as { hset?: unknown }).hset !== 'function')
      throw new ConfigError('redis', 'must be an ioredis client');
    this.redis = options.redis;
    this.key = `${options.keyPrefix ?? 'qe:registry'}:instances`;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const u = this.bus.subscribe('service.**', (e: AgentEvent) => this.onEvent(e));
    this.unsub = u;
    await u.ready;
    if (this.redis) {
      const now = Date.now();
      const all = await this.redis.hgetall(this.key);
      for (const json of Object.values(all)) {
        const inst = JSON.parse(json) as ServiceInstance;
        if (now - inst.lastSeen <= this.failureTimeoutMs) this.upsert({ ...inst, lastSeen: now });
      }
    }
    this.hb = setInterval(() => void this.heartbeat(), this.heartbeatIntervalMs);
    this.hb.unref();
    this.checker = setInterval(() => this.check(), Math.max(5, Math.min(250, this.heartbeatIntervalMs / 4)));
    this.checker.unref();
  }

  /** Deregisters this registry's instances, then stops listening. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    clearInterval(this.hb);
    clearInterval(this.checker);
    for (const id of [...this.local.keys()]) await this.deregister(id).catch(() => undefined);
    this.unsub?.();
  }

  /** Registers an instance hosted by this process (`service.registered`), heartbeated until `deregister`. */
  async register(spec: ServiceSpec): Promise<ServiceHandle> {
    if (!this.started) throw new InvalidServiceError('registry', 'call start() first');
    const inst = normalizeSpec(spec, this.bus.nodeId);
    if (this.local.has(inst.instanceId))
      throw new InvalidServiceError('instanceId', `instance ${inst.instanceId} is already registered here`);
    this.local.set(inst.instanceId, { inst, served: [] });
    this.upsert({ ...inst });
    await this.announce(ServiceEventTypes.REGISTERED, inst);
    const id = inst.instanceId;
    return {
      instanceId: id,
      setHealth: (h) => this.setHealth(id, h),
      serve: (op, handler, options) => this.serve(id, op, handler, options),
      deregister: () => this.deregister(id),
    };
  }

  async setHealth(instanceId: string, health: Health): Promise<void> {
    const l = this.local.get(instanceId);
    if (!l) throw new UnknownInstanceError(instanceId);
    if (!HEALTH.includes(health))
      throw new InvalidServiceError('health', `must be one of ${HEALTH.join(', ')}`);
    if (l.inst.health === health) return;
    l.inst.health = health;
    for (const s of l.served) this.applyServing(l, s);
    this.upsert({ ...l.inst });
    await this.announce(ServiceEventTypes.HEALTH_CHANGED, l.inst);
  }

  async deregister(instanceId: string): Promise<void> {
    const l = this.local.get(instanceId);
    if (!l) throw new UnknownInstanceError(instanceId);
    for (const s of l.served) s.unsub?.();
    this.local.delete(instanceId);
    this.remove(instanceId, 'deregistered');
    await this.redis?.hdel(this.key, instanceId).catch(() => undefined);
    await this.bus
      .publish({ type: ServiceEventTypes.DEREGISTERED, agentId: instanceId, data: { ...l.inst } })
      .catch(() => undefined);
  }

  /** Instances matching the query, from this registry's view. */
  find(query: ServiceQuery = {}): ServiceInstance[] {
    const match = compileQuery(query);
    const out: ServiceInstance[] = [];
    for (const i of this.instances.values()) if (match(i)) out.push(clone(i));
    return out.sort(
      (a, b) => semver.rcompare(a.version, b.version) || a.instanceId.localeCompare(b.instanceId),
    );
  }

  get(instanceId: string): ServiceInstance | undefined {
    const i = this.instances.get(instanceId);
    return i ? clone(i) : undefined;
  }

  /** Calls `listener` for each instance that comes, goes or changes health and matches `query`. Returns an unwatch function. */
  watch(query: ServiceQuery, listener: (change: ServiceChange) => void): () => void {
    compileQuery({ ...query, health: 'any' });
    if (typeof listener !== 'function') throw new InvalidServiceError('listener', 'must be a function');
    const w = { q: { ...query, health: 'any' as const }, fn: listener };
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  /**
   * The schemas the instances of a service declare (latest version first; one
   * entry per event type, direction and schema version), for the contracts
   * package to validate against.
   */
  contracts(
    name: string,
    versionRange?: string,
  ): (ContractDeclaration & { service: string; serviceVersion: string })[] {
    const seen = new Set<string>();
    const out: (ContractDeclaration & { service: string; serviceVersion: string })[] = [];
    for (const i of this.find({ name, ...(versionRange ? { version: versionRange } : {}), health: 'any' }))
      for (const c of i.contracts) {
        const key = `${c.eventType}|${c.direction}|${c.version}`;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push({ ...structuredClone(c), service: i.name, serviceVersion: i.version });
      }
    return out;
  }

  /**
   * Routes one event to one serving instance of `service` (a member of the
   * group `svc:<service>:<op>`): the type is `svc.<service>.<op>`. Throws
   * `NoHealthyInstanceError` when no instance is healthy or degraded.
   */
  async send(
    service: string,
    op: string,
    data: unknown,
    options: { agentId?: string; priority?: 0 | 1 | 2 | 3 | 4 } = {},
  ) {
    checkName('service', service);
    checkName('op', op);
    const all = this.find({ name: service, health: 'any' });
    if (!all.some((i) => i.health !== 'unhealthy')) throw new NoHealthyInstanceError(service, all.length);
    return this.bus.publish({
      type: `svc.${service}.${op}`,
      agentId: options.agentId ?? this.bus.nodeId,
      ...(options.priority !== undefined ? { priority: options.priority } : {}),
      data,
    });
  }

  /** Counts for dashboards and metrics; JSON-safe. */
  stats(): RegistryStats {
    const byService: RegistryStats['byService'] = {};
    let healthy = 0;
    let degraded = 0;
    let unhealthy = 0;
    for (const i of this.instances.values()) {
      const s = (byService[i.name] ??= { instances: 0, healthy: 0, versions: [] });
      s.instances++;
      if (i.health === 'healthy') {
        s.healthy++;
        healthy++;
      } else if (i.health === 'degraded') degraded++;
      else unhealthy++;
      if (!s.versions.includes(i.version)) s.versions.push(i.version);
    }
    for (const s of Object.values(byService)) s.versions.sort(semver.rcompare);
    return {
      services: Object.keys(byService).length,
      instances: this.instances.size,
      healthy,
      degraded,
      unhealthy,
      expired: this.expiredCount,
      byService,
      timestamp: Date.now(),
    };
  }

  // ---------------------------------------------------------------- internals

  private async serve(
    instanceId: string,
    op: string,
    handler: EventHandler,
    options: Omit<SubscriptionOptions, 'group'> = {},
  ): Promise<void> {
    const l = this.local.get(instanceId);
    if (!l) throw new UnknownInstanceError(instanceId);
    checkName('op', op);
    if (typeof handler !== 'function') throw new InvalidServiceError('handler', 'must be a function');
    if ((options as { group?: unknown }).group !== undefined)
      throw new InvalidServiceError('group', 'is set by the registry (svc:<service>:<op>)');
    const s: LocalInstance['served'][number] = { op, handler, options };
    l.served.push(s);
    await this.applyServing(l, s);
  }

  /** Joins the group while serving (healthy or degraded), leaves it while unhealthy. */
  private async applyServing(l: LocalInstance, s: LocalInstance['served'][number]): Promise<void> {
    const serving = l.inst.health !== 'unhealthy';
    if (serving && !s.unsub) {
      const u = this.bus.subscribe(`svc.${l.inst.name}.${s.op}`, s.handler, {
        ...s.options,
        group: `svc:${l.inst.name}:${s.op}`,
      });
      s.unsub = u;
      await u.ready;
    } else if (!serving && s.unsub) {
      s.unsub();
      s.unsub = undefined;
    }
  }

  private async announce(type: string, inst: ServiceInstance): Promise<void> {
    inst.lastSeen = Date.now();
    await this.redis?.hset(this.key, inst.instanceId, JSON.stringify(inst));
    await this.bus.publish({ type, agentId: inst.instanceId, data: { ...inst } });
  }

  private async heartbeat(): Promise<void> {
    if (this.local.size === 0) return;
    const now = Date.now();
    try {
      if (this.redis) {
        const args: string[] = [];
        for (const l of this.local.values()) {
          l.inst.lastSeen = now;
          args.push(l.inst.instanceId, JSON.stringify(l.inst));
        }
        await this.redis.hset(this.key, ...args);
      }
      await this.bus.publishBatch(
        [...this.local.values()].map((l) => ({
          type: ServiceEventTypes.HEARTBEAT,
          agentId: l.inst.instanceId,
          data: { ...l.inst, lastSeen: now },
        })),
      );
    } catch (err) {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    }
  }

  private check(): void {
    const now = Date.now();
    for (const i of [...this.instances.values()]) {
      if (this.local.has(i.instanceId)) continue;
      if (now - i.lastSeen > this.failureTimeoutMs) {
        this.remove(i.instanceId, 'expired');
        void this.redis
          ?.eval(
            // only if nobody refreshed it meanwhile
            `local v = redis.call('HGET', KEYS[1], ARGV[1]) if v and cjson.decode(v).lastSeen <= tonumber(ARGV[2]) then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0`,
            1,
            this.key,
            i.instanceId,
            now - this.failureTimeoutMs,
          )
          .catch(() => undefined);
        void this.bus
          .publish({
            type: ServiceEventTypes.EXPIRED,
            agentId: this.bus.nodeId,
            data: { ...i, silentForMs: now - i.lastSeen },
          })
          .catch(() => undefined);
      }
    }
  }

  private onEvent(e: AgentEvent): void {
    const d = e.data as ServiceInstance;
    if (!d || typeof d.instanceId !== 'string' || this.local.has(d.instanceId)) return;
    switch (e.type) {
      case ServiceEventTypes.REGISTERED:
      case ServiceEventTypes.HEARTBEAT:
      case ServiceEventTypes.HEALTH_CHANGED:
        this.upsert({ ...d, lastSeen: Date.now() });
        break;
      case ServiceEventTypes.DEREGISTERED:
        this.remove(d.instanceId, 'deregistered');
        break;
      case ServiceEventTypes.EXPIRED: {
        const cur = this.instances.get(d.instanceId);
        if (cur && cur.lastSeen <= e.timestamp - this.failureTimeoutMs / 2)
          this.remove(d.instanceId, 'expired');
        break;
      }
    }
  }

  private upsert(inst: ServiceInstance): void {
    const prev = this.instances.get(inst.instanceId);
    this.instances.set(inst.instanceId, inst);
    if (!prev) this.notify({ kind: 'up', instance: clone(inst) });
    else if (prev.health !== inst.health)
      this.notify({ kind: 'health', instance: clone(inst), previous: prev.health });
  }

  private remove(instanceId: string, reason: 'deregistered' | 'expired'): void {
    const prev = this.instances.get(instanceId);
    if (!prev) return;
    this.instances.delete(instanceId);
    if (reason === 'expired') this.expiredCount++;
    this.notify({ kind: 'down', instance: clone(prev), reason });
  }

  private notify(c: ServiceChange): void {
    this.emit('change', c);
    for (const w of this.watchers) {
      if (!compileQuery(w.q)(c.instance)) continue;
      try {
        w.fn(c);
      } catch (err) {
        if (this.listenerCount('error') > 0) this.emit('error', err);
      }
    }
  }
}

// ---------------------------------------------------------------- helpers

function posInt(field: string, v: unknown, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new InvalidServiceError(field, `must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

function checkName(field: string, v: unknown): string {
  if (typeof v !== 'string' || !NAME.test(v))
    throw new InvalidServiceError(field, `must be 1-64 characters of [a-z0-9_-], got ${JSON.stringify(v)}`);
  return v;
}

function strings(field: string, v: unknown, check: (f: string, s: string) => void): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new InvalidServiceError(field, 'must be an array of strings');
  for (const [i, s] of v.entries()) {
    if (typeof s !== 'string') throw new InvalidServiceError(`${field}[${i}]`, 'must be a string');
    check(`${field}[${i}]`, s);
  }
  return [...new Set(v as string[])];
}

const clone = (i: ServiceInstance): ServiceInstance => structuredClone(i);

export function normalizeSpec(spec: ServiceSpec, nodeId: string): ServiceInstance {
  if (spec === null || typeof spec !== 'object')
    throw new InvalidServiceError('service', 'must be an object');
  assertKnownKeys(spec, SPEC_KEYS, 'service.', {}, 'validation');
  const name = checkName('name', spec.name);
  if (typeof spec.version !== 'string' || !semver.valid(spec.version))
    throw new InvalidVersionError('version', spec.version);
  const instanceId = spec.instanceId ?? `${name}-${uuidv7()}`;
  if (typeof instanceId !== 'string' || !ID.test(instanceId))
    throw new InvalidServiceError('instanceId', 'must be 1-128 characters of [A-Za-z0-9_.:-]');
  const endpoints: Endpoint[] = [];
  if (spec.endpoints !== undefined) {
    if (!Array.isArray(spec.endpoints))
      throw new InvalidServiceError('endpoints', 'must be an array of { protocol, url }');
    for (const [i, e] of spec.endpoints.entries()) {
      if (!e || typeof e.protocol !== 'string' || typeof e.url !== 'string' || !e.protocol || !e.url)
        throw new InvalidServiceError(`endpoints[${i}]`, 'must be { protocol: string, url: string }');
      endpoints.push({ protocol: e.protocol, url: e.url });
    }
  }
  const capabilities = strings('capabilities', spec.capabilities, (f, s) => {
    if (!ID.test(s)) throw new InvalidServiceError(f, 'must be 1-128 characters of [A-Za-z0-9_.:-]');
  });
  const publishes = strings('publishes', spec.publishes, (f, s) => {
    if (!isValidEventType(s)) throw new InvalidServiceError(f, `is not an event type: ${JSON.stringify(s)}`);
  });
  const consumes = strings('consumes', spec.consumes, (f, s) => {
    try {
      validatePattern(s);
    } catch {
      throw new InvalidServiceError(f, `is not a pattern: ${JSON.stringify(s)}`);
    }
  });
  const contracts: ContractDeclaration[] = [];
  if (spec.contracts !== undefined) {
    if (!Array.isArray(spec.contracts)) throw new InvalidServiceError('contracts', 'must be an array');
    for (const [i, c] of spec.contracts.entries()) {
      const f = `contracts[${i}]`;
      if (!c || typeof c !== 'object') throw new InvalidServiceError(f, 'must be { eventType, schema }');
      if (!isValidEventType(c.eventType))
        throw new InvalidServiceError(`${f}.eventType`, 'is not an event type');
      if (!c.schema || typeof c.schema !== 'object' || Array.isArray(c.schema))
        throw new InvalidServiceError(`${f}.schema`, 'must be a JSON Schema object');
      try {
        JSON.stringify(c.schema);
      } catch {
        throw new InvalidServiceError(`${f}.schema`, 'must be JSON');
      }
      if (c.version !== undefined && !semver.valid(c.version))
        throw new InvalidVersionError(`${f}.version`, c.version);
      const direction =
        c.direction ??
        (consumes.some((p) => matchPattern(p, c.eventType)) && !publishes.includes(c.eventType)
          ? 'consumes'
          : 'publishes');
      if (direction !== 'publishes' && direction !== 'consumes')
        throw new InvalidServiceError(`${f}.direction`, "must be 'publishes' or 'consumes'");
      contracts.push({
        eventType: c.eventType,
        schema: structuredClone(c.schema),
        version: c.version ?? spec.version,
        direction,
      });
    }
  }
  const metadata: Record<string, string> = {};
  if (spec.metadata !== undefined) {
    if (typeof spec.metadata !== 'object' || spec.metadata === null)
      throw new InvalidServiceError('metadata', 'must be an object');
    for (const [k, v] of Object.entries(spec.metadata)) {
      if (typeof v !== 'string') throw new InvalidServiceError(`metadata.${k}`, 'must be a string');
      metadata[k] = v;
    }
  }
  const health = spec.health ?? 'healthy';
  if (!HEALTH.includes(health))
    throw new InvalidServiceError('health', `must be one of ${HEALTH.join(', ')}`);
  const now = Date.now();
  return {
    name,
    version: semver.clean(spec.version)!,
    instanceId,
    nodeId,
    endpoints,
    capabilities,
    publishes,
    consumes,
    contracts,
    metadata,
    health,
    registeredAt: now,
    lastSeen: now,
  };
}

function compileQuery(q: ServiceQuery): (i: ServiceInstance) => boolean {
  if (q === null || typeof q !== 'object') throw new InvalidServiceError('query', 'must be an object');
  assertKnownKeys(
    q,
    ['name', 'version', 'capability', 'publishes', 'consumes', 'health'],
    'query.',
    {},
    'validation',
  );
  if (q.name !== undefined) checkName('name', q.name);
  if (q.version !== undefined && (typeof q.version !== 'string' || semver.validRange(q.version) === null))
    throw new InvalidVersionError('range', q.version);
  const caps = q.capability === undefined ? [] : Array.isArray(q.capability) ? q.capability : [q.capability];
  const health = q.health ?? 'serving';
  if (health !== 'any' && health !== 'serving' && !HEALTH.includes(health))
    throw new InvalidServiceError('health', "must be 'any', 'serving', 'healthy', 'degraded' or 'unhealthy'");
  return (i) =>
    (q.name === undefined || i.name === q.name) &&
    (q.version === undefined || semver.satisfies(i.version, q.version)) &&
    caps.every((c) => i.capabilities.includes(c)) &&
    (q.publishes === undefined || i.publishes.includes(q.publishes)) &&
    (q.consumes === undefined || i.consumes.some((p) => matchPattern(p, q.consumes!))) &&
    (health === 'any' || (health === 'serving' ? i.health !== 'unhealthy' : i.health === health));
}
