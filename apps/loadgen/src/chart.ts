import type { PhaseResult } from './run.js';

export const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  const m = v / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

const num = (n: number) =>
  n >= 1_000_000
    ? `${(n / 1_000_000).toFixed(1)}M`
    : n >= 1000
      ? `${(n / 1000).toFixed(n >= 10_000 ? 0 : 1)}k`
      : n < 10 && n > 0
        ? n.toFixed(n < 1 ? 2 : 1)
        : `${Math.round(n)}`;

/** One line of a chart panel: a value per second. */
export interface Series {
  name: string;
  color: string;
  values: number[];
  dash?: boolean;
}

/** A shaded time range of a panel (a fault window), in seconds from the start. */
export interface Band {
  fromSec: number;
  toSec: number;
  label: string;
  color: string;
}

/** How a panel scales and labels its axes. */
export interface PanelOptions {
  log?: boolean;
  unit: string;
  /** Seconds on the x axis (one value per second). */
  seconds: number;
  /** Shaded ranges drawn under the lines (e.g. fault windows), labelled at their top. */
  bands?: readonly Band[];
}

/**
 * One SVG panel of a chart: lines of per-second values, a y axis (linear or
 * log), an x axis in seconds and a legend. Other apps (the chaos suite)
 * compose their charts from it.
 */
export function panel(
  x: number,
  y: number,
  w: number,
  h: number,
  title: string,
  series: Series[],
  opts: PanelOptions,
): string {
  const out: string[] = [];
  const L = 60;
  const B = 26;
  const pw = w - L - 10;
  const ph = h - B - 24;
  const top = y + 24;
  out.push(`<text x="${x + L}" y="${y + 14}" class="t">${esc(title)}</text>`);
  const all = series.flatMap((s) => s.values).filter((v) => v > 0);
  let yOf: (v: number) => number;
  const ticks: number[] = [];
  if (opts.log) {
    const lo = 10 ** Math.floor(Math.log10(Math.max(0.001, Math.min(...all, 1))));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, lo * 10)));
    const span = Math.log10(hi) - Math.log10(lo);
    yOf = (v) => top + ph * (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span);
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  } else {
    const hi = niceMax(Math.max(1, ...all) * 1.05);
    yOf = (v) => top + ph * (1 - v / hi);
    for (let i = 0; i <= 4; i++) ticks.push((hi * i) / 4);
  }
  for (const t of ticks) {
    const ty = yOf(t);
    out.push(
      `<line x1="${x + L}" x2="${x + L + pw}" y1="${ty.toFixed(1)}" y2="${ty.toFixed(1)}" class="g"/>`,
    );
    out.push(
      `<text x="${x + L - 6}" y="${(ty + 4).toFixed(1)}" text-anchor="end">${num(t)}${opts.unit}</text>`,
    );
  }
  const n = Math.max(1, opts.seconds);
  const xOf = (i: number) => x + L + (pw * (i + 0.5)) / n;
  for (const b of opts.bands ?? []) {
    const bx = x + L + (pw * Math.max(0, b.fromSec)) / n;
    const bw = Math.max(2, (pw * (Math.min(n, b.toSec) - Math.max(0, b.fromSec))) / n);
    out.push(
      `<rect x="${bx.toFixed(1)}" y="${top}" width="${bw.toFixed(1)}" height="${ph}" fill="${b.color}" fill-opacity="0.18"><title>${esc(b.label)}</title></rect>`,
    );
    out.push(`<text x="${(bx + 2).toFixed(1)}" y="${top + 10}" font-size="9">${esc(b.label)}</text>`);
  }
  const step =
    [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((k) => n / k <= 12) ?? Math.ceil(n / 10);
  for (let i = 0; i < n; i += step)
    out.push(`<text x="${xOf(i).toFixed(1)}" y="${top + ph + 16}" text-anchor="middle">${i}s</text>`);
  for (const s of series) {
    const pts = s.values.map((v, i) => `${xOf(i).toFixed(1)},${yOf(v).toFixed(1)}`);
    if (pts.length === 0) continue;
    out.push(
      `<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ' stroke-dasharray="5 3"' : ''} stroke-linejoin="round"/>`,
    );
  }
  let lx = x + L;
  for (const s of series) {
    out.push(`<rect x="${lx}" y="${top + ph + 22}" width="14" height="3" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 18}" y="${top + ph + 27}">${esc(s.name)}</text>`);
    lx += 30 + s.name.length * 7;
  }
  return out.join('\n');
}

/**
 * An SVG a person can open: throughput (sent and delivered per second) over
 * time on top, latency percentiles per second (log scale) below. Phases
 * (stress steps) are laid end to end.
 */
export function renderChart(title: string, subtitle: string, phases: readonly PhaseResult[]): string {
  const rows = phases.flatMap((p) => p.series);
  const W = 960;
  const H = 620;
  const sent = rows.map((r) => r.sent);
  const recv = rows.map((r) => r.received);
  const body = [
    panel(
      0,
      50,
      W,
      270,
      'Throughput (events/s)',
      [
        { name: 'delivered', color: '#2563eb', values: recv },
        { name: 'sent', color: '#16a34a', values: sent, dash: true },
      ],
      { unit: '', seconds: rows.length },
    ),
    panel(
      0,
      330,
      W,
      280,
      'Latency from intended send time (ms, log scale)',
      [
        { name: 'p50', color: '#16a34a', values: rows.map((r) => r.p50) },
        { name: 'p90', color: '#2563eb', values: rows.map((r) => r.p90) },
        { name: 'p99', color: '#d97706', values: rows.map((r) => r.p99) },
        { name: 'p99.9', color: '#7c3aed', values: rows.map((r) => r.p999) },
        { name: 'max', color: '#dc2626', values: rows.map((r) => r.max), dash: true },
      ],
      { log: true, unit: '', seconds: rows.length },
    ),
  ];
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="11">
<style>text{fill:#475467}.t{font-size:13px;font-weight:600;fill:#1b2430}.g{stroke:#e3e8ef}.h{font-size:16px;font-weight:700;fill:#111827}</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="24" class="h">${esc(title)}</text>
<text x="20" y="42">${esc(subtitle)}</text>
${body.join('\n')}
</svg>
`;
}
