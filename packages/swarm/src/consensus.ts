import { EventEmitter } from 'node:events';
import { type AgentEvent, assertKnownKeys, ConfigError, uuidv7 } from '@qe/core';
import type { Redis } from 'ioredis';
import {
  checkId,
  checkNumber,
  checkPositiveInt,
  InvalidSpecError,
  SwarmTimeoutError,
  UnknownEntityError,
} from './errors.js';
import { type AnySwarmBus, SwarmEventTypes as T } from './events.js';

export interface ProposalSpec {
  /** Default: a UUIDv7. */
  id?: string;
  topic?: string;
  /** What voters choose from (ids: 1-128 of [A-Za-z0-9_.:-]). */
  options: string[];
  /** Eligible voters: a list (each weighs 1) or `{ voter: weight }`. */
  voters: string[] | Record<string, number>;
  /** Votes one option needs (counting voters, weights ignored). Default: a majority of the voters. */
  quorum?: number;
  /** Instead of `quorum`: the share of the total weight one option needs, 0 < t <= 1 (reached when >= t × total). */
  threshold?: number;
  /** Time to decide, ms. Default 30,000. After it, `consensus.fail` with reason `deadline`. */
  timeoutMs?: number;
}

export interface ProposalRecord {
  id: string;
  topic: string;
  options: string[];
  weights: Record<string, number>;
  mode: 'quorum' | 'threshold';
  /** Weight (or votes) an option needs. */
  need: number;
  total: number;
  deadline: number;
  createdBy: string;
}

export interface Outcome {
  proposalId: string;
  kind: 'achieve' | 'fail';
  decision?: string;
  reason?: 'deadline' | 'unreachable';
  tally: Record<string, number>;
  decidedBy: string;
  decidedAt: number;
}

export type VoteStatus =
  | 'accepted'
  | 'seen'
  | 'duplicate'
  | 'ineligible'
  | 'late'
  | 'invalid-option'
  | 'unknown';
export type VoteResult = { status: VoteStatus } | { status: 'decided'; outcome: Outcome };

/** Where proposals, votes and the single outcome live. Every method is atomic. */
export interface ConsensusStore {
  /** Stores a proposal unless one with its id exists; true when this call stored it. */
  create(p: ProposalRecord): Promise<boolean>;
  /** Records one vote; `decided` only for the call whose vote settled the outcome. */
  vote(
    proposalId: string,
    voter: string,
    option: string,
    eventId: string,
    now: number,
    by: string,
  ): Promise<VoteResult>;
  /** After the deadline: settles `fail`/`deadline` unless settled; `decided` only for the call that did. */
  expire(proposalId: string, now: number, by: string): Promise<VoteResult>;
  outcome(proposalId: string): Promise<Outcome | undefined>;
  /** Refused votes by reason, across every coordinator. */
  refused(proposalId: string): Promise<Record<string, number>>;
}

// ---------------------------------------------------------------- memory

interface MemProposal {
  p: ProposalRecord;
  votes: Map<string, string>;
  tally: Map<string, number>;
  cast: number;
  seen: Set<string>;
  outcome?: Outcome;
  refused: Record<string, number>;
}

/** In one process (coordinators sharing this object decide once; JavaScript runs each call whole). */
export class MemoryConsensusStore implements ConsensusStore {
  private readonly m = new Map<string, MemProposal>();

  async create(p: ProposalRecord): Promise<boolean> {
    if (this.m.has(p.id)) return false;
    this.m.set(p.id, { p, votes: new Map(), tally: new Map(), cast: 0, seen: new Set(), refused: {} });
    return true;
  }

  async vote(
    id: string,
    voter: string,
    option: string,
    eventId: string,
    now: number,
    by: string,
  ): Promise<VoteResult> {
    const x = this.m.get(id);
    if (!x) return { status: 'unknown' };
    if (eventId) {
      if (x.seen.has(eventId)) return { status: 'seen' };
      x.seen.add(eventId);
    }
    const refuse = (status: VoteStatus): VoteResult => {
      x.refused[status] = (x.refused[status] ?? 0) + 1;
      return { status };
    };
    const w = x.p.weights[voter];
    if (w === undefined) return refuse('ineligible');
    if (!x.p.options.includes(option)) return refuse('invalid-option');
    if (x.votes.has(voter)) return refuse('duplicate');
    if (x.outcome || now > x.p.deadline) return refuse('late');
    x.votes.set(voter, option);
    const t = (x.tally.get(option) ?? 0) + w;
    x.tally.set(option, t);
    x.cast += w;
    const tally = () => Object.fromEntries(x.p.options.map((o) => [o, x.tally.get(o) ?? 0]));
    if (t >= x.p.need - 1e-9) {
      x.outcome = {
        proposalId: id,
        kind: 'achieve',
        decision: option,
        tally: tally(),
        decidedBy: by,
        decidedAt: now,
      };
      return { status: 'decided', outcome: x.outcome };
    }
    const best = Math.max(...x.tally.values());
    if (best + (x.p.total - x.cast) < x.p.need - 1e-9) {
      x.outcome = {
        proposalId: id,
        kind: 'fail',
        reason: 'unreachable',
        tally: tally(),
        decidedBy: by,
        decidedAt: now,
      };
      return { status: 'decided', outcome: x.outcome };
    }
    return { status: 'accepted' };
  }

