import { assertKnownKeys, ConfigError, matchPattern, ValidationError, validatePattern } from '@qe/core';
import type { Redis } from 'ioredis';
import type { RefusalReason } from './errors.js';

export type AuditOutcome = 'delivered' | RefusalReason;
export const AUDIT_OUTCOMES: readonly AuditOutcome[] = [
  'delivered',
  'unknown_project',
  'bad_credential',
  'forbidden_type',
  'forbidden_target',
  'not_accepted',
  'rate_limited',
  'invalid',
];

/** What is recorded for a cross-project message or refusal. */
export interface AuditEntryInput {
  /** The sending project (as claimed, for refusals before authentication). */
  from: string;
  to: string;
  type: string;
  /** The message (event) id; null when refused before one was made. */
  messageId: string | null;
  outcome: AuditOutcome;
  /** Why it was refused (the error's message). */
  detail?: string;
  /** The authenticated principal (a JWT subject) when the sender came through a gateway. */
  principal?: string;
}

export interface AuditEntry extends AuditEntryInput {
  /** The entry's id in the log (a stream id on Redis); ordered by time. */
  id: string;
  /** Epoch ms when it was recorded (Redis's clock on Redis). */
  at: number;
}

export interface AuditQuery {
  /** Entries where this project is the sender or the target. */
  project?: string;
  /** An event type or pattern. */
  type?: string;
  outcome?: AuditOutcome;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, inclusive. */
  until?: number;
  /** Default 1,000; at most 10,000. */
  limit?: number;
}

/** An append-only log of cross-project messages and refusals. */
export interface AuditLog {
  append(entry: AuditEntryInput): Promise<AuditEntry>;
  /** Oldest first. */
  query(query?: AuditQuery): Promise<AuditEntry[]>;
  /** Entries held now (after retention). */
  size(): Promise<number>;
}

const QUERY_KEYS = ['project', 'type', 'outcome', 'since', 'until', 'limit'];

/** Checks a query; `ValidationError` naming the bad field. */
export function checkAuditQuery(q: AuditQuery = {}): Required<Pick<AuditQuery, 'limit'>> & AuditQuery {
  assertKnownKeys(q, QUERY_KEYS, '', {}, 'validation');
  if (q.project !== undefined && (typeof q.project !== 'string' || q.project === ''))
    throw new ValidationError('project', 'must be a non-empty string');
  if (q.type !== undefined) {
    try {
      validatePattern(q.type);
    } catch (e) {
      throw new ValidationError('type', (e as Error).message);
    }
  }
  if (q.outcome !== undefined && !AUDIT_OUTCOMES.includes(q.outcome))
    throw new ValidationError('outcome', `must be one of ${AUDIT_OUTCOMES.join(', ')}`);
  for (const k of ['since', 'until'] as const)
    if (q[k] !== undefined && (!Number.isFinite(q[k]) || (q[k] as number) < 0))
      throw new ValidationError(k, 'must be epoch milliseconds');
  const limit = q.limit ?? 1000;
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
    throw new ValidationError('limit', 'must be an integer from 1 to 10000');
  return { ...q, limit };
}

function matches(e: AuditEntry, q: AuditQuery): boolean {
  if (q.project !== undefined && e.from !== q.project && e.to !== q.project) return false;
  if (q.type !== undefined && !matchPattern(q.type, e.type)) return false;
  if (q.outcome !== undefined && e.outcome !== q.outcome) return false;
  if (q.since !== undefined && e.at < q.since) return false;
  if (q.until !== undefined && e.at > q.until) return false;
  return true;
}

