import { ConfigError } from '@qe/core';
import type { Redis } from 'ioredis';
import { SAGA_STATUSES, type SagaContext, type SagaStatus, TERMINAL_STATUSES } from './events.js';

// ---------------------------------------------------------------- saga state

export type StepStatus =
  | 'pending'
  | 'running'
  | 'retry_wait'
  | 'done'
  | 'failed'
  | 'compensating'
  | 'compensation_wait'
  | 'compensated'
  | 'compensation_failed';

/** One step of one transaction, as stored. */
export interface StepState {
  name: string;
  status: StepStatus;
  /** Sends of the current command (re-sends after a timeout included). */
  sends: number;
  /** Commands issued: a new command id after each failure the worker reported. */
  attempt: number;
  commandId?: string;
  startedAt?: number;
  /** When the current command was last sent (epoch ms): its timeout counts from here. */
  sentAt?: number;
  /** When a `retry_wait` step is sent again (epoch ms). */
  retryAt?: number;
  result?: unknown;
  durationMs?: number;
  error?: SagaErrorInfo;
  /** An attempt timed out: the worker may still have run it, so it is compensated too if the saga fails. */
  uncertain?: boolean;
  compSends?: number;
  compAttempt?: number;
  compCommandId?: string;
  compSentAt?: number;
  /** When a `compensation_wait` step's compensation is sent again (epoch ms). */
  compRetryAt?: number;
}

export interface SagaErrorInfo {
  message: string;
  type: string;
  code?: string;
  step?: string;
}

/** Everything an orchestrator needs to continue a transaction, in any process. */
export interface SagaState {
  transactionId: string;
  correlationId: string;
  sagaName: string;
  status: SagaStatus;
  input: SagaContext;
  /** The input with every completed step's result merged in, in step order. */
  context: SagaContext;
  /** Index of the stage (a step, or a group of parallel steps) being run. */
  stage: number;
  steps: Record<string, StepState>;
  /** Step names in the order they completed. */
  completed: string[];
  /** Steps still to compensate, next first. */
  toCompensate: string[];
  /** How many compensations this transaction needs in all (for progress). */
  compensationTotal: number;
  failedStep?: string;
  error?: SagaErrorInfo;
  createdAt: number;
  updatedAt: number;
  finishedAt?: number;
  deadlineAt?: number;
  /** Id of the last event the orchestrator published or handled for it (the next one's causation). */
  lastEventId?: string;
  /** Orchestrator instances that owned it, in order (a takeover appends). */
  owners: string[];
}

/**
 * Where saga state lives. Every write is fenced by a lease: only the current
 * owner's writes land, so an orchestrator that lost its lease (it stalled, or
 * another instance took the saga over) cannot overwrite the new owner's state.
 */
export interface SagaStore {
  /** True when other processes see the same state (Redis). */
  readonly shared: boolean;
  /** Creates a transaction owned by `owner`. False when the id exists. */
  create(state: SagaState, owner: string, leaseMs: number): Promise<boolean>;
  /** Writes the state if `owner` holds the lease; a terminal status releases the lease. */
  save(state: SagaState, owner: string): Promise<boolean>;
  load(transactionId: string): Promise<SagaState | undefined>;
  /** Takes the lease of a transaction nobody holds. */
  acquire(transactionId: string, owner: string, leaseMs: number): Promise<boolean>;
  /** Extends the leases `owner` holds; returns the ids it no longer holds. */
  renew(transactionIds: readonly string[], owner: string, leaseMs: number): Promise<string[]>;
  release(transactionId: string, owner: string): Promise<void>;
  /** Ids of running and compensating transactions, oldest first. */
  active(limit: number): Promise<string[]>;
  /** Running or compensating transactions nobody holds a lease on (their owner died or stopped). */
  orphans(limit: number): Promise<string[]>;
  /** Transactions by status, newest first. */
  list(status: SagaStatus | undefined, limit: number): Promise<SagaState[]>;
  /** How many transactions have each status. */
  counts(): Promise<Record<SagaStatus, number>>;
}

const isTerminal = (s: SagaStatus) => TERMINAL_STATUSES.includes(s);

/**
 * Saga state in this process: survives nothing, shared with nothing. It keeps
 * the objects it is given (the orchestrator never changes a state after
 * storing it: each transition works on a copy) and hands out copies.
 */
export class MemorySagaStore implements SagaStore {
  readonly shared = false;
  private readonly states = new Map<string, SagaState>();
  private readonly leases = new Map<string, { owner: string; until: number }>();
  /** Ended transactions, oldest first, for eviction past `maxFinished`. */
  private readonly finished = new Set<string>();
  private readonly maxFinished: number;

  /** `maxFinished`: ended transactions kept for queries (the oldest go first). Default 10,000. */
  constructor(options: { maxFinished?: number } = {}) {
    this.maxFinished = options.maxFinished ?? 10_000;
  }