  async expire(id: string, now: number, by: string): Promise<VoteResult> {
    const x = this.m.get(id);
    if (!x) return { status: 'unknown' };
    if (x.outcome || now <= x.p.deadline) return { status: 'late' };
    const tally = Object.fromEntries(x.p.options.map((o) => [o, x.tally.get(o) ?? 0]));
    x.outcome = { proposalId: id, kind: 'fail', reason: 'deadline', tally, decidedBy: by, decidedAt: now };
    return { status: 'decided', outcome: x.outcome };
  }

  async outcome(id: string): Promise<Outcome | undefined> {
    return this.m.get(id)?.outcome;
  }

  async refused(id: string): Promise<Record<string, number>> {
    return { ...(this.m.get(id)?.refused ?? {}) };
  }
}

// ---------------------------------------------------------------- Redis

/*
 * One hash per proposal (fields m:* settings, w:<voter> weight, v:<voter> vote,
 * t:<option> tally, e:<eventId> seen, c:<reason> refused) and one string for
 * the outcome, set with NX inside the script: the script runs whole, so of
 * several coordinators racing exactly one gets `decided`.
 */
const VOTE_LUA = `
local h, out = KEYS[1], KEYS[2]
local voter, option, eid, now, by = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', h) == 0 then return {'unknown'} end
if eid ~= '' and redis.call('HSETNX', h, 'e:' .. eid, 1) == 0 then return {'seen'} end
local w = redis.call('HGET', h, 'w:' .. voter)
if not w then redis.call('HINCRBY', h, 'c:ineligible', 1) return {'ineligible'} end
if redis.call('HEXISTS', h, 'o:' .. option) == 0 then redis.call('HINCRBY', h, 'c:invalid-option', 1) return {'invalid-option'} end
if redis.call('HEXISTS', h, 'v:' .. voter) == 1 then redis.call('HINCRBY', h, 'c:duplicate', 1) return {'duplicate'} end
if redis.call('EXISTS', out) == 1 or now > tonumber(redis.call('HGET', h, 'm:deadline')) then
  redis.call('HINCRBY', h, 'c:late', 1) return {'late'} end
redis.call('HSET', h, 'v:' .. voter, option)
local t = tonumber(redis.call('HINCRBYFLOAT', h, 't:' .. option, w))
local cast = tonumber(redis.call('HINCRBYFLOAT', h, 'm:cast', w))
local need = tonumber(redis.call('HGET', h, 'm:need'))
local total = tonumber(redis.call('HGET', h, 'm:total'))
local options = cjson.decode(redis.call('HGET', h, 'm:options'))
local tally, best = {}, 0
for _, o in ipairs(options) do
  local v = tonumber(redis.call('HGET', h, 't:' .. o) or '0')
  tally[o] = v
  if v > best then best = v end
end
local res
if t >= need - 1e-9 then
  res = {proposalId = ARGV[6], kind = 'achieve', decision = option, tally = tally, decidedBy = by, decidedAt = now}
elseif best + (total - cast) < need - 1e-9 then
  res = {proposalId = ARGV[6], kind = 'fail', reason = 'unreachable', tally = tally, decidedBy = by, decidedAt = now}
else return {'accepted'} end
local enc = cjson.encode(res)
if redis.call('SET', out, enc, 'NX', 'PX', tonumber(ARGV[7])) then return {'decided', enc} end
return {'accepted'}
`;

const EXPIRE_LUA = `
local h, out = KEYS[1], KEYS[2]
local now, by = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', h) == 0 then return {'unknown'} end
if redis.call('EXISTS', out) == 1 or now <= tonumber(redis.call('HGET', h, 'm:deadline')) then return {'late'} end
local options = cjson.decode(redis.call('HGET', h, 'm:options'))
local tally = {}
for _, o in ipairs(options) do tally[o] = tonumber(redis.call('HGET', h, 't:' .. o) or '0') end
local enc = cjson.encode({proposalId = ARGV[3], kind = 'fail', reason = 'deadline', tally = tally, decidedBy = by, decidedAt = now})
if redis.call('SET', out, enc, 'NX', 'PX', tonumber(ARGV[4])) then return {'decided', enc} end
return {'late'}
`;

