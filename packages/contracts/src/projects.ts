import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  compilePattern,
  type Logger,
  noopLogger,
  PermanentError,
  type QEEventBus,
  RateLimitedError,
  TransportError,
  ValidationError,
  validatePattern,
} from '@qe/core';
import { MemoryTokenBuckets, RedisTokenBuckets, type TokenBucketStore } from '@qe/reliability';
import type { Redis } from 'ioredis';
import { type AuditLog, type AuditOutcome, MemoryAuditLog, RedisAuditLog } from './audit.js';
import {
  ContractViolationError,
  CrossProjectForbiddenError,
  CrossProjectUnauthorizedError,
  SchemaValidationError,
} from './errors.js';
import type { ContractRegistry } from './registry.js';

/** A project that takes part in cross-project messaging (spec 003's `registerProject`). */
export interface ProjectConfig {
  projectId: string;
  name?: string;
  /** Its messages travel on `<channelPrefix>.<namespace>.<type>`: `[a-z0-9_-]` segments. */
  namespace: string;
  /** Event types (patterns) this project may send. */
  allowedEventTypes: string[];
  /** Project ids this project may send to (`*`: any). */
  allowedTargets: string[];
  /** Event types (patterns) this project accepts from others. Default `['**']`. */
  acceptedEventTypes?: string[];
  /** Project ids it accepts messages from. Default `['*']` (whoever may reach it). */
  acceptFrom?: string[];
  /**
   * Its secret (at least 16 characters; `generateCredential()` makes one). Only a
   * salted SHA-256 of it is stored; it is compared in constant time.
   */
  credential?: string;
  /**
   * Instead of `credential`: its salted hash as `hashCredential(credential)` made it,
   * so a projects file need not hold the secret.
   */
  credentialHash?: { hash: string; salt: string };
  /** Authenticated gateway principals (JWT `sub`) that act as this project. */
  principals?: string[];
  /** Messages this project may send per window (a token bucket, shared on Redis). */
  rateLimit?: { windowMs: number; maxMessages: number };
}

/** A registered project as stored: the credential only as a salted hash. */
export interface ProjectRecord extends Omit<ProjectConfig, 'credential' | 'credentialHash'> {
  acceptedEventTypes: string[];
  acceptFrom: string[];
  credentialHash?: string;
  credentialSalt?: string;
  updatedAt: number;
}

/** A message as the target project's handler sees it. */
export interface CrossProjectMessage<T = unknown> {
  id: string;
  from: string;
  to: string;
  type: string;
  data: T;
  /** The contract version it was written against, when a contract covers it. */
  version?: string;
  timestamp: number;
  event: AgentEvent;
}

/** Who sends: a project with its credential, or a gateway principal mapped to a project. */
export type SenderAuth =
  | { credential: string }
  | { principal: { sub: string; claims?: Record<string, unknown> } };

export interface SendOptions {
  from: string;
  to: string;
  type: string;
  data: unknown;
  /** The project's credential (or give `principal`). */
  credential?: string;
  /** A principal the gateway already verified (its JWT subject), mapped to `from`. */
  principal?: { sub: string; claims?: Record<string, unknown> };
  correlationId?: string;
}

export interface CrossProjectOptions {
  bus: QEEventBus;
  /** Shared projects, rate limits and audit log on Redis; omit for in-process. */
  redis?: Redis;
  /** Default `qe:xp`. */
  keyPrefix?: string;
  /** First segment of the bus event types messages travel on. Default `xp`. */
  channelPrefix?: string;
  /** When given, `data` is checked against its contract on send (refused: `invalid`) and on receive (dead-lettered). */
  contracts?: ContractRegistry;
  /** Default: a `RedisAuditLog` at `<keyPrefix>:audit` on Redis, a `MemoryAuditLog` otherwise. */
  audit?: AuditLog;
  /** Default: `RedisTokenBuckets` on Redis, `MemoryTokenBuckets` otherwise. */
  buckets?: TokenBucketStore;
  /** Maps a verified gateway principal to a project id. Default: the project listing `sub` in `principals`. */
  principalToProject?: (principal: { sub: string; claims?: Record<string, unknown> }) => string | undefined;
  logger?: Logger;
}

