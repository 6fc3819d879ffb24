#!/usr/bin/env node
import { parseArgs, USAGE, UsageError } from './args.js';
import { FAULTS } from './faults/index.js';
import { runChaos } from './run.js';

const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  console.log(USAGE);
  console.log('\nFaults:');
  for (const f of FAULTS) console.log(`  ${f.name.padEnd(18)} ${f.summary}`);
  process.exit(0);
}
let options: ReturnType<typeof parseArgs>;
try {
  options = parseArgs(argv);
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`qe-chaos: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  throw err;
}
const result = await runChaos(options);
const { totals, verdict } = result.classification;
console.log(
  `[chaos] acknowledged ${totals.acknowledged}, lost ${totals.lost}, duplicated ${totals.duplicated}, dead-lettered ${totals.deadLettered}, unexpected ${totals.unexpected}`,
);
console.log(`[chaos] verdict: ${verdict.pass ? 'PASS' : `FAIL\n  ${verdict.reasons.join('\n  ')}`}`);
console.log(`[chaos] report: ${result.dir}/report.md, chart.svg, report.json`);
process.exit(verdict.pass ? 0 : 1);