/** Proposals in Redis, decided by Lua scripts: safe with coordinators in many processes. */
export class RedisConsensusStore implements ConsensusStore {
  /** Keys are kept this long after the deadline. Default one day. */
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'qe:swarm',
    private readonly retainMs = 86_400_000,
  ) {
    if (!redis || typeof (redis as { eval?: unknown }).eval !== 'function')
      throw new ConfigError('redis', 'must be an ioredis client');
  }

  private keys(id: string): [string, string] {
    const tag = `{${this.prefix}:p:${id}}`;
    return [`${this.prefix}:consensus:${tag}`, `${this.prefix}:consensus:${tag}:outcome`];
  }

  async create(p: ProposalRecord): Promise<boolean> {
    const [h] = this.keys(p.id);
    const fields: (string | number)[] = [
      'm:deadline',
      p.deadline,
      'm:need',
      p.need,
      'm:total',
      p.total,
      'm:cast',
      0,
      'm:options',
      JSON.stringify(p.options),
      'm:record',
      JSON.stringify(p),
    ];
    for (const [v, w] of Object.entries(p.weights)) fields.push(`w:${v}`, w);
    for (const o of p.options) fields.push(`o:${o}`, 1);
    const ttl = Math.max(1000, p.deadline - Date.now() + this.retainMs);
    const r = (await this.redis.eval(
      `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
       redis.call('HSET', KEYS[1], unpack(ARGV, 2)) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1`,
      1,
      h,
      ttl,
      ...fields,
    )) as number;
    return r === 1;
  }

  private ttl(): number {
    return this.retainMs;
  }

  async vote(
    id: string,
    voter: string,
    option: string,
    eventId: string,
    now: number,
    by: string,
  ): Promise<VoteResult> {
    const [h, out] = this.keys(id);
    const r = (await this.redis.eval(
      VOTE_LUA,
      2,
      h,
      out,
      voter,
      option,
      eventId,
      now,
      by,
      id,
      this.ttl(),
    )) as string[];
    return parse(r);
  }

  async expire(id: string, now: number, by: string): Promise<VoteResult> {
    const [h, out] = this.keys(id);
    return parse((await this.redis.eval(EXPIRE_LUA, 2, h, out, now, by, id, this.ttl())) as string[]);
  }

  async outcome(id: string): Promise<Outcome | undefined> {
    const s = await this.redis.get(this.keys(id)[1]);
    return s ? fixOutcome(JSON.parse(s)) : undefined;
  }

  async refused(id: string): Promise<Record<string, number>> {
    const all = await this.redis.hgetall(this.keys(id)[0]);
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(all)) if (k.startsWith('c:')) out[k.slice(2)] = Number(v);
    return out;
  }
}

function parse(r: string[]): VoteResult {
  if (r[0] === 'decided') return { status: 'decided', outcome: fixOutcome(JSON.parse(r[1]!)) };
  return { status: r[0] as VoteStatus };
}

// cjson encodes an empty table as {} and numbers as floats: normalize
function fixOutcome(o: Outcome): Outcome {
  const tally: Record<string, number> = {};
  for (const [k, v] of Object.entries(o.tally ?? {})) tally[k] = Number(v);
  return { ...o, tally };
}

// ---------------------------------------------------------------- coordinator

export interface ConsensusOptions {
  bus: AnySwarmBus;
  /** An ioredis client: proposals and the outcome live in Redis, decided by Lua (many processes). */
  redis?: Redis;
  keyPrefix?: string;
  /** Or any store; default memory (one process), or Redis when `redis` is given. */
  store?: ConsensusStore;
  /** Default the bus's nodeId. */
  coordinatorId?: string;
}

export interface ConsensusStats {
  proposalsStarted: number;
  open: number;
  achieved: number;
  failed: number;
  votesAccepted: number;
  /** Vote events another coordinator had handled first (recorded or refused there). */
  votesSeen: number;
  /** Votes this coordinator refused, by reason (late, ineligible, duplicate, invalid-option). */
  votesRefused: Record<string, number>;
}

const C_KEYS = ['bus', 'redis', 'keyPrefix', 'store', 'coordinatorId'];
const P_KEYS = ['id', 'topic', 'options', 'voters', 'quorum', 'threshold', 'timeoutMs'];