export interface CrossProjectStats {
  /** Messages by outcome (`delivered` and each refusal reason). */
  messages: Record<AuditOutcome, number>;
  /** Messages a receiver dead-lettered (forged, or failing their contract). */
  receiveRejected: number;
}

const PROJECT_KEYS = [
  'projectId',
  'name',
  'namespace',
  'allowedEventTypes',
  'allowedTargets',
  'acceptedEventTypes',
  'acceptFrom',
  'credential',
  'credentialHash',
  'principals',
  'rateLimit',
];
const OPTION_KEYS = [
  'bus',
  'redis',
  'keyPrefix',
  'channelPrefix',
  'contracts',
  'audit',
  'buckets',
  'principalToProject',
  'logger',
];
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const SEGMENT_RE = /^[a-z0-9_-]+$/;

/** A random credential (32 bytes, base64url). */
export function generateCredential(): string {
  return randomBytes(32).toString('base64url');
}

function digest(credential: string, salt: Buffer): Buffer {
  return createHash('sha256').update(salt).update(credential, 'utf8').digest();
}

/**
 * The salted SHA-256 of a credential, for `registerProject({ credentialHash })`
 * (a projects file, a secret manager): hex strings.
 */
export function hashCredential(credential: string): { hash: string; salt: string } {
  if (typeof credential !== 'string' || credential.length < 16)
    throw new ValidationError(
      'credential',
      'must be a string of at least 16 characters (use generateCredential())',
    );
  const salt = randomBytes(16);
  return { hash: digest(credential, salt).toString('hex'), salt: salt.toString('hex') };
}

const DUMMY_SALT = randomBytes(16);
const DUMMY_HASH = digest('dummy', DUMMY_SALT);

interface CompiledProject {
  record: ProjectRecord;
  sends: ((t: string) => boolean)[];
  accepts: ((t: string) => boolean)[];
  targets: Set<string>;
  from: Set<string>;
  hash?: Buffer;
  salt?: Buffer;
}

function compileProject(record: ProjectRecord): CompiledProject {
  const m = (ps: string[]) => ps.map((p) => compilePattern(p)).map((c) => (t: string) => c.matches(t));
  return {
    record,
    sends: m(record.allowedEventTypes),
    accepts: m(record.acceptedEventTypes),
    targets: new Set(record.allowedTargets),
    from: new Set(record.acceptFrom),
    ...(record.credentialHash
      ? { hash: Buffer.from(record.credentialHash, 'hex'), salt: Buffer.from(record.credentialSalt!, 'hex') }
      : {}),
  };
}

