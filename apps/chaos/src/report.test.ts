import { describe, expect, it } from 'vitest';
import { parseArgs } from './args.js';
import { classify, type FaultWindow } from './classify.js';
import type { LedgerRecord } from './ledger.js';
import { handledEvents, perSecond, recoveries } from './metrics.js';
import { type ReportInput, renderChart, renderMarkdown } from './report.js';

const t0 = 1_000_000;
const kill: FaultWindow = { index: 0, name: 'kill-consumer', target: 'g0', start: t0 + 5000, end: t0 + 7000 };

/** One event a second for 20 s, handled 10 ms after it was due, except those due during the fault: handled 3 s late. */
function ledger(): LedgerRecord[] {
  const out: LedgerRecord[] = [];
  for (let i = 0; i < 20; i++) {
    const key = `p0.0.${i}`;
    const due = t0 + i * 1000 + 100;
    const late = due >= kill.start && due <= kill.end ? 3000 : 10;
    out.push({ k: 'p', key, t: due, node: 'p0' }, { k: 'a', key, t: due + 1 });
    for (const sub of ['group:workers', 'broadcast:b0'])
      out.push({ k: 'h', key, id: key, sub, node: 'g1', att: 1, t: due + late, ok: true });
  }
  return out;
}

describe('report', () => {
  const records = ledger();
  const classification = classify({
    records,
    faults: [kill],
    deadLetters: [],
    expectedSubs: ['group:workers', 'broadcast:b0'],
    persistence: 'aof',
    beforeMs: 1000,
    afterMs: 5000,
  });
  const handled = handledEvents(records);

  it('measures recovery from the heal until the last event due before it was handled', () => {
    // events due at 5.1 s and 6.1 s are handled at 8.1 s and 9.1 s (3 s late); the heal is at 7 s
    expect(recoveries(handled, [kill], () => 'k')).toEqual([{ label: 'k', recoveryMs: 2100 }]);
    // a fault after which nothing due before its heal was still waiting: 0
    const quiet: FaultWindow = { ...kill, index: 1, start: t0 + 12_000, end: t0 + 12_500 };
    expect(recoveries(handled, [quiet], () => 'q')[0]!.recoveryMs).toBe(0);
    const rows = perSecond(records, handled, t0, 20);
    // second 8: the on-time event due at 8.1 s and the late one due at 5.1 s, in both sets
    expect(rows[8]).toMatchObject({ published: 1, handled: 4, p50: 3000, max: 3000 });
    expect(rows[3]).toMatchObject({ published: 1, handled: 2, p99: 10 });
  });

  it('writes a Markdown table per fault and an SVG with the fault window shaded', () => {
    const input: ReportInput = {
      options: parseArgs(['--seed', '9', '--duration', '20s']),
      t0,
      schedule: [],
      windows: [kill],
      classification,
      seconds: perSecond(records, handled, t0, 20),
      recoveries: recoveries(handled, [kill], () => '#0 kill-consumer@g0'),
      memory: [{ proc: 'g0', t: t0 + 1000, rss: 90 * 1_048_576, heapUsed: 20 * 1_048_576 }],
      notes: [],
    };
    const md = renderMarkdown(input);
    expect(md).toContain('# qe-chaos report: PASS');
    expect(md).toContain('Reproduce: `pnpm chaos --seed 9 --duration 20s');
    expect(md).toContain('| #0 kill-consumer@g0 | 5.0 s | 2000 ms | 2 | 2 | 0 | 0 | 0 | 0 | 0 | 2100 ms |');
    const svg = renderChart(input);
    expect(svg.match(/<title>#0 kill-consumer<\/title>/g)).toHaveLength(4);
    expect(svg).toContain('V8 heap used');
  });
});
