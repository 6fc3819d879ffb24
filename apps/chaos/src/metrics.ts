import type { FaultWindow } from './classify.js';
import type { LedgerRecord } from './ledger.js';

/** One handled event: when its first successful handler call in a subscription set ended, and its latency from the due time. */
export interface Handled {
  t: number;
  latencyMs: number;
}

/** Per-second rows of the run, from its start. */
export interface SecondRow {
  sec: number;
  published: number;
  handled: number;
  p50: number;
  p99: number;
  max: number;
}

export interface Recovery {
  label: string;
  /** ms from the heal until every event due before it had been handled. */
  recoveryMs: number;
}

const quantile = (sorted: readonly number[], q: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

/** First successful calls per (event, subscription set), sorted by time, with their latency from the due time. */
export function handledEvents(records: readonly LedgerRecord[]): Handled[] {
  const due = new Map<string, number>();
  for (const r of records) if (r.k === 'p') due.set(r.key, r.t);
  const seen = new Set<string>();
  const out: Handled[] = [];
  for (const r of records) {
    if (r.k !== 'h' || !r.ok) continue;
    const id = `${r.key} ${r.sub}`;
    const d = due.get(r.key);
    if (seen.has(id) || d === undefined) continue;
    seen.add(id);
    out.push({ t: r.t, latencyMs: r.t - d });
  }
  return out.sort((a, b) => a.t - b.t);
}

/** Published and handled counts and latency percentiles per second since `t0`. */
export function perSecond(
  records: readonly LedgerRecord[],
  handled: readonly Handled[],
  t0: number,
  seconds: number,
): SecondRow[] {
  const lat: number[][] = Array.from({ length: seconds }, () => []);
  const published = new Array<number>(seconds).fill(0);
  for (const r of records)
    if (r.k === 'p') {
      const s = Math.floor((r.t - t0) / 1000);
      if (s >= 0 && s < seconds) published[s]!++;
    }
  for (const h of handled) {
    const s = Math.floor((h.t - t0) / 1000);
    if (s >= 0 && s < seconds) lat[s]!.push(h.latencyMs);
  }
  return lat.map((l, sec) => {
    l.sort((a, b) => a - b);
    return {
      sec,
      published: published[sec]!,
      handled: l.length,
      p50: quantile(l, 0.5),
      p99: quantile(l, 0.99),
      max: l.at(-1) ?? 0,
    };
  });
}

/**
 * Recovery time of each fault: from its heal until the last event that was
 * due before the heal had been handled in every subscription set (its first
 * successful call), i.e. until the backlog the fault built up had drained.
 * 0 when nothing due before the heal was handled after it. Lost events do
 * not count (the verdict deals with them). Measured on events rather than on
 * a latency threshold: a threshold made a steady-state latency spike seconds
 * later look like a slow recovery.
 */
export function recoveries(
  handled: readonly Handled[],
  windows: readonly FaultWindow[],
  label: (w: FaultWindow) => string,
): Recovery[] {
  return [...windows]
    .sort((a, b) => a.start - b.start)
    .map((w) => {
      let last = w.end;
      for (const h of handled) if (h.t - h.latencyMs <= w.end && h.t > last) last = h.t;
      return { label: label(w), recoveryMs: Math.round(last - w.end) };
    });
}