function checkProject(c: ProjectConfig): void {
  assertKnownKeys(c, PROJECT_KEYS, 'project.', {}, 'validation');
  if (typeof c.projectId !== 'string' || !ID_RE.test(c.projectId))
    throw new ValidationError('projectId', 'must be 1-128 characters of [A-Za-z0-9_.:-]');
  if (typeof c.namespace !== 'string' || !c.namespace.split('.').every((s) => SEGMENT_RE.test(s)))
    throw new ValidationError('namespace', 'must be dot-separated segments of [a-z0-9_-]');
  const patterns = (field: string, v: unknown, optional = false) => {
    if (v === undefined && optional) return;
    if (!Array.isArray(v)) throw new ValidationError(field, 'must be an array of event type patterns');
    for (const [i, p] of v.entries()) {
      try {
        validatePattern(p);
      } catch (e) {
        throw new ValidationError(`${field}[${i}]`, (e as Error).message);
      }
    }
  };
  const ids = (field: string, v: unknown, optional = false) => {
    if (v === undefined && optional) return;
    if (!Array.isArray(v)) throw new ValidationError(field, 'must be an array of project ids');
    for (const [i, p] of v.entries())
      if (typeof p !== 'string' || (p !== '*' && !ID_RE.test(p)))
        throw new ValidationError(`${field}[${i}]`, 'must be a project id or "*"');
  };
  patterns('allowedEventTypes', c.allowedEventTypes);
  patterns('acceptedEventTypes', c.acceptedEventTypes, true);
  ids('allowedTargets', c.allowedTargets);
  ids('acceptFrom', c.acceptFrom, true);
  if (c.credentialHash !== undefined) {
    if (c.credential !== undefined)
      throw new ValidationError('credentialHash', 'give credential or credentialHash, not both');
    const h = c.credentialHash as { hash?: unknown; salt?: unknown };
    if (typeof h !== 'object' || h === null || typeof h.hash !== 'string' || !/^[0-9a-f]{64}$/.test(h.hash))
      throw new ValidationError('credentialHash.hash', 'must be 64 hex characters (hashCredential())');
    if (typeof h.salt !== 'string' || !/^[0-9a-f]{32}$/.test(h.salt))
      throw new ValidationError('credentialHash.salt', 'must be 32 hex characters (hashCredential())');
  }
  if (c.credential !== undefined && (typeof c.credential !== 'string' || c.credential.length < 16))
    throw new ValidationError(
      'credential',
      'must be a string of at least 16 characters (use generateCredential())',
    );
  if (
    c.principals !== undefined &&
    (!Array.isArray(c.principals) || c.principals.some((p) => typeof p !== 'string' || !p))
  )
    throw new ValidationError('principals', 'must be an array of non-empty strings');
  if (c.rateLimit !== undefined) {
    assertKnownKeys(c.rateLimit, ['windowMs', 'maxMessages'], 'rateLimit.', {}, 'validation');
    for (const k of ['windowMs', 'maxMessages'] as const)
      if (!Number.isInteger(c.rateLimit[k]) || c.rateLimit[k] < 1)
        throw new ValidationError(`rateLimit.${k}`, 'must be a positive integer');
  }
}

const zeroOutcomes = (): Record<AuditOutcome, number> => ({
  delivered: 0,
  unknown_project: 0,
  bad_credential: 0,
  forbidden_type: 0,
  forbidden_target: 0,
  not_accepted: 0,
  rate_limited: 0,
  invalid: 0,
});

/**
 * Cross-project messaging over a bus (spec 003): projects registered with a
 * namespace, what they may send and to whom, what they accept, a credential and
 * a rate limit. `send` goes through only if the sender authenticates, may send
 * the type, may reach the target and the target accepts it (and, with a contract
 * registry, the data satisfies its contract), within the sender's rate limit.
 * Every message and every refusal is counted and written to the audit log.
 *
 * On Redis, projects are shared by every process (changes announced on a
 * channel), rate limits are shared token buckets and the audit log is a stream.
 */
export class CrossProjectMessenger extends EventEmitter<{ error: [Error]; change: [ProjectRecord] }> {
  private readonly bus: QEEventBus;
  private readonly redis: Redis | undefined;
  private readonly prefix: string;
  private readonly channelPrefix: string;
  private readonly contracts: ContractRegistry | undefined;
  readonly audit: AuditLog;
  private readonly buckets: TokenBucketStore;
  private readonly principalToProject: CrossProjectOptions['principalToProject'];
  private readonly logger: Logger;
  private readonly projects = new Map<string, CompiledProject>();
  private readonly counts = zeroOutcomes();
  private receiveRejected = 0;
  private sub: Redis | undefined;

  constructor(options: CrossProjectOptions) {
    super();
    if (typeof options !== 'object' || options === null)
      throw new ConfigError('options', 'must be an object');
    assertKnownKeys(options, OPTION_KEYS);
    if (!options.bus || typeof options.bus.publish !== 'function')
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = options.bus;
    this.redis = options.redis;
    this.prefix = options.keyPrefix ?? 'qe:xp';
    this.channelPrefix = options.channelPrefix ?? 'xp';
    if (!SEGMENT_RE.test(this.channelPrefix))
      throw new ConfigError('channelPrefix', 'must be one segment of [a-z0-9_-]');
    this.contracts = options.contracts;
    this.audit =
      options.audit ??
      (this.redis
        ? new RedisAuditLog({ redis: this.redis, key: `${this.prefix}:audit` })
        : new MemoryAuditLog());
    this.buckets =
      options.buckets ??
      (this.redis ? new RedisTokenBuckets(this.redis, `${this.prefix}:rate`) : new MemoryTokenBuckets());
    this.principalToProject = options.principalToProject;
    this.logger = options.logger ?? noopLogger;
  }