  async create(state: SagaState, owner: string, leaseMs: number): Promise<boolean> {
    if (this.states.has(state.transactionId)) return false;
    this.states.set(state.transactionId, state);
    this.leases.set(state.transactionId, { owner, until: Date.now() + leaseMs });
    return true;
  }
  async save(state: SagaState, owner: string): Promise<boolean> {
    if (!this.holds(state.transactionId, owner)) return false;
    this.states.set(state.transactionId, state);
    if (isTerminal(state.status)) {
      this.leases.delete(state.transactionId);
      this.finished.add(state.transactionId);
      while (this.finished.size > this.maxFinished) {
        const oldest = this.finished.values().next().value as string;
        this.finished.delete(oldest);
        this.states.delete(oldest);
      }
    }
    return true;
  }
  async load(id: string): Promise<SagaState | undefined> {
    const s = this.states.get(id);
    return s === undefined ? undefined : structuredClone(s);
  }
  async acquire(id: string, owner: string, leaseMs: number): Promise<boolean> {
    const l = this.leases.get(id);
    if (l && l.until > Date.now()) return false;
    this.leases.set(id, { owner, until: Date.now() + leaseMs });
    return true;
  }
  async renew(ids: readonly string[], owner: string, leaseMs: number): Promise<string[]> {
    const lost: string[] = [];
    for (const id of ids) {
      if (this.holds(id, owner)) this.leases.set(id, { owner, until: Date.now() + leaseMs });
      else lost.push(id);
    }
    return lost;
  }
  async release(id: string, owner: string): Promise<void> {
    if (this.holds(id, owner)) this.leases.delete(id);
  }
  async active(limit: number): Promise<string[]> {
    const out: SagaState[] = [];
    for (const s of this.states.values()) if (!isTerminal(s.status)) out.push(s);
    return out
      .sort((a, b) => a.createdAt - b.createdAt)
      .slice(0, limit)
      .map((s) => s.transactionId);
  }
  async orphans(limit: number): Promise<string[]> {
    const now = Date.now();
    return (await this.active(Number.MAX_SAFE_INTEGER))
      .filter((id) => (this.leases.get(id)?.until ?? 0) <= now)
      .slice(0, limit);
  }
  async list(status: SagaStatus | undefined, limit: number): Promise<SagaState[]> {
    const out: SagaState[] = [];
    for (const s of this.states.values()) if (status === undefined || s.status === status) out.push(s);
    // newest first; begun in the same millisecond: the later begun first (the sort is stable)
    return out
      .reverse()
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(0, limit)
      .map((s) => structuredClone(s));
  }
  async counts(): Promise<Record<SagaStatus, number>> {
    const c = emptyCounts();
    for (const s of this.states.values()) c[s.status]++;
    return c;
  }
  private holds(id: string, owner: string): boolean {
    const l = this.leases.get(id);
    return l !== undefined && l.owner === owner && l.until > Date.now();
  }
}

function emptyCounts(): Record<SagaStatus, number> {
  return { running: 0, compensating: 0, completed: 0, compensated: 0, failed: 0 };
}

// KEYS: lease, state, idx:<status>..., ARGV: owner, json, status, createdAt, leaseMs
const CREATE = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
return 1`;

// KEYS: lease, state, idx:running, idx:compensating, idx:completed, idx:compensated, idx:failed
// ARGV: owner, json, status, score (created, or finished for an end), id, retainMs (0: forever), now
// An end releases the lease, lets the document expire after retainMs, and drops index
// entries of its status that finished longer ago than that.
const SAVE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
local names = {'running', 'compensating', 'completed', 'compensated', 'failed'}
for i, n in ipairs(names) do
  if n == ARGV[3] then redis.call('ZADD', KEYS[2 + i], ARGV[4], ARGV[5])
  else redis.call('ZREM', KEYS[2 + i], ARGV[5]) end
end
if ARGV[3] == 'completed' or ARGV[3] == 'compensated' or ARGV[3] == 'failed' then
  redis.call('DEL', KEYS[1])
  local retain = tonumber(ARGV[6])
  if retain > 0 then
    redis.call('PEXPIRE', KEYS[2], retain)
    for i, n in ipairs(names) do
      if n == ARGV[3] then redis.call('ZREMRANGEBYSCORE', KEYS[2 + i], '-inf', '(' .. (tonumber(ARGV[7]) - retain)) end
    end
  end
end
return 1`;

// KEYS: leases..., ARGV: owner, leaseMs; returns the indexes (1-based) of leases not held
const RENEW = `
local lost = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2])
  else table.insert(lost, i) end
end
return lost`;