/** In this process, bounded: the oldest entries go first past `maxEntries` (default 100,000). */
export class MemoryAuditLog implements AuditLog {
  private readonly entries: AuditEntry[] = [];
  private seq = 0;
  private lastMs = 0;
  private readonly maxEntries: number;
  constructor(options: { maxEntries?: number } = {}) {
    assertKnownKeys(options, ['maxEntries']);
    this.maxEntries = options.maxEntries ?? 100_000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1)
      throw new ConfigError('maxEntries', 'must be a positive integer');
  }
  async append(entry: AuditEntryInput): Promise<AuditEntry> {
    const at = Date.now();
    this.seq = at === this.lastMs ? this.seq + 1 : 0;
    this.lastMs = at;
    const e: AuditEntry = { id: `${at}-${this.seq}`, at, ...entry };
    this.entries.push(e);
    if (this.entries.length > this.maxEntries) this.entries.splice(0, this.entries.length - this.maxEntries);
    return e;
  }
  async query(query: AuditQuery = {}): Promise<AuditEntry[]> {
    const q = checkAuditQuery(query);
    const out: AuditEntry[] = [];
    for (const e of this.entries) {
      if (!matches(e, q)) continue;
      out.push(e);
      if (out.length >= q.limit) break;
    }
    return out;
  }
  async size(): Promise<number> {
    return this.entries.length;
  }
}

export interface RedisAuditLogOptions {
  redis: Redis;
  /** The stream's key. Default `qe:contracts:audit`. */
  key?: string;
  /** Keep about this many entries (approximate trimming). Default 1,000,000. */
  maxEntries?: number;
  /** Also drop entries older than this (approximate trimming). Default: no age limit. */
  maxAgeMs?: number;
}

/**
 * A Redis stream, append-only (XADD; entries are never changed), trimmed to
 * `maxEntries` and `maxAgeMs`. Entry ids are Redis's, so `at` is Redis's clock
 * and time-range queries are XRANGE reads.
 */
export class RedisAuditLog implements AuditLog {
  private readonly redis: Redis;
  readonly key: string;
  private readonly maxEntries: number;
  private readonly maxAgeMs: number | undefined;
  constructor(options: RedisAuditLogOptions) {
    if (typeof options !== 'object' || options === null)
      throw new ConfigError('options', 'must be an object');
    assertKnownKeys(options, ['redis', 'key', 'maxEntries', 'maxAgeMs']);
    if (!options.redis) throw new ConfigError('redis', 'is required');
    this.redis = options.redis;
    this.key = options.key ?? 'qe:contracts:audit';
    this.maxEntries = options.maxEntries ?? 1_000_000;
    this.maxAgeMs = options.maxAgeMs;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1)
      throw new ConfigError('maxEntries', 'must be a positive integer');
    if (this.maxAgeMs !== undefined && (!Number.isInteger(this.maxAgeMs) || this.maxAgeMs < 1))
      throw new ConfigError('maxAgeMs', 'must be a positive integer (ms)');
  }

  async append(entry: AuditEntryInput): Promise<AuditEntry> {
    const fields = ['e', JSON.stringify(entry)];
    let id: string;
    if (this.maxAgeMs === undefined) {
      id = (await this.redis.xadd(this.key, 'MAXLEN', '~', this.maxEntries, '*', ...fields)) as string;
    } else {
      const p = this.redis.pipeline();
      p.xadd(this.key, 'MAXLEN', '~', this.maxEntries, '*', ...fields);
      p.xtrim(this.key, 'MINID', '~', Date.now() - this.maxAgeMs);
      const res = (await p.exec())!;
      if (res[0]![0]) throw res[0]![0];
      id = res[0]![1] as string;
    }
    return { id, at: Number(id.slice(0, id.indexOf('-'))), ...entry };
  }

  async query(query: AuditQuery = {}): Promise<AuditEntry[]> {
    const q = checkAuditQuery(query);
    const out: AuditEntry[] = [];
    let start = q.since === undefined ? '-' : `${Math.floor(q.since)}-0`;
    const end = q.until === undefined ? '+' : `${Math.floor(q.until)}-${Number.MAX_SAFE_INTEGER}`;
    for (;;) {
      const page = await this.redis.xrange(this.key, start, end, 'COUNT', 1000);
      for (const [id, f] of page) {
        const e: AuditEntry = {
          id,
          at: Number(id.slice(0, id.indexOf('-'))),
          ...(JSON.parse(f[1]!) as AuditEntryInput),
        };
        if (matches(e, q)) {
          out.push(e);
          if (out.length >= q.limit) return out;
        }
      }
      if (page.length < 1000) return out;
      start = `(${page.at(-1)![0]}`;
    }
  }

  async size(): Promise<number> {
    return this.redis.xlen(this.key);
  }
}
