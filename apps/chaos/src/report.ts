import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Band, esc, panel, type Series } from '@qe/loadgen/chart';
import type { ChaosOptions } from './args.js';
import { type Classification, type FaultWindow, faultLabel } from './classify.js';
import type { PlannedFault } from './faults/index.js';
import type { Recovery, SecondRow } from './metrics.js';

/** One memory sample of one process (a child's `process.memoryUsage()`, or Redis's INFO). */
export interface MemorySample {
  proc: string;
  t: number;
  rss: number;
  heapUsed: number;
  heapLimit?: number;
}

export interface ReportInput {
  options: ChaosOptions;
  t0: number;
  schedule: readonly PlannedFault[];
  windows: readonly FaultWindow[];
  classification: Classification;
  seconds: readonly SecondRow[];
  recoveries: readonly Recovery[];
  memory: readonly MemorySample[];
  notes: readonly string[];
}

const COLORS = ['#2563eb', '#16a34a', '#d97706', '#7c3aed', '#dc2626', '#0891b2', '#be185d', '#4b5563'];

function memorySeries(
  memory: readonly MemorySample[],
  t0: number,
  seconds: number,
  field: 'rss' | 'heapUsed',
): Series[] {
  // Redis has no V8 heap (its heapUsed is used_memory): only the children in the heap panel
  const procs = [...new Set(memory.map((m) => m.proc))]
    .filter((p) => field === 'rss' || p !== 'redis')
    .sort();
  return procs.map((proc, i) => {
    const values = new Array<number>(seconds).fill(0);
    for (const m of memory) {
      const s = Math.floor((m.t - t0) / 1000);
      if (m.proc === proc && s >= 0 && s < seconds) values[s] = Math.max(values[s]!, m[field] / 1_048_576);
    }
    // carry the last sample over gaps (a process being restarted, Redis down)
    for (let s = 1; s < seconds; s++) if (values[s] === 0) values[s] = values[s - 1]!;
    return { name: proc, color: COLORS[i % COLORS.length]!, values };
  });
}