  private get keys() {
    return { projects: `${this.prefix}:projects`, channel: `${this.prefix}:projects:changes` };
  }

  /** On Redis: subscribes to project changes and loads every project. */
  async start(): Promise<void> {
    if (!this.redis || this.sub) return;
    const sub = this.redis.duplicate();
    sub.on('error', (e) => this.logger.warn('project registry subscriber error', { error: e.message }));
    this.sub = sub;
    await sub.subscribe(this.keys.channel);
    sub.on('message', (_ch, id: string) => {
      void this.loadProject(id).catch((e: Error) => {
        if (this.listenerCount('error') > 0) this.emit('error', e);
      });
    });
    const all = await this.redis.hgetall(this.keys.projects);
    for (const json of Object.values(all)) this.install(JSON.parse(json) as ProjectRecord);
  }

  async close(): Promise<void> {
    const s = this.sub;
    this.sub = undefined;
    if (s) await s.quit().catch(() => s.disconnect());
  }

  private async loadProject(id: string): Promise<CompiledProject | undefined> {
    const json = await this.redis!.hget(this.keys.projects, id);
    if (json === null) return undefined;
    return this.install(JSON.parse(json) as ProjectRecord);
  }

  private install(record: ProjectRecord): CompiledProject {
    const cur = this.projects.get(record.projectId);
    if (cur && cur.record.updatedAt > record.updatedAt) return cur;
    const c = compileProject(record);
    this.projects.set(record.projectId, c);
    this.emit('change', record);
    return c;
  }

  /** Registers or replaces a project (everywhere, on Redis). Returns what is stored (no credential). */
  async registerProject(config: ProjectConfig): Promise<ProjectRecord> {
    checkProject(config);
    const { credential, credentialHash, ...rest } = config;
    const hashed = credential !== undefined ? hashCredential(credential) : credentialHash;
    const record: ProjectRecord = {
      ...rest,
      acceptedEventTypes: config.acceptedEventTypes ?? ['**'],
      acceptFrom: config.acceptFrom ?? ['*'],
      ...(hashed ? { credentialHash: hashed.hash, credentialSalt: hashed.salt } : {}),
      updatedAt: Date.now(),
    };
    const stored = JSON.parse(JSON.stringify(record)) as ProjectRecord;
    if (this.redis) {
      await this.redis
        .multi()
        .hset(this.keys.projects, stored.projectId, JSON.stringify(stored))
        .publish(this.keys.channel, stored.projectId)
        .exec();
    }
    this.install(stored);
    return stored;
  }

  /** A project as stored, or undefined. */
  getProject(projectId: string): ProjectRecord | undefined {
    return this.projects.get(projectId)?.record;
  }

  listProjects(): ProjectRecord[] {
    return [...this.projects.values()].map((p) => p.record);
  }

  private async project(id: string): Promise<CompiledProject | undefined> {
    if (typeof id !== 'string') return undefined;
    return this.projects.get(id) ?? (this.redis && ID_RE.test(id) ? this.loadProject(id) : undefined);
  }

  /** The bus event type a message of `type` to `project` travels on. */
  channelFor(project: ProjectRecord, type: string): string {
    return `${this.channelPrefix}.${project.namespace}.${type}`;
  }