/**
 * Runs proposals: hears `consensus.start` and `consensus.vote`, records votes
 * in the store, and publishes the outcome (`consensus.achieve` with the
 * decision or `consensus.fail` with the reason) exactly once per proposal,
 * however many coordinators listen: only the one whose store call settled it
 * publishes. Votes are events, so any process can vote (`vote()`).
 */
export class ConsensusCoordinator extends EventEmitter {
  readonly bus: AnySwarmBus;
  readonly store: ConsensusStore;
  readonly coordinatorId: string;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly waiters = new Map<string, ((o: Outcome) => void)[]>();
  private readonly outcomes = new Map<string, Outcome>();
  private unsub: (() => void) | undefined;
  private s: ConsensusStats = {
    proposalsStarted: 0,
    open: 0,
    achieved: 0,
    failed: 0,
    votesAccepted: 0,
    votesSeen: 0,
    votesRefused: {},
  };
  private readonly open = new Set<string>();

  constructor(options: ConsensusOptions) {
    super();
    if (options === null || typeof options !== 'object')
      throw new ConfigError('options', 'must be an object');
    assertKnownKeys(options, C_KEYS, '');
    if (!options.bus || typeof options.bus.publish !== 'function')
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = options.bus;
    this.coordinatorId = checkId('coordinatorId', options.coordinatorId ?? options.bus.nodeId);
    this.store =
      options.store ??
      (options.redis
        ? new RedisConsensusStore(options.redis, options.keyPrefix ?? 'qe:swarm')
        : new MemoryConsensusStore());
  }

  async start(): Promise<void> {
    if (this.unsub) return;
    const u = this.bus.subscribe(
      [T.CONSENSUS_START, T.CONSENSUS_VOTE, T.CONSENSUS_ACHIEVE, T.CONSENSUS_FAIL],
      (e: AgentEvent) => this.onEvent(e),
      { maxConcurrency: 32 },
    );
    this.unsub = u;
    await u.ready;
  }

