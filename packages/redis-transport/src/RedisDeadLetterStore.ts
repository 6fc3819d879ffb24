import {
  type AgentEvent,
  compilePattern,
  type DeadLetter,
  type DeadLetterInfo,
  type DeadLetterQuery,
  type DeadLetterStore,
  type EventMetadata,
  epochNow,
  REDRIVE_BINDING_KEY,
  REDRIVE_TARGET_KEY,
  RETRY_ATTEMPT_KEY,
  ValidationError,
} from '@qe/core';
import type { RedisStreamsTransport } from './RedisStreamsTransport.js';

type RawEntry = [Buffer, Buffer[] | null];

interface Row {
  dl: DeadLetter;
  partition: number;
  entryId: string;
  src: string;
}

/**
 * Dead letters in one Redis stream per partition (`<prefix>:{<prefix>:p<k>}:dlq`),
 * each entry holding the original frame untouched, the reason, the error and the
 * attempts. Ids are `p<partition>:<entry id>`.
 *
 * Redrive re-publishes the event to the stream it came from, marked for the
 * binding that dead-lettered it, and deletes the dead letter, in one script:
 * never lost, never doubled.
 */
export class RedisDeadLetterStore implements DeadLetterStore {
  constructor(private readonly t: RedisStreamsTransport) {}

  private parseId(id: string): { partition: number; entryId: string } | undefined {
    const m = /^p(\d+):(\d+-\d+)$/.exec(id);
    if (!m) return undefined;
    const partition = Number(m[1]);
    if (partition >= this.t.options.partitions) return undefined;
    return { partition, entryId: m[2]! };
  }