/** The SVG: throughput, latency percentiles (log), RSS and V8 heap per process over time, fault windows shaded. */
export function renderChart(r: ReportInput): string {
  const n = r.seconds.length;
  const bands: Band[] = r.windows.map((w) => ({
    fromSec: (w.start - r.t0) / 1000,
    toSec: Math.max((w.end - r.t0) / 1000, (w.start - r.t0) / 1000 + 0.3),
    label: `#${w.index} ${w.name}`,
    color: w.name.startsWith('redis') || w.name === 'client-pause' ? '#dc2626' : '#d97706',
  }));
  const W = 1100;
  const body = [
    panel(
      0,
      50,
      W,
      240,
      'Events per second (handled: first successful call per subscription set)',
      [
        { name: 'handled', color: '#2563eb', values: r.seconds.map((s) => s.handled) },
        { name: 'published', color: '#16a34a', values: r.seconds.map((s) => s.published), dash: true },
      ],
      { unit: '', seconds: n, bands },
    ),
    panel(
      0,
      300,
      W,
      280,
      'Latency from due time to handled (ms, log scale), by second handled',
      [
        { name: 'p50', color: '#16a34a', values: r.seconds.map((s) => s.p50) },
        { name: 'p99', color: '#d97706', values: r.seconds.map((s) => s.p99) },
        { name: 'max', color: '#dc2626', values: r.seconds.map((s) => s.max), dash: true },
      ],
      { log: true, unit: '', seconds: n, bands },
    ),
    panel(0, 590, W, 260, 'Resident memory (MB) per process', memorySeries(r.memory, r.t0, n, 'rss'), {
      unit: '',
      seconds: n,
      bands,
    }),
    panel(
      0,
      860,
      W,
      260,
      'V8 heap used (MB) per child process',
      memorySeries(r.memory, r.t0, n, 'heapUsed'),
      {
        unit: '',
        seconds: n,
        bands,
      },
    ),
  ];
  const c = r.classification;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="1140" viewBox="0 0 ${W} 1140" font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="11">
<style>text{fill:#475467}.t{font-size:13px;font-weight:600;fill:#1b2430}.g{stroke:#e3e8ef}.h{font-size:16px;font-weight:700;fill:#111827}</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="24" class="h">${esc(`qe-chaos seed ${r.options.seed}: ${c.verdict.pass ? 'PASS' : 'FAIL'}`)}</text>
<text x="20" y="42">${esc(`persistence ${r.options.persistence}, ${r.options.rate}/s per producer, ${r.windows.length} faults (shaded); acknowledged ${c.totals.acknowledged}, lost ${c.totals.lost}, duplicated ${c.totals.duplicated}, dead-lettered ${c.totals.deadLettered}, unexpected ${c.totals.unexpected}`)}</text>
${body.join('\n')}
</svg>
`;
}

const fmtMs = (ms: number | undefined) => (ms === undefined ? '' : `${ms} ms`);

/** The Markdown summary a person reads first. */
export function renderMarkdown(r: ReportInput): string {
  const c = r.classification;
  const rec = new Map(r.recoveries.map((x) => [x.label, x.recoveryMs]));
  const lines = [
    `# qe-chaos report: ${c.verdict.pass ? 'PASS' : 'FAIL'}`,
    '',
    `Seed ${r.options.seed}, duration ${r.options.durationMs / 1000} s, persistence \`${r.options.persistence}\`, ${r.options.rate} events/s per producer.`,
    `Reproduce: \`pnpm chaos --seed ${r.options.seed} --duration ${r.options.durationMs / 1000}s --persistence ${r.options.persistence} --rate ${r.options.rate}${r.options.faults.length ? ` --faults ${r.options.faults.join(',')}` : ''}${(['cluster', 'pubsub', 'router', 'broker'] as const).map((f) => (r.options[f] ? ` --${f}` : '')).join('')}\``,
    '',
    ...(c.verdict.pass
      ? ['Verdict: pass.']
      : ['Verdict: **fail**:', ...c.verdict.reasons.map((x) => `- ${x}`)]),
    '',
    'Recovery: from the heal until every event due before it had been handled (the backlog drained).',
    '',
    '| fault | at | lasted | published | acknowledged | failed | lost | duplicated | dead-lettered | unexpected | recovery |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...c.perFault.map((f) => {
      const k = f.counts;
      const at = f.window ? `${((f.window.start - r.t0) / 1000).toFixed(1)} s` : '';
      const lasted = f.window ? `${Math.round(f.window.end - f.window.start)} ms` : '';
      const allowed = [
        k.lostSignalled > 0 ? `${k.lostSignalled} signalled wipe` : '',
        k.lostAtMostOnce > 0 ? `${k.lostAtMostOnce} at-most-once` : '',
      ].filter(Boolean);
      const lost = allowed.length > 0 ? `${k.lost} (${allowed.join(', ')})` : `${k.lost}`;
      const recovery = f.window ? fmtMs(rec.get(f.label)) : '';
      return `| ${f.label} | ${at} | ${lasted} | ${k.published} | ${k.acknowledged} | ${k.failed} | ${lost} | ${k.duplicated} | ${k.deadLettered} | ${k.unexpected} | ${recovery} |`;
    }),
    `| **total** | | | ${c.totals.published} | ${c.totals.acknowledged} | ${c.totals.failed} | ${c.totals.lost} | ${c.totals.duplicated} | ${c.totals.deadLettered} | ${c.totals.unexpected} | |`,
    '',
    '`published`, `acknowledged`, `failed` count events due while the fault was active; `lost` and `dead-lettered` count',
    'per subscription set that must see the event (e.g. `group:workers`, `broadcast:b0`), attributed with margins',
    '(1 s before, 12 s after the heal); `duplicated` counts extra successful handler calls. Allowed losses in brackets.',
    '',
  ];
  const shown = c.anomalies.filter((a) => !a.allowed).slice(0, 30);
  if (shown.length > 0) {
    lines.push(
      '## Anomalies the verdict does not allow (first 30)',
      '',
      '| kind | key | sub | at | fault | detail |',
      '| --- | --- | --- | --- | --- | --- |',
    );
    for (const a of shown)
      lines.push(
        `| ${a.kind} | ${a.key} | ${a.sub ?? ''} | ${((a.t - r.t0) / 1000).toFixed(2)} s | ${a.fault} | ${a.detail ?? ''} |`,
      );
    lines.push('');
  }
  if (r.notes.length > 0) lines.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  const peak = new Map<string, number>();
  for (const m of r.memory) peak.set(m.proc, Math.max(peak.get(m.proc) ?? 0, m.rss));
  lines.push(
    '## Peak RSS',
    '',
    ...[...peak].sort().map(([p, v]) => `- ${p}: ${(v / 1_048_576).toFixed(0)} MB`),
    '',
  );
  lines.push(
    'Files: `report.json` (everything), `chart.svg`, `ledger/` (one JSONL file per process incarnation), `faults.jsonl`, `memory.jsonl`, `logs/`.',
    '',
  );
  return lines.join('\n');
}

/** Writes report.json, report.md and chart.svg into `dir`. */
export function writeReport(dir: string, r: ReportInput): void {
  const json = {
    options: r.options,
    verdict: r.classification.verdict,
    totals: r.classification.totals,
    perFault: r.classification.perFault.map((f) => ({
      label: f.label,
      window: f.window,
      counts: f.counts,
      recoveryMs: f.window
        ? (r.recoveries.find((x) => x.label === faultLabel(f.window!))?.recoveryMs ?? null)
        : null,
    })),
    schedule: r.schedule,
    anomalies: r.classification.anomalies.slice(0, 1000),
    anomaliesTotal: r.classification.anomalies.length,
    seconds: r.seconds,
    notes: r.notes,
  };
  writeFileSync(join(dir, 'report.json'), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(join(dir, 'report.md'), renderMarkdown(r));
  writeFileSync(join(dir, 'chart.svg'), renderChart(r));
}