  async stop(): Promise<void> {
    this.unsub?.();
    this.unsub = undefined;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** Starts a proposal (stored, then `consensus.start`); returns its record. `outcome(id)` waits for the result. */
  async propose(spec: ProposalSpec): Promise<ProposalRecord> {
    const p = normalizeProposal(spec, this.coordinatorId);
    if (!(await this.store.create(p)))
      throw new InvalidSpecError('id', `a proposal ${p.id} exists already`, {
        details: { proposalId: p.id },
      });
    this.s.proposalsStarted++;
    await this.bus.publish({
      type: T.CONSENSUS_START,
      agentId: this.coordinatorId,
      data: { proposalId: p.id, ...p },
    });
    return p;
  }

  /** Casts a vote (a `consensus.vote` event; the coordinators record it). */
  async vote(proposalId: string, voter: string, option: string): Promise<void> {
    checkId('proposalId', proposalId);
    checkId('voter', voter);
    checkId('option', option);
    await this.bus.publish({
      type: T.CONSENSUS_VOTE,
      agentId: voter,
      data: { proposalId, voter, vote: option },
    });
  }

  /** Resolves with the proposal's one outcome (as published). */
  async outcome(proposalId: string, timeoutMs = 60_000): Promise<Outcome> {
    checkId('proposalId', proposalId);
    const known = this.outcomes.get(proposalId) ?? (await this.store.outcome(proposalId));
    if (known) return known;
    return new Promise<Outcome>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new SwarmTimeoutError(`no outcome for proposal ${proposalId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const list = this.waiters.get(proposalId) ?? [];
      list.push((o) => {
        clearTimeout(t);
        resolve(o);
      });
      this.waiters.set(proposalId, list);
    });
  }

  /** Refused votes across all coordinators, from the store. */
  async refusedVotes(proposalId: string): Promise<Record<string, number>> {
    const r = await this.store.refused(proposalId);
    if (r === undefined) throw new UnknownEntityError('proposal', proposalId);
    return r;
  }

  stats(): ConsensusStats {
    return { ...this.s, open: this.open.size, votesRefused: { ...this.s.votesRefused } };
  }

  private async onEvent(e: AgentEvent): Promise<void> {
    const d = e.data as {
      proposalId: string;
      voter?: string;
      vote?: unknown;
      deadline?: number;
    } & Partial<Outcome>;
    if (typeof d?.proposalId !== 'string') return;
    if (e.type === T.CONSENSUS_START) {
      if (this.open.has(d.proposalId) || this.outcomes.has(d.proposalId) || typeof d.deadline !== 'number')
        return;
      this.open.add(d.proposalId);
      const t = setTimeout(() => void this.expire(d.proposalId), Math.max(0, d.deadline - Date.now()) + 1);
      t.unref?.();
      this.timers.set(d.proposalId, t);
    } else if (e.type === T.CONSENSUS_VOTE) {
      const r = await this.store.vote(
        d.proposalId,
        String(d.voter),
        String(d.vote),
        e.id,
        Date.now(),
        this.coordinatorId,
      );
      if (r.status === 'accepted') this.s.votesAccepted++;
      else if (r.status === 'decided') {
        this.s.votesAccepted++;
        await this.publishOutcome(r.outcome);
      } else if (r.status === 'seen') this.s.votesSeen++;
      else {
        this.s.votesRefused[r.status] = (this.s.votesRefused[r.status] ?? 0) + 1;
        this.emit('voteRefused', { proposalId: d.proposalId, voter: d.voter, reason: r.status });
      }
    } else {
      // an outcome: ours or another coordinator's
      const t = this.timers.get(d.proposalId);
      if (t) {
        clearTimeout(t);
        this.timers.delete(d.proposalId);
      }
      this.open.delete(d.proposalId);
      const o = fixOutcome(d as Outcome);
      this.outcomes.set(o.proposalId, o);
      if (this.outcomes.size > 10_000) this.outcomes.delete(this.outcomes.keys().next().value!);
      for (const w of this.waiters.get(o.proposalId) ?? []) w(o);
      this.waiters.delete(o.proposalId);
      this.emit('outcome', o);
    }
  }

  private async expire(id: string): Promise<void> {
    this.timers.delete(id);
    const r = await this.store.expire(id, Date.now(), this.coordinatorId);
    if (r.status === 'decided') await this.publishOutcome(r.outcome);
  }

  private async publishOutcome(o: Outcome): Promise<void> {
    if (o.kind === 'achieve') this.s.achieved++;
    else this.s.failed++;
    await this.bus.publish({
      type: o.kind === 'achieve' ? T.CONSENSUS_ACHIEVE : T.CONSENSUS_FAIL,
      agentId: this.coordinatorId,
      data: { ...o },
    });
  }
}

export function normalizeProposal(spec: ProposalSpec, by: string): ProposalRecord {
  if (spec === null || typeof spec !== 'object') throw new InvalidSpecError('proposal', 'must be an object');
  assertKnownKeys(spec, P_KEYS, 'proposal.', {}, 'validation');
  const id = spec.id === undefined ? uuidv7() : checkId('id', spec.id);
  if (!Array.isArray(spec.options) || spec.options.length < 1)
    throw new InvalidSpecError('options', 'must be a non-empty array');
  for (const [i, o] of spec.options.entries()) checkId(`options[${i}]`, o);
  const options = [...new Set(spec.options)];
  const weights: Record<string, number> = {};
  if (Array.isArray(spec.voters))
    for (const [i, v] of spec.voters.entries()) weights[checkId(`voters[${i}]`, v)] = 1;
  else if (spec.voters && typeof spec.voters === 'object')
    for (const [v, w] of Object.entries(spec.voters)) {
      checkId(`voters.${v}`, v);
      weights[v] = checkNumber(`voters.${v}`, w, 1, 1e-6, 1e9);
    }
  else throw new InvalidSpecError('voters', 'must be an array of ids or { voter: weight }');
  const n = Object.keys(weights).length;
  if (n === 0) throw new InvalidSpecError('voters', 'must name at least one voter');
  if (spec.quorum !== undefined && spec.threshold !== undefined)
    throw new InvalidSpecError('threshold', 'give quorum or threshold, not both');
  const timeoutMs = checkPositiveInt('timeoutMs', spec.timeoutMs, 30_000);
  let mode: ProposalRecord['mode'] = 'quorum';
  let need: number;
  let total: number;
  if (spec.threshold !== undefined) {
    mode = 'threshold';
    total = Object.values(weights).reduce((a, b) => a + b, 0);
    need = checkNumber('threshold', spec.threshold, 0.5, 1e-6, 1) * total;
  } else {
    // a quorum counts voters: every weight is 1
    for (const k of Object.keys(weights)) weights[k] = 1;
    total = n;
    need = checkPositiveInt('quorum', spec.quorum, Math.floor(n / 2) + 1);
    if (need > n) throw new InvalidSpecError('quorum', `is ${need} but only ${n} voters are eligible`);
  }
  return {
    id,
    topic: spec.topic === undefined ? '' : String(spec.topic),
    options,
    weights,
    mode,
    need,
    total,
    deadline: Date.now() + timeoutMs,
    createdBy: by,
  };
}