  private toRow(partition: number, [idBuf, fields]: RawEntry): Row | undefined {
    if (!fields) return undefined;
    const f: Record<string, Buffer> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!.toString()] = fields[i + 1]!;
    if (!f.e) return undefined;
    let info: DeadLetterInfo & { eventId?: string };
    try {
      info = JSON.parse(f.i?.toString() ?? '{}');
    } catch {
      info = { reason: 'rejected', attempts: 0 };
    }
    const entryId = idBuf.toString();
    const event: AgentEvent = this.t.decode(f.e) ?? {
      id: info.eventId ?? entryId,
      type: 'system.undecodable',
      agentId: 'unknown',
      timestamp: Number(entryId.split('-')[0]),
      priority: 2,
      data: { frameBase64: f.e.toString('base64') },
    };
    const { eventId: _drop, ...rest } = info;
    return {
      partition,
      entryId,
      src: f.src?.toString() ?? this.t.keys.stream(partition, event.priority),
      dl: { ...rest, id: `p${partition}:${entryId}`, event, deadAt: Number(entryId.split('-')[0]) },
    };
  }

  private async rows(query: { pattern?: string; limit?: number; after?: string } = {}): Promise<Row[]> {
    const client = this.t.requireClient();
    const matcher = query.pattern === undefined ? undefined : compilePattern(query.pattern);
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    const after = query.after === undefined ? undefined : this.parseId(query.after);
    const out: Row[] = [];
    for (let p = 0; p < this.t.options.partitions; p++) {
      if (after && p < after.partition) continue;
      let lower = after && p === after.partition ? `(${after.entryId}` : '-';
      for (;;) {
        const page = (await client.xrangeBuffer(
          this.t.keys.dlq(p),
          lower,
          '+',
          'COUNT',
          500,
        )) as unknown as RawEntry[];
        for (const raw of page) {
          const row = this.toRow(p, raw);
          if (!row || (matcher && !matcher.matches(row.dl.event.type))) continue;
          out.push(row);
          if (out.length >= limit) return out;
        }
        if (page.length < 500) break;
        lower = `(${page[page.length - 1]![0].toString()}`;
      }
    }
    return out;
  }

  async add(event: AgentEvent, info: DeadLetterInfo): Promise<DeadLetter> {
    const client = this.t.requireClient();
    const partition = this.t.keys.partitionFor(event.agentId);
    const src = this.t.keys.stream(partition, event.priority);
    const entryId = (await client.xadd(
      this.t.keys.dlq(partition),
      'MAXLEN',
      '~',
      this.t.options.maxLen,
      '*',
      'e',
      this.t.serializer.encode(event),
      'i',
      JSON.stringify({ ...info, eventId: event.id, type: event.type }),
      'src',
      src,
    )) as string;
    this.t.counters.deadLettered++;
    return { ...info, id: `p${partition}:${entryId}`, event, deadAt: Date.now() };
  }

  async list(query: DeadLetterQuery = {}): Promise<DeadLetter[]> {
    return (await this.rows({ ...query, limit: query.limit ?? 100 })).map((r) => r.dl);
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const parsed = this.parseId(id);
    if (!parsed) return undefined;
    const client = this.t.requireClient();
    const page = (await client.xrangeBuffer(
      this.t.keys.dlq(parsed.partition),
      parsed.entryId,
      parsed.entryId,
    )) as unknown as RawEntry[];
    return page[0] ? this.toRow(parsed.partition, page[0])?.dl : undefined;
  }

  async count(): Promise<number> {
    const client = this.t.requireClient();
    const lens = await Promise.all(this.t.keys.allDlqs().map((k) => client.xlen(k)));
    return lens.reduce((a, b) => a + b, 0);
  }

  private async select(selector: {
    ids?: readonly string[];
    pattern?: string;
    limit?: number;
  }): Promise<Row[]> {
    if (selector.ids !== undefined) {
      if (!Array.isArray(selector.ids))
        throw new ValidationError('ids', 'must be an array of dead-letter ids');
      const rows: Row[] = [];
      for (const id of selector.ids) {
        const parsed = this.parseId(id);
        if (!parsed) continue;
        const page = (await this.t
          .requireClient()
          .xrangeBuffer(
            this.t.keys.dlq(parsed.partition),
            parsed.entryId,
            parsed.entryId,
          )) as unknown as RawEntry[];
        const row = page[0] && this.toRow(parsed.partition, page[0]);
        if (row) rows.push(row);
      }
      return rows.slice(0, selector.limit ?? rows.length);
    }
    return this.rows(selector);
  }

  async redrive(
    selector: { ids?: readonly string[]; pattern?: string; limit?: number } = {},
  ): Promise<number> {
    const rows = await this.select(selector);
    let n = 0;
    for (const { dl, partition, entryId, src } of rows) {
      const md = dl.event.metadata;
      const metadata: EventMetadata = { ...md, retryCount: (md?.retryCount ?? 0) + 1 };
      // a redrive starts a fresh round of attempts: drop a scheduled retry's carried count
      delete metadata[RETRY_ATTEMPT_KEY];
      if (dl.subscriptionId !== undefined) metadata[REDRIVE_TARGET_KEY] = dl.subscriptionId;
      if (dl.binding !== undefined) metadata[REDRIVE_BINDING_KEY] = dl.binding;
      const frame = this.t.serializer.encode({ ...dl.event, metadata });
      const res = await this.t.scripts.qeRedrive(
        this.t.keys.dlq(partition),
        src,
        entryId,
        frame,
        String(epochNow()),
        this.t.options.maxLen,
      );
      if (res) n++;
    }
    return n;
  }

  async purge(selector: { ids?: readonly string[]; pattern?: string } = {}): Promise<number> {
    const client = this.t.requireClient();
    if (selector.ids === undefined && selector.pattern === undefined) {
      const n = await this.count();
      await Promise.all(this.t.keys.allDlqs().map((k) => client.del(k)));
      return n;
    }
    const rows = await this.select(selector);
    let n = 0;
    for (const r of rows) n += await client.xdel(this.t.keys.dlq(r.partition), r.entryId);
    return n;
  }
}
