import type { PhaseResult } from './run.js';
import type { Check } from './scenarios.js';

const f0 = (n: number) => Math.round(n).toLocaleString('en-US');
const f2 = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));

/**
 * A plain-text table of the phases, one row each. `late p99` is the sender's
 * own lateness behind the schedule (timer granularity), already inside the
 * latency columns.
 */
export function phaseTable(phases: readonly PhaseResult[]): string {
  const head = [
    'phase',
    'offered/s',
    'sent',
    'delivered',
    'lost',
    'dup',
    'delivered/s',
    'avg ms',
    'p50',
    'p90',
    'p99',
    'p99.9',
    'max',
    'RSS MB',
    'late p99',
  ];
  const rows = phases.map((p) => {
    const s = p.histogram.snapshot();
    return [
      String(p.ph),
      p.spec.rate === 0 ? 'max' : f0(p.spec.rate),
      f0(p.counts.sent),
      f0(p.counts.unique),
      f0(p.counts.lost),
      f0(p.counts.duplicates),
      f0(p.deliveredRate),
      f2(s.mean),
      f2(s.p50),
      f2(s.p90),
      f2(s.p99),
      f2(s.p999),
      f2(s.max),
      f0(Math.max(p.rss.producerMax, p.rss.consumerMax) / 1048576),
      p.spec.rate === 0 ? '-' : f2(p.lateness.quantileMs(0.99)),
    ];
  });
  return table(head, rows);
}

/** Aligns columns; numbers right-aligned. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The verdict as aligned PASS/FAIL lines and a closing summary line. */
export function verdictText(checks: readonly Check[]): string {
  const lines = checks.map(
    (c) => `  ${c.pass ? 'PASS' : 'FAIL'}  ${c.name.padEnd(34)} ${c.actual.padEnd(40)} (target ${c.target})`,
  );
  const ok = checks.every((c) => c.pass);
  return `${lines.join('\n')}\n  => ${ok ? 'PASS: meets spec 000 targets' : 'FAIL: misses spec 000 targets'}`;
}

/** A progress line: a bar, the phase, counts and memory. */
export function progressLine(p: {
  ph: number;
  rate: number;
  elapsedMs: number;
  durationMs: number;
  sent: number;
  received: number;
  rssBytes: number;
  target: string;
}): string {
  const frac = Math.min(1, p.elapsedMs / Math.max(1, p.durationMs));
  const width = 24;
  const full = Math.round(frac * width);
  const bar = `${'#'.repeat(full)}${'.'.repeat(width - full)}`;
  const rate = p.elapsedMs > 0 ? (p.received / p.elapsedMs) * 1000 : 0;
  return `[${bar}] ${p.target} phase ${p.ph} ${p.rate === 0 ? 'max' : `${f0(p.rate)}/s`} ${(p.elapsedMs / 1000).toFixed(0)}s/${(p.durationMs / 1000).toFixed(0)}s sent ${f0(p.sent)} delivered ${f0(p.received)} (${f0(rate)}/s) rss ${f0(p.rssBytes / 1048576)} MB`;
}