// KEYS: idx:compensating, idx:running; ARGV: lease key prefix, how many to look at, how many to return.
// The lease keys share the indexes' hash tag (same slot).
const ORPHANS = `
local out = {}
for _, idx in ipairs(KEYS) do
  for _, id in ipairs(redis.call('ZRANGE', idx, 0, tonumber(ARGV[2]) - 1)) do
    if redis.call('EXISTS', ARGV[1] .. id) == 0 then
      table.insert(out, id)
      if #out >= tonumber(ARGV[3]) then return out end
    end
  end
end
return out`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * Saga state in Redis: one JSON document per transaction, a lease key per
 * running transaction (`SET NX PX`, renewed by its owner), and a sorted set
 * per status (scored by creation time; for the end statuses by end time) for
 * listing and takeover. Every key of one prefix shares the hash tag
 * `{<prefix>}`, so the scripts stay legal on a Redis Cluster.
 *
 * `retainFinishedMs`: how long an ended transaction stays queryable (default
 * 7 days; 0 keeps it for ever).
 */
export class RedisSagaStore implements SagaStore {
  readonly shared = true;
  private readonly base: string;
  private readonly retainMs: number;

  constructor(
    private readonly redis: Redis,
    readonly prefix = 'qe:saga',
    options: { retainFinishedMs?: number } = {},
  ) {
    this.base = `${prefix}:{${prefix}}`;
    const r = options.retainFinishedMs ?? 7 * 24 * 3600_000;
    if (!Number.isInteger(r) || r < 0)
      throw new ConfigError('retainFinishedMs', 'must be a non-negative integer');
    this.retainMs = r;
  }

  private stateKey(id: string) {
    return `${this.base}:tx:${id}`;
  }
  private leaseKey(id: string) {
    return `${this.base}:lease:${id}`;
  }
  private idxKey(s: SagaStatus) {
    return `${this.base}:idx:${s}`;
  }

  async create(state: SagaState, owner: string, leaseMs: number): Promise<boolean> {
    const r = await this.redis.eval(
      CREATE,
      3,
      this.leaseKey(state.transactionId),
      this.stateKey(state.transactionId),
      this.idxKey(state.status),
      owner,
      JSON.stringify(state),
      state.status,
      state.createdAt,
      leaseMs,
      state.transactionId,
    );
    return r === 1;
  }
  async save(state: SagaState, owner: string): Promise<boolean> {
    const id = state.transactionId;
    const r = await this.redis.eval(
      SAVE,
      2 + SAGA_STATUSES.length,
      this.leaseKey(id),
      this.stateKey(id),
      ...SAGA_STATUSES.map((s) => this.idxKey(s)),
      owner,
      JSON.stringify(state),
      state.status,
      isTerminal(state.status) ? (state.finishedAt ?? Date.now()) : state.createdAt,
      id,
      this.retainMs,
      Date.now(),
    );
    return r === 1;
  }
  async load(id: string): Promise<SagaState | undefined> {
    const raw = await this.redis.get(this.stateKey(id));
    return raw === null ? undefined : (JSON.parse(raw) as SagaState);
  }
  async acquire(id: string, owner: string, leaseMs: number): Promise<boolean> {
    return (await this.redis.set(this.leaseKey(id), owner, 'PX', leaseMs, 'NX')) === 'OK';
  }
  async renew(ids: readonly string[], owner: string, leaseMs: number): Promise<string[]> {
    if (ids.length === 0) return [];
    const lost = (await this.redis.eval(
      RENEW,
      ids.length,
      ...ids.map((id) => this.leaseKey(id)),
      owner,
      leaseMs,
    )) as number[];
    return lost.map((i) => ids[i - 1]!);
  }
  async release(id: string, owner: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.leaseKey(id), owner);
  }
  async active(limit: number): Promise<string[]> {
    const [running, compensating] = await Promise.all([
      this.redis.zrange(this.idxKey('running'), 0, limit - 1),
      this.redis.zrange(this.idxKey('compensating'), 0, limit - 1),
    ]);
    return [...compensating, ...running].slice(0, limit);
  }
  async orphans(limit: number): Promise<string[]> {
    return (await this.redis.eval(
      ORPHANS,
      2,
      this.idxKey('compensating'),
      this.idxKey('running'),
      `${this.base}:lease:`,
      10_000,
      limit,
    )) as string[];
  }
  async list(status: SagaStatus | undefined, limit: number): Promise<SagaState[]> {
    const statuses = status === undefined ? SAGA_STATUSES : [status];
    const ids = (
      await Promise.all(statuses.map((s) => this.redis.zrevrange(this.idxKey(s), 0, limit - 1)))
    ).flat();
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((id) => this.stateKey(id)));
    const out: SagaState[] = [];
    for (const raw of raws) if (raw !== null) out.push(JSON.parse(raw) as SagaState);
    return out.sort((a, b) => b.createdAt - a.createdAt).slice(0, limit);
  }
  async counts(): Promise<Record<SagaStatus, number>> {
    const n = await Promise.all(SAGA_STATUSES.map((s) => this.redis.zcard(this.idxKey(s))));
    const c = emptyCounts();
    SAGA_STATUSES.forEach((s, i) => {
      c[s] = n[i]!;
    });
    return c;
  }
}

