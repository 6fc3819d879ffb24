import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startCluster } from '@qe/test-utils';
import { renderChart } from './chart.js';
import { phaseTable, progressLine, table, verdictText } from './report.js';
import { type PhaseResult, runLoad } from './run.js';
import {
  bestStep,
  type Check,
  headline,
  planFor,
  type ScenarioName,
  type ScenarioParams,
  scenarioDefaults,
  verdict,
} from './scenarios.js';
import { CLUSTER_TARGET } from './targets/redis-cluster.js';

/** One `qe-loadgen` invocation: a scenario against a target, and optional yardsticks. */
export interface ScenarioOptions {
  scenario: ScenarioName;
  target: string;
  /** Overrides of the scenario's defaults. */
  params?: Partial<ScenarioParams>;
  producers?: number;
  payloadBytes?: number;
  maxInFlight?: number;
  maxBatch?: number;
  drainMs?: number;
  redisUrl?: string;
  /** Default `qe-loadgen:<run id>`; every key under it is deleted after the run. */
  keyPrefix?: string;
  brokerUrl?: string;
  /** Cluster nodes for the `redis-cluster` target. */
  redisCluster?: { host: string; port: number }[];
  /** First port of the local Clusters `redis-cluster:N` starts (default 17700; N masters use N ports and their bus ports +10000). */
  clusterBasePort?: number;
  mix?: boolean;
  /** Also run the same load against these yardstick targets, one after the other, and print ratios. */
  compare?: readonly string[];
  outDir?: string;
  /** Progress and report lines (default: stderr for progress, stdout for the report). */
  print?: (line: string) => void;
  progress?: (line: string) => void;
}

/** The phases, verdict and chart of one target within a scenario run. */
export interface TargetRun {
  target: string;
  keyPrefix: string;
  phases: PhaseResult[];
  checks: Check[];
  pass: boolean;
  svgPath: string;
}

/** Everything a scenario run produced, including the paths of its JSON and SVG files. */
export interface ScenarioResult {
  scenario: ScenarioName;
  params: ScenarioParams;
  runs: TargetRun[];
  /** One row per metric: the target's value, then each yardstick's value and the ratio target/yardstick. */
  comparison:
    | { metric: string; target: number; yardsticks: { target: string; value: number; ratio: number }[] }[]
    | null;
  jsonPath: string;
  pass: boolean;
}

function summary(p: PhaseResult) {
  const s = p.histogram.snapshot();
  return {
    phase: p.ph,
    offeredRate: p.spec.rate,
    durationMs: p.spec.durationMs,
    counts: p.counts,
    sendRate: p.sendRate,
    deliveredRate: p.deliveredRate,
    wallMs: p.wallMs,
    maxSendLagMs: p.maxLagMs,
    senderLatenessMs: {
      p50: p.lateness.quantileMs(0.5),
      p99: p.lateness.quantileMs(0.99),
      max: p.lateness.maxUs / 1000,
    },
    latencyMs: {
      count: s.count,
      mean: s.mean,
      min: s.min,
      p50: s.p50,
      p90: s.p90,
      p95: s.p95,
      p99: s.p99,
      p999: s.p999,
      max: s.max,
    },
    rssBytes: p.rss,
    series: p.series,
    errors: p.errors,
  };
}

/**
 * Runs one scenario against a target (and, with `compare`, the same load
 * against a yardstick right after it), prints the table and verdict, and
 * writes a JSON result file and an SVG chart per target under `outDir`.
 */
