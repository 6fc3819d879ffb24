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
  /** ms from the heal until latency was back under the threshold for a second; null: not within the horizon. */
  recoveryMs: number | null;
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

/** The latency a recovered system stays under: 3x the steady-state p99 (events handled outside every fault window), at least 250 ms. */
export function recoveryThresholdMs(
  handled: readonly Handled[],
  windows: readonly FaultWindow[],
  afterMs: number,
): number {
  const steady = handled
    .filter((h) => !windows.some((w) => h.t >= w.start && h.t <= w.end + afterMs))
    .map((h) => h.latencyMs)
    .sort((a, b) => a - b);
  return Math.max(250, 3 * quantile(steady, 0.99));
}

/**
 * Recovery time of each fault: from its heal until the last handled event
 * whose latency is over `thresholdMs`, looking up to the next fault (or
 * `horizon`), so a backlog that drains late counts in full. 0 when nothing
 * was slow after the heal; null when events were still slow in the last
 * second before the next fault (not recovered in time).
 */
export function recoveries(
  handled: readonly Handled[],
  windows: readonly FaultWindow[],
  thresholdMs: number,
  horizon: number,
  label: (w: FaultWindow) => string,
): Recovery[] {
  const sorted = [...windows].sort((a, b) => a.start - b.start);
  return sorted.map((w, i) => {
    const until = sorted[i + 1]?.start ?? horizon;
    let lastSlow = -1;
    for (const h of handled) if (h.t >= w.end && h.t < until && h.latencyMs > thresholdMs) lastSlow = h.t;
    if (lastSlow < 0) return { label: label(w), recoveryMs: 0 };
    if (lastSlow >= until - 1000) return { label: label(w), recoveryMs: null };
    return { label: label(w), recoveryMs: Math.round(lastSlow - w.end) };
  });
}
