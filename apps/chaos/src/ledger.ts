import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * One line of the ledger. Every process of a run writes its own file
 * (`ledger/<process>.<incarnation>.jsonl`), one JSON object per line, with a
 * synchronous write before it goes on, so a SIGKILL loses at most the line
 * being written (the reader drops a torn last line). Times are epoch ms from
 * the monotonic clock (`performance.timeOrigin + performance.now()`), which a
 * clock-jump fault (it moves `Date.now`) does not touch.
 */
export type LedgerRecord =
  /** A publish attempt, written before `publish` is called. `t`: when it was due (open loop). */
  | { k: 'p'; key: string; t: number; node: string; poison?: true }
  /** `publish` resolved: the bus acknowledged the event. */
  | { k: 'a'; key: string; t: number }
  /** `publish` rejected. `stored`: the error's `details.stored` (`none` = never written). */
  | { k: 'f'; key: string; t: number; code?: string; stored?: string }
  /**
   * A handler call finished: `ok` true when it succeeded (it is then
   * acknowledged), false when it threw (a poison event). `sub` names the
   * subscription set that must see every event (`group:workers`,
   * `broadcast:b0`); `id` is the bus event id; `att` the attempt number.
   */
  | { k: 'h'; key: string; id: string; sub: string; node: string; att: number; t: number; ok: boolean }
  /** The bus dead-lettered the event for `sub` (its `deadLetter` event; pub/sub has no dead-letter store to read). */
  | { k: 'd'; key: string; sub: string; t: number }
  /** A warning or error the process's bus logged (signals such as a re-created consumer group). */
  | { k: 'log'; node: string; lvl: 'warn' | 'error'; msg: string; t: number };

/** Appends ledger records to one file with synchronous writes (see `LedgerRecord`). Not shared between processes. */
export class LedgerWriter {
  private readonly fd: number;
  constructor(path: string) {
    this.fd = openSync(path, 'a');
  }
  write(rec: LedgerRecord): void {
    writeSync(this.fd, `${JSON.stringify(rec)}\n`);
  }
  writeMany(recs: readonly LedgerRecord[]): void {
    if (recs.length === 0) return;
    writeSync(this.fd, `${recs.map((r) => JSON.stringify(r)).join('\n')}\n`);
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Parses JSON lines, skipping a torn line (a process killed mid-write) instead of failing. */
export function parseLines<T>(text: string): T[] {
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // a torn last line: the record was never complete
    }
  }
  return out;
}

/** Every record of every process of a run, file by file. */
export function readLedger(dir: string): LedgerRecord[] {
  if (!existsSync(dir)) return [];
  const out: LedgerRecord[] = [];
  for (const f of readdirSync(dir).sort())
    if (f.endsWith('.jsonl'))
      for (const r of parseLines<LedgerRecord>(readFileSync(join(dir, f), 'utf8'))) out.push(r);
  return out;
}
