import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { parseArgs } from '../src/cli.js';
import { runScenario } from '../src/run-scenario.js';
import type { ScenarioName } from '../src/scenarios.js';

const out = mkdtempSync(join(tmpdir(), 'qe-loadgen-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));
const quiet = { print: () => {}, progress: () => {} };

interface ResultFile {
  scenario: string;
  runs: {
    target: string;
    checks: { name: string; pass: boolean }[];
    phases: {
      counts: Record<string, number>;
      latencyMs: { count: number; p99: number };
      series: unknown[];
    }[];
  }[];
  comparison: { metric: string; yardsticks: { target: string; ratio: number }[] }[] | null;
}

function checkFiles(jsonPath: string, svgPaths: string[]): ResultFile {
  const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as ResultFile;
  for (const svg of svgPaths) {
    const text = readFileSync(svg, 'utf8');
    expect(text.startsWith('<?xml')).toBe(true);
    expect(text).toContain('<svg');
    expect(text).toContain('</svg>');
    expect(text).toContain('<polyline');
  }
  return json;
}

describe('scenarios against the in-process bus (short runs; counts, never speed)', () => {
  const short: [ScenarioName, Record<string, number>][] = [
    ['throughput', { durationMs: 600 }],
    ['latency', { rate: 4000, durationMs: 600 }],
    ['sustained', { rate: 3000, durationMs: 800 }],
    ['burst', { rate: 20_000, durationMs: 300 }],
  ];
  it.each(short)(
    '%s: every event delivered exactly once; result file and chart written',
    async (scenario, params) => {
      const r = await runScenario({
        scenario,
        target: 'memory',
        params,
        outDir: out,
        mix: scenario === 'latency',
        ...quiet,
      });
      const phase = r.runs[0]!.phases[0]!;
      expect(phase.counts.sent).toBeGreaterThan(0);
      expect(phase.counts.lost).toBe(0);
      expect(phase.counts.duplicates).toBe(0);
      expect(phase.counts.unique).toBe(phase.counts.sent);
      expect(phase.counts.unknown).toBe(0);
      expect(phase.histogram.count).toBe(phase.counts.unique);
      if (params.rate) expect(phase.counts.sent).toBe(Math.floor((params.rate * params.durationMs!) / 1000));
      const json = checkFiles(
        r.jsonPath,
        r.runs.map((x) => x.svgPath),
      );
      expect(json.scenario).toBe(scenario);
      expect(json.runs[0]!.phases[0]!.counts.lost).toBe(0);
      expect(json.runs[0]!.phases[0]!.latencyMs.count).toBe(phase.counts.unique);
      const names = json.runs[0]!.checks.map((c) => c.name);
      // max-throughput latencies are queueing by design: judged only by the open-loop scenarios
      if (scenario === 'throughput') expect(names).not.toContain('p99 latency');
      else expect(names).toContain('p99 latency');
      if (scenario === 'sustained')
        expect(json.runs[0]!.checks.find((c) => c.name === 'sustained duration')?.pass).toBe(false); // shortened run says so
    },
  );

  it('stress: ramps in steps until a step fails or the max rate, each step reconciled', async () => {
    const r = await runScenario({
      scenario: 'stress',
      target: 'memory',
      params: { rate: 1000, durationMs: 300, stepFactor: 2, maxRate: 4000 },
      outDir: out,
      ...quiet,
    });
    const phases = r.runs[0]!.phases;
    expect(phases.length).toBeGreaterThanOrEqual(1);
    // each rate at most twice (a failed step is confirmed once), in ascending order
    const rates = phases.map((p) => p.spec.rate);
    expect(rates).toEqual([...rates].sort((a, b) => a - b));
    for (const r of rates) expect([1000, 2000, 4000]).toContain(r);
    for (const r of new Set(rates)) expect(rates.filter((x) => x === r).length).toBeLessThanOrEqual(2);
    for (const p of phases) {
      expect(p.counts.lost).toBe(0);
      expect(p.counts.duplicates).toBe(0);
      expect(p.counts.sent).toBe(Math.floor(p.spec.rate * 0.3));
    }
    checkFiles(r.jsonPath, [r.runs[0]!.svgPath]);
  });
});

describe('the bus on Redis beside raw-redis and BullMQ yardsticks, separate processes, --compare', () => {
  it('producer and consumer child processes reconcile the ledger; keys are cleaned up', async () => {
    const prefix = `qe-test:loadgen:${Math.random().toString(36).slice(2, 10)}`;
    const r = await runScenario({
      scenario: 'latency',
      target: 'redis',
      compare: ['raw-redis', 'bullmq'],
      params: { rate: 2000, durationMs: 500 },
      keyPrefix: prefix,
      outDir: out,
      ...quiet,
    });
    expect(r.runs.map((x) => x.target)).toEqual(['redis', 'raw-redis', 'bullmq']);
    for (const run of r.runs) {
      const p = run.phases[0]!;
      expect(p.counts.sent).toBe(1000);
      expect(p.counts.lost).toBe(0);
      expect(p.counts.duplicates).toBe(0);
    }
    // separate processes: the consumer's RSS is its own, not the test runner's
    expect(r.runs[0]!.phases[0]!.rss.consumerMax).toBeGreaterThan(0);
    const json = checkFiles(
      r.jsonPath,
      r.runs.map((x) => x.svgPath),
    );
    expect(json.comparison?.map((c) => c.metric)).toContain('p99 ms');
    expect(json.comparison?.[0]?.yardsticks.map((y) => y.target)).toEqual(['raw-redis', 'bullmq']);
    const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    try {
      expect(await redis.keys(`${prefix}*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
  });
});

describe('the bus on Redis Cluster: redis-cluster:N starts its own Cluster of N masters for its run', () => {
  it('1 and 3 masters beside each other in one run: every event once, the Clusters stopped, their keys gone', async () => {
    const prefix = `qe-test:loadgen:${Math.random().toString(36).slice(2, 10)}`;
    const r = await runScenario({
      scenario: 'latency',
      target: 'redis-cluster:3',
      compare: ['redis-cluster:1'],
      params: { rate: 2000, durationMs: 500 },
      keyPrefix: prefix,
      clusterBasePort: 17760,
      outDir: out,
      ...quiet,
    });
    expect(r.runs.map((x) => x.target)).toEqual(['redis-cluster:3', 'redis-cluster:1']);
    for (const run of r.runs) {
      const p = run.phases[0]!;
      expect(p.counts.sent).toBe(1000);
      expect(p.counts.lost).toBe(0);
      expect(p.counts.duplicates).toBe(0);
    }
    // the Clusters are gone: nothing answers on their ports
    const probe = new Redis({
      port: 17760,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    probe.on('error', () => {});
    await expect(probe.connect()).rejects.toThrow();
    probe.disconnect();
  }, 120_000);

  it('plain redis-cluster without nodes fails clearly, and --redis-cluster is checked', async () => {
    await expect(
      runScenario({
        scenario: 'latency',
        target: 'redis-cluster',
        params: { rate: 100, durationMs: 100 },
        outDir: out,
        ...quiet,
      }),
    ).rejects.toThrow(/needs Cluster nodes: --redis-cluster/);
    expect(() => parseArgs(['latency', '--target', 'redis-cluster', '--redis-cluster', 'localhost'])).toThrow(
      /--redis-cluster "localhost": expected host:port/,
    );
    expect(
      parseArgs(['latency', '--target', 'redis-cluster', '--redis-cluster', 'a:1,b:2']).redisCluster,
    ).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ]);
    expect(() => parseArgs(['latency', '--target', 'redis-cluster:0'])).toThrow(/unknown target/);
  });
});

describe('qe-loadgen CLI', () => {
  const cli = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['--conditions=@qe/source', '--import', 'tsx', cli, ...args], {
      encoding: 'utf8',
      timeout: 60_000,
    });

  it('runs a scenario end to end, prints the table and verdict, writes the files', () => {
    const dir = join(out, 'cli');
    const r = run(['burst', '--target', 'memory', '--rate', '5000', '--duration', '400ms', '--out', dir]);
    expect([0, 1]).toContain(r.status); // the verdict may go either way on a busy machine; the report must be there
    expect(r.stdout).toMatch(/phase\s+offered\/s\s+sent\s+delivered\s+lost\s+dup/);
    expect(r.stdout).toMatch(/^0\s+5,000\s+2,000\s+2,000\s+0\s+0/m);
    expect(r.stdout).toMatch(/=> (PASS|FAIL)/);
    const json = /results: (.+\.json)/.exec(r.stdout)![1]!;
    const svg = /chart: +(.+\.svg)/.exec(r.stdout)![1]!;
    expect(existsSync(json) && existsSync(svg)).toBe(true);
    expect(r.stderr).toMatch(/\[[#.]+\] memory phase 0/); // the progress line
  });

  it.each([
    [
      ['nosuch', '--target', 'memory'],
      /unknown scenario "nosuch" \(accepted: throughput, latency, stress, sustained, burst\)/,
    ],
    [['latency'], /--target is required/],
    [['latency', '--target', 'carrier-pigeon'], /unknown target "carrier-pigeon"/],
    [['latency', '--target', 'memory', '--rate', 'fast'], /--rate "fast": expected an integer >= 0/],
    [['latency', '--target', 'memory', '--duration', 'forever'], /--duration "forever": expected a duration/],
  ])('usage error %j exits 2', (args, message) => {
    const r = run(args as string[]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
  });
});
