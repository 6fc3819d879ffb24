import type { AgentEvent } from '@qe/core';
import { UsageError } from './errors.js';

const PRIORITY_NAMES = ['critical', 'high', 'normal', 'low', 'bulk'] as const;

/** ANSI colours, on only for a terminal (and never with NO_COLOR or --no-color). */
export interface Colors {
  readonly enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  blue(s: string): string;
  magenta(s: string): string;
  cyan(s: string): string;
}

export function colors(enabled: boolean): Colors {
  const wrap = (open: number, close: number) => (s: string) =>
    enabled ? `\x1b[${open}m${s}\x1b[${close}m` : s;
  return {
    enabled,
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    blue: wrap(34, 39),
    magenta: wrap(35, 39),
    cyan: wrap(36, 39),
  };
}

export function useColor(option: boolean | undefined, stream: NodeJS.WriteStream = process.stdout): boolean {
  if (option === false) return false;
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true;
}

export function priorityName(p: number | undefined): string {
  return PRIORITY_NAMES[p ?? 2] ?? String(p);
}

/** `critical`…`bulk` or 0-4 → the number. */
export function parsePriority(value: string, flag = '--priority'): number {
  const v = value.trim().toLowerCase();
  const i = (PRIORITY_NAMES as readonly string[]).indexOf(v);
  if (i >= 0) return i;
  if (/^[0-4]$/.test(v)) return Number(v);
  throw new UsageError(
    `${flag} ${JSON.stringify(value)}: expected one of ${PRIORITY_NAMES.join(', ')} (or 0-4)`,
  );
}

/**
 * A point in time: epoch ms, an ISO date (`2026-12-01T18:00:00Z`), `now`, or a
 * duration ago (`90s`, `5m`, `2h`, `1d`).
 */
export function parseTime(value: string, flag: string, now = Date.now()): number {
  const v = value.trim();
  if (v === 'now') return now;
  const rel = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v);
  if (rel) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'ms'];
    return Math.round(now - Number(rel[1]) * unit);
  }
  if (/^\d{10,}$/.test(v)) return Number(v);
  const t = Date.parse(v);
  if (!Number.isNaN(t)) return t;
  throw new UsageError(
    `${flag} ${JSON.stringify(value)}: expected epoch ms, an ISO date (2026-12-01T18:00:00Z), now, or a time ago like 30s, 5m, 2h, 1d`,
  );
}

export function parseIntOption(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`${flag} ${JSON.stringify(value)}: expected an integer from ${min} to ${max}`);
  return n;
}

/** `--filter agentId=worker-1`, `--filter priority=high`: what `tail`/`history`/`replay` keep. */
export interface EventFilter {
  agentId?: string[];
  priority?: number[];
}

export function parseFilters(values: readonly string[]): EventFilter {
  const f: EventFilter = {};
  for (const raw of values) {
    const m = /^([A-Za-z]+)=(.+)$/.exec(raw);
    if (!m)
      throw new UsageError(`--filter ${JSON.stringify(raw)}: expected key=value (agentId=..., priority=...)`);
    const key = m[1]!.toLowerCase();
    const vals = m[2]!.split(',');
    if (key === 'agentid' || key === 'agent') (f.agentId ??= []).push(...vals);
    else if (key === 'priority')
      (f.priority ??= []).push(...vals.map((v) => parsePriority(v, '--filter priority')));
    else
      throw new UsageError(
        `--filter ${JSON.stringify(raw)}: unknown key ${m[1]} (accepted: agentId, priority)`,
      );
  }
  return f;
}

export function matchesFilter(e: AgentEvent, f: EventFilter): boolean {
  if (f.agentId && !f.agentId.includes(e.agentId)) return false;
  if (f.priority && !f.priority.includes(e.priority ?? 2)) return false;
  return true;
}

function time(t: number): string {
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').replace('Z', '');
}

/** One event as a line (or a few) for people. */
export function formatEvent(e: AgentEvent, c: Colors): string {
  const p = priorityName(e.priority);
  const pc =
    e.priority === 0 ? c.red : e.priority === 1 ? c.yellow : e.priority === 4 ? c.dim : (s: string) => s;
  const corr = e.metadata?.correlationId ? c.magenta(` corr=${e.metadata.correlationId}`) : '';
  const data = JSON.stringify(e.data);
  return `${c.dim(time(e.timestamp))} ${c.bold(c.cyan(e.type.padEnd(20)))} ${pc(p.padEnd(8))} ${c.green(e.agentId)}${corr} ${c.dim(e.id)}\n    ${data === undefined ? '' : data}`;
}

export class Output {
  readonly c: Colors;
  constructor(
    readonly json: boolean,
    color: boolean,
  ) {
    this.c = colors(color);
  }
  /** A JSON line (scripts) on stdout. */
  line(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  }
  text(s: string): void {
    process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
  }
  /** Progress and status for people: stderr, so stdout stays data. */
  note(s: string): void {
    process.stderr.write(`${s}\n`);
  }
  event(e: AgentEvent): void {
    if (this.json) this.line(e);
    else this.text(formatEvent(e, this.c));
  }
}
