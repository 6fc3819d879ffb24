/**
 * The CI chaos run: `qe-chaos` for 150 s with seed 48, whose schedule draws
 * every one of the twelve faults (redis-kill twice), against Redis with AOF
 * `appendfsync always`. The verdict must pass and the report must be written.
 * Ports 18640-18641 (no other package uses 18xxx).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { exited, startFixture } from '@qe/test-utils';
import { expect, it } from 'vitest';
import { FAULTS } from '../src/faults/index.js';

const OUT = join(import.meta.dirname, '..', '.test-artifacts', 'ci-run');

it('a 150 s run with every fault (seed 48): the verdict passes and the report is written', async () => {
  const lines: string[] = [];
  const cli = startFixture(
    new URL('../src/cli.ts', import.meta.url),
    ['--duration', '150s', '--seed', '48', '--out', OUT, '--base-port', '18640'],
    { onLine: (l) => lines.push(l) },
  );
  const { code } = await exited(cli);
  const output = lines.join('\n');
  for (const f of ['report.md', 'report.json', 'chart.svg', 'schedule.json', 'faults.jsonl', 'memory.jsonl'])
    expect(existsSync(join(OUT, f)), f).toBe(true);
  const report = JSON.parse(readFileSync(join(OUT, 'report.json'), 'utf8'));
  const drawn = new Set(report.schedule.map((f: { fault: string }) => f.fault));
  const singleNode = FAULTS.filter((f) => !f.name.startsWith('cluster-') && !f.name.endsWith('-broker')).map(
    (f) => f.name,
  );
  expect([...drawn].sort()).toEqual(singleNode.sort());
  expect(report.verdict, `${output}\n${readFileSync(join(OUT, 'report.md'), 'utf8')}`).toEqual({
    pass: true,
    reasons: [],
  });
  expect(report.totals.acknowledged).toBeGreaterThan(5000);
  expect(report.totals.lost).toBe(0);
  expect(code).toBe(0);
}, 420_000);