  /**
   * Sends `data` as a `type` message from one project to another. Resolves with the
   * message id once it is published and audited. Refusals: `CrossProjectForbiddenError`
   * (`FORBIDDEN`: unknown project, type, target, not accepted),
   * `CrossProjectUnauthorizedError` (`UNAUTHORIZED`: bad or missing credential),
   * `RateLimitedError` (`RATE_LIMITED`), `SchemaValidationError` (`VALIDATION`:
   * the data fails its contract). Each is counted and audited.
   */
  async send(options: SendOptions): Promise<string> {
    if (typeof options !== 'object' || options === null)
      throw new ValidationError('options', 'must be an object');
    assertKnownKeys(
      options,
      ['from', 'to', 'type', 'data', 'credential', 'principal', 'correlationId'],
      '',
      {},
      'validation',
    );
    const { to, type, data } = options;
    let from = options.from;
    if (typeof to !== 'string' || !to) throw new ValidationError('to', 'must be a project id');
    try {
      validatePattern(type);
      if (type.includes('*')) throw new ValidationError('type', 'must be an event type, not a pattern');
    } catch (e) {
      throw e instanceof ValidationError ? e : new ValidationError('type', (e as Error).message);
    }
    if (options.principal !== undefined) {
      const sub = options.principal?.sub;
      if (typeof sub !== 'string' || !sub)
        throw new ValidationError('principal.sub', 'must be a non-empty string');
      const mapped =
        this.principalToProject?.(options.principal) ??
        [...this.projects.values()].find((p) => p.record.principals?.includes(sub))?.record.projectId;
      if (from === undefined) from = mapped as string;
      if (mapped === undefined || mapped !== from)
        return this.refuse(
          { from: typeof from === 'string' && from ? from : sub, to, type, principal: sub },
          new CrossProjectUnauthorizedError(`principal ${sub} does not act as project ${from ?? '(none)'}`, {
            principal: sub,
            from,
          }),
        );
    }
    if (typeof from !== 'string' || !from) throw new ValidationError('from', 'must be a project id');
    const who = { from, to, type, ...(options.principal ? { principal: options.principal.sub } : {}) };
    const src = await this.project(from);
    if (!src) {
      // spend the same time as a real comparison, so probing ids learns nothing from timing
      if (options.credential !== undefined)
        timingSafeEqual(digest(String(options.credential), DUMMY_SALT), DUMMY_HASH);
      return this.refuse(
        who,
        new CrossProjectForbiddenError('unknown_project', `unknown project ${from}`, { project: from }),
      );
    }
    if (options.principal === undefined) {
      const cred = options.credential;
      const ok =
        typeof cred === 'string' &&
        src.hash !== undefined &&
        timingSafeEqual(digest(cred, src.salt!), src.hash);
      if (!ok)
        return this.refuse(
          who,
          new CrossProjectUnauthorizedError(`bad or missing credential for project ${from}`, {
            project: from,
          }),
        );
    }
    const dst = await this.project(to);
    if (!dst)
      return this.refuse(
        who,
        new CrossProjectForbiddenError('unknown_project', `unknown project ${to}`, { project: to }),
      );
    if (!src.sends.some((m) => m(type)))
      return this.refuse(
        who,
        new CrossProjectForbiddenError('forbidden_type', `project ${from} may not send ${type}`, who),
      );
    if (!src.targets.has(to) && !src.targets.has('*'))
      return this.refuse(
        who,
        new CrossProjectForbiddenError('forbidden_target', `project ${from} may not reach ${to}`, who),
      );
    if (!dst.accepts.some((m) => m(type)) || (!dst.from.has(from) && !dst.from.has('*')))
      return this.refuse(
        who,
        new CrossProjectForbiddenError(
          'not_accepted',
          `project ${to} does not accept ${type} from ${from}`,
          who,
        ),
      );
    let version: string | undefined;
    if (this.contracts) {
      const r = this.contracts.check({ type, data, metadata: undefined });
      if (r.contract) {
        version = r.contract.version;
        if (r.issues.length) return this.refuse(who, new SchemaValidationError(type, version, r.issues));
      }
    }
    const rl = src.record.rateLimit;
    if (rl) {
      const t = await this.buckets.take(`xp:${from}`, rl.maxMessages, rl.maxMessages / rl.windowMs, 1);
      if (!t.allowed)
        return this.refuse(
          who,
          new RateLimitedError(
            `project ${from} is over its rate of ${rl.maxMessages} per ${rl.windowMs} ms`,
            t.retryAfterMs,
            {
              details: { reason: 'rate_limited', project: from },
            },
          ),
        );
    }
    const event = await this.bus.publish({
      type: this.channelFor(dst.record, type),
      agentId: from,
      data,
      metadata: {
        source: from,
        tags: [`xp-from:${from}`, `xp-to:${to}`],
        ...(version ? { version } : {}),
        ...(options.correlationId ? { correlationId: options.correlationId } : {}),
      },
    });
    this.counts.delivered++;
    try {
      await this.audit.append({ ...who, messageId: event.id, outcome: 'delivered' });
    } catch (e) {
      // published, so not refused (a retry would send it twice), but the caller must know
      throw new TransportError(
        `message ${event.id} was delivered but could not be audited: ${(e as Error).message}`,
        {
          cause: e,
          details: { messageId: event.id, audited: false },
        },
      );
    }
    return event.id;
  }