export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const params: ScenarioParams = { ...scenarioDefaults(o.scenario), ...o.params };
  const print = o.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  // on a terminal the line redraws in place; in a log, one line every 5 s is enough
  let calls = 0;
  const progress =
    o.progress ??
    ((l: string) => {
      if (process.stderr.isTTY) process.stderr.write(`\r${l}\x1b[K`);
      else if (calls++ % 10 === 0) process.stderr.write(`${l}\n`);
    });
  const outDir = resolve(o.outDir ?? 'loadgen-results');
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const compare = o.compare ?? [];
  const base = `${o.scenario}-${o.target}${compare.length > 0 ? `-vs-${compare.join('-')}` : ''}-${stamp}`;
  const runs: TargetRun[] = [];
  for (const target of [o.target, ...compare]) {
    const runId = randomBytes(4).toString('hex');
    const keyPrefix = `${o.keyPrefix ?? 'qe-loadgen'}:${runId}`;
    print(
      `\n== ${o.scenario} against ${target} (${params.rate === 0 ? 'max-throughput, bounded in-flight' : `open loop from ${params.rate.toLocaleString('en-US')} events/s`}, ${params.durationMs / 1000} s${o.scenario === 'stress' ? ' per step' : ''})`,
    );
    // redis-cluster:N: a Cluster of N masters of this run's own, for this target only
    const masters = Number(CLUSTER_TARGET.exec(target)?.[1] ?? 0);
    const local =
      masters > 0 ? await startCluster(o.clusterBasePort ?? 17700, { masters, replicas: 0 }) : undefined;
    if (local)
      print(
        `   a local Redis Cluster of ${masters} master${masters > 1 ? 's' : ''} on ports ${local.nodes.map((n) => n.port).join(', ')}`,
      );
    const redisCluster = local?.nodes ?? o.redisCluster;
    let phases: PhaseResult[];
    try {
      phases = await runLoad({
        target,
        ctx: {
          runId,
          keyPrefix,
          redisUrl: o.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
          mix: o.mix ?? false,
          ...(o.brokerUrl === undefined ? {} : { brokerUrl: o.brokerUrl }),
          ...(redisCluster === undefined ? {} : { redisCluster }),
        },
        producers: o.producers ?? 1,
        payloadBytes: o.payloadBytes ?? 200,
        maxInFlight: o.maxInFlight ?? 2000,
        maxBatch: o.maxBatch ?? 500,
        drainMs: o.drainMs ?? 10_000,
        nextPhase: planFor(o.scenario, params),
        onProgress: (p) =>
          progress(progressLine({ ...p, rate: p.spec.rate, durationMs: p.spec.durationMs, target })),
      });
    } finally {
      await local?.stop();
    }
    if (process.stderr.isTTY && !o.progress) process.stderr.write('\n');
    const checks = verdict(o.scenario, phases, params);
    const svgPath = join(outDir, `${base}-${target}.svg`);
    const h = headline(o.scenario, phases, params);
    const hs = h?.histogram.snapshot();
    writeFileSync(
      svgPath,
      renderChart(
        `qe-loadgen ${o.scenario} · ${target}`,
        hs
          ? `${h!.spec.rate === 0 ? 'max throughput' : `${h!.spec.rate.toLocaleString('en-US')} events/s offered`} · ${Math.round(h!.deliveredRate).toLocaleString('en-US')} delivered/s · p50 ${hs.p50.toFixed(2)} ms · p99 ${hs.p99.toFixed(2)} ms · p99.9 ${hs.p999.toFixed(2)} ms · max ${hs.max.toFixed(1)} ms · ${phases.length} phase(s)`
          : 'no data',
        phases,
      ),
    );
    print(phaseTable(phases));
    print(verdictText(checks));
    runs.push({ target, keyPrefix, phases, checks, pass: checks.every((c) => c.pass), svgPath });
  }

  let comparison: ScenarioResult['comparison'] = null;
  if (runs.length > 1) {
    const rss = (r: TargetRun) =>
      Math.max(...r.phases.map((p) => Math.max(p.rss.producerMax, p.rss.consumerMax)));
    const best = (r: TargetRun) => bestStep(r.phases, params)?.spec.rate ?? 0;
    const metrics: [string, (r: TargetRun) => number][] = [
      ...(o.scenario === 'stress'
        ? [
            [`best rate with p99 <= ${params.p99BudgetMs} ms (events/s)`, best] as [
              string,
              (r: TargetRun) => number,
            ],
          ]
        : []),
      ['delivered events/s', (r) => headline(o.scenario, r.phases, params)?.deliveredRate ?? 0],
      ['p50 ms', (r) => headline(o.scenario, r.phases, params)?.histogram.quantileMs(0.5) ?? 0],
      ['p99 ms', (r) => headline(o.scenario, r.phases, params)?.histogram.quantileMs(0.99) ?? 0],
      ['p99.9 ms', (r) => headline(o.scenario, r.phases, params)?.histogram.quantileMs(0.999) ?? 0],
      ['max ms', (r) => (headline(o.scenario, r.phases, params)?.histogram.maxUs ?? 0) / 1000],
      ['max RSS MB', (r) => rss(r) / 1048576],
    ];
    const [main, ...others] = runs as [TargetRun, ...TargetRun[]];
    comparison = metrics.map(([metric, get]) => {
      const v = get(main);
      return {
        metric,
        target: v,
        yardsticks: others.map((y) => {
          const w = get(y);
          return { target: y.target, value: w, ratio: w === 0 ? 0 : v / w };
        }),
      };
    });
    const num = (n: number) => n.toFixed(n >= 100 ? 0 : 2);
    print(
      `\n== ${main.target} vs ${others.map((y) => y.target).join(', ')} (same run; ratio = ${main.target} / yardstick)`,
    );
    print(
      table(
        ['metric', main.target, ...others.flatMap((y) => [y.target, 'ratio'])],
        comparison.map((c) => [
          c.metric,
          num(c.target),
          ...c.yardsticks.flatMap((y) => [num(y.value), `${y.ratio.toFixed(2)}x`]),
        ]),
      ),
    );
  }

  const jsonPath = join(outDir, `${base}.json`);
  const pass = runs[0]!.pass;
  writeFileSync(
    jsonPath,
    `${JSON.stringify(
      {
        tool: 'qe-loadgen',
        scenario: o.scenario,
        params,
        producers: o.producers ?? 1,
        payloadBytes: o.payloadBytes ?? 200,
        startedAt: stamp,
        node: process.version,
        runs: runs.map((r) => ({
          target: r.target,
          keyPrefix: r.keyPrefix,
          pass: r.pass,
          checks: r.checks,
          svg: r.svgPath,
          phases: r.phases.map(summary),
        })),
        comparison,
        pass,
      },
      null,
      2,
    )}\n`,
  );
  print(`\nresults: ${jsonPath}`);
  for (const r of runs) print(`chart:   ${r.svgPath}`);
  return { scenario: o.scenario, params, runs, comparison, jsonPath, pass };
}