// ---------------------------------------------------------------- worker records

/** What a worker's run of one command came to: recorded once, returned for every repeat. */
export type CommandOutcome =
  | { ok: true; result: SagaContext; executionTimeMs: number }
  | {
      ok: false;
      error: { message: string; type: string; code?: string; stack?: string };
      executionTimeMs: number;
    };

export type ClaimResult = { state: 'new' } | { state: 'busy' } | { state: 'done'; outcome: CommandOutcome };

/**
 * A worker's record of the commands it ran, keyed by command id: a claim
 * while one instance runs it (expiring, kept alive by a heartbeat), then the
 * outcome. A redelivered or re-sent command finds the outcome and gets it
 * back instead of running again.
 */
export interface CommandLedger {
  claim(commandId: string, holder: string, processingMs: number): Promise<ClaimResult>;
  /** Keeps a claim alive while the worker runs; false when it is no longer this holder's. */
  heartbeat(commandId: string, holder: string, processingMs: number): Promise<boolean>;
  /** Records the outcome; returns the outcome on record (an earlier one wins). */
  complete(commandId: string, outcome: CommandOutcome, ttlMs: number): Promise<CommandOutcome>;
}

export class MemoryCommandLedger implements CommandLedger {
  private readonly records = new Map<string, { holder?: string; until: number; outcome?: CommandOutcome }>();
  constructor(private readonly maxRecords = 100_000) {}

  async claim(id: string, holder: string, processingMs: number): Promise<ClaimResult> {
    const now = Date.now();
    const r = this.records.get(id);
    if (r && r.until > now) return r.outcome ? { state: 'done', outcome: r.outcome } : { state: 'busy' };
    this.records.delete(id);
    if (this.records.size >= this.maxRecords) this.records.delete(this.records.keys().next().value as string);
    this.records.set(id, { holder, until: now + processingMs });
    return { state: 'new' };
  }
  async heartbeat(id: string, holder: string, processingMs: number): Promise<boolean> {
    const r = this.records.get(id);
    if (!r || r.outcome || r.holder !== holder) return false;
    r.until = Date.now() + processingMs;
    return true;
  }
  async complete(id: string, outcome: CommandOutcome, ttlMs: number): Promise<CommandOutcome> {
    const r = this.records.get(id);
    if (r?.outcome && r.until > Date.now()) return r.outcome;
    this.records.delete(id);
    this.records.set(id, { until: Date.now() + ttlMs, outcome });
    return outcome;
  }
}

// KEYS: record; ARGV: holder, processingMs. Values: 'p:<holder>' while running, 'd:<json>' when done.
const CLAIM = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
  return {'new'}
end
if string.sub(v, 1, 2) == 'd:' then return {'done', string.sub(v, 3)} end
return {'busy'}`;

const HEARTBEAT = `
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

// KEYS: record; ARGV: json, ttlMs. An outcome already on record wins.
const COMPLETE = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == 'd:' then return string.sub(v, 3) end
redis.call('SET', KEYS[1], 'd:' .. ARGV[1], 'PX', ARGV[2])
return ARGV[1]`;

/** Command records in Redis (`SET NX`-style claims in a script), shared by every worker instance. */
export class RedisCommandLedger implements CommandLedger {
  private readonly base: string;
  constructor(
    private readonly redis: Redis,
    readonly prefix = 'qe:saga',
  ) {
    this.base = `${prefix}:{${prefix}}:cmd:`;
  }
  async claim(id: string, holder: string, processingMs: number): Promise<ClaimResult> {
    const r = (await this.redis.eval(CLAIM, 1, this.base + id, holder, processingMs)) as string[];
    if (r[0] === 'new') return { state: 'new' };
    if (r[0] === 'done') return { state: 'done', outcome: JSON.parse(r[1]!) as CommandOutcome };
    return { state: 'busy' };
  }
  async heartbeat(id: string, holder: string, processingMs: number): Promise<boolean> {
    return (await this.redis.eval(HEARTBEAT, 1, this.base + id, holder, processingMs)) === 1;
  }
  async complete(id: string, outcome: CommandOutcome, ttlMs: number): Promise<CommandOutcome> {
    const json = JSON.stringify(outcome);
    const r = (await this.redis.eval(COMPLETE, 1, this.base + id, json, ttlMs)) as string;
    return r === json ? outcome : (JSON.parse(r) as CommandOutcome);
  }
}