  /** Spec 003's form: `sendCrossProjectMessage(from, to, type, data, { credential })`. */
  sendCrossProjectMessage(
    from: string,
    to: string,
    type: string,
    data: unknown,
    auth: { credential?: string; principal?: { sub: string }; correlationId?: string } = {},
  ): Promise<string> {
    return this.send({ from, to, type, data, ...auth });
  }

  private async refuse(
    who: { from: string; to: string; type: string; principal?: string },
    err: Error & { details?: Record<string, unknown> | undefined },
  ): Promise<never> {
    const outcome = (err instanceof SchemaValidationError ? 'invalid' : err.details?.reason) as AuditOutcome;
    this.counts[outcome]++;
    try {
      await this.audit.append({
        from: String(who.from),
        to: String(who.to),
        type: String(who.type),
        messageId: null,
        outcome,
        detail: err.message,
        ...(who.principal ? { principal: who.principal } : {}),
      });
    } catch (e) {
      this.logger.error('cannot write the audit log', { error: (e as Error).message });
    }
    throw err;
  }

  /**
   * Delivers messages sent to `projectId` (authenticated by its credential) to
   * `handler`. A message the policy would not have allowed (published on the bus
   * directly) or whose data fails its contract is dead-lettered, not handled.
   * Returns the bus's unsubscribe function.
   */
  async receive<T = unknown>(
    projectId: string,
    credential: string,
    handler: (message: CrossProjectMessage<T>) => unknown,
    options: { group?: string; maxConcurrency?: number } = {},
  ): Promise<ReturnType<QEEventBus['subscribe']>> {
    if (typeof handler !== 'function') throw new ValidationError('handler', 'must be a function');
    const me = await this.project(projectId);
    if (!me)
      throw new CrossProjectForbiddenError('unknown_project', `unknown project ${projectId}`, {
        project: projectId,
      });
    if (typeof credential !== 'string' || !me.hash || !timingSafeEqual(digest(credential, me.salt!), me.hash))
      throw new CrossProjectUnauthorizedError(`bad or missing credential for project ${projectId}`, {
        project: projectId,
      });
    assertKnownKeys(options, ['group', 'maxConcurrency'], '', {}, 'validation');
    const base = `${this.channelPrefix}.${me.record.namespace}.`;
    const unsubscribe = this.bus.subscribe(
      `${base}**`,
      async (event) => {
        const type = event.type.slice(base.length);
        const from = event.agentId;
        const src = this.projects.get(from) ?? (await this.project(from));
        const dst = this.projects.get(projectId)!;
        if (
          !src?.sends.some((m) => m(type)) ||
          (!src.targets.has(projectId) && !src.targets.has('*')) ||
          !dst.accepts.some((m) => m(type)) ||
          (!dst.from.has(from) && !dst.from.has('*'))
        ) {
          this.receiveRejected++;
          throw new PermanentError(
            `message ${event.id} ${type} from ${from} to ${projectId} is not allowed by policy`,
          );
        }
        if (this.contracts) {
          const r = this.contracts.check({ type, data: event.data, metadata: event.metadata });
          if (r.issues.length) {
            this.receiveRejected++;
            throw new ContractViolationError(type, event.metadata?.version, r.issues);
          }
        }
        return handler({
          id: event.id,
          from,
          to: projectId,
          type,
          data: event.data as T,
          ...(event.metadata?.version ? { version: event.metadata.version } : {}),
          timestamp: event.timestamp,
          event,
        });
      },
      {
        ...(options.group ? { group: options.group } : {}),
        ...(options.maxConcurrency ? { maxConcurrency: options.maxConcurrency } : {}),
      },
    );
    await unsubscribe.ready;
    return unsubscribe;
  }

  stats(): CrossProjectStats {
    return { messages: { ...this.counts }, receiveRejected: this.receiveRejected };
  }
}
