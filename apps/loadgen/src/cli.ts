#!/usr/bin/env node
/**
 * qe-loadgen <scenario> --target <name> [options]
 *
 * Exit codes: 0 when the run meets spec 000's targets, 1 when it does not (or
 * events were lost), 2 for bad usage.
 */
import { runScenario, type ScenarioOptions } from './run-scenario.js';
import { SCENARIOS, type ScenarioName, type ScenarioParams } from './scenarios.js';
import { isTargetName, targetNames } from './targets/index.js';

const USAGE = `Usage: qe-loadgen <scenario> --target <target> [options]

Scenarios (spec 000):
  throughput   max-throughput mode, bounded in-flight          (default 10 s)
  latency      open loop at a fixed rate                        (default 10,000/s for 10 s)
  stress       open-loop steps x1.5 until p99 > budget or loss  (default from 5,000/s, 5 s a step)
  sustained    open loop for a long time                        (default 5,000/s for 5 min)
  burst        a short open-loop burst                          (default 50,000/s for 2 s)

Targets: ${targetNames().join(', ')}

Options:
  --rate N             events/s (open loop; stress: first step); 0 = max-throughput mode
  --duration D         e.g. 30s, 5m, 500ms (stress: per step)
  --producers N        producer processes (default 1)
  --payload-bytes N    padding per event (default 200)
  --max-in-flight N    unresolved sends per producer (default 2000)
  --batch N            events per send call at most (default 500)
  --p99-budget MS      stress: a step passes with p99 under this (default 200)
  --step-factor F      stress: rate multiplier per step (default 1.5)
  --max-rate N         stress: stop before this rate (default 1,000,000)
  --drain D            wait this long without progress for stragglers (default 10s)
  --mix                spread events over the catalogue's families and the five priorities
  --compare [T,U]      run the same load against yardsticks T, U too (default raw-redis) and print ratios
  --redis-url URL      default $REDIS_URL or redis://127.0.0.1:6379
  --key-prefix P       Redis key prefix (a run id is appended; keys are deleted afterwards)
  --broker-url URL     broker base URL for the ws and http targets
  --redis-cluster H:P[,H:P...]  Cluster nodes for the redis-cluster target
                       (redis-cluster:N starts a local Cluster of N masters instead)
  --out DIR            where the JSON result and SVG chart go (default ./loadgen-results)
`;

class UsageError extends Error {}

function parseDuration(s: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|min|h)?$/.exec(s.trim());
  if (!m) throw new UsageError(`${flag} ${JSON.stringify(s)}: expected a duration like 500ms, 30s, 5m`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'h' ? 3_600_000 : 60_000));
}

function parseNum(s: string | undefined, flag: string, min: number, integer = true): number {
  const n = Number(s);
  if (
    s === undefined ||
    s.trim() === '' ||
    !Number.isFinite(n) ||
    n < min ||
    (integer && !Number.isInteger(n))
  )
    throw new UsageError(
      `${flag} ${JSON.stringify(s ?? '')}: expected ${integer ? 'an integer' : 'a number'} >= ${min}`,
    );
  return n;
}

function parseNodes(s: string, flag: string): { host: string; port: number }[] {
  return s.split(',').map((hp) => {
    const m = /^([^:\s]+):(\d{1,5})$/.exec(hp.trim());
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535)
      throw new UsageError(`${flag} ${JSON.stringify(s)}: expected host:port[,host:port...]`);
    return { host: m[1]!, port };
  });
}

/** Parses the command line into scenario options. Throws `UsageError` naming the bad flag. */
export function parseArgs(argv: readonly string[]): ScenarioOptions {
  const scenario = argv[0];
  if (!scenario || scenario.startsWith('-')) throw new UsageError('missing <scenario>');
  if (!(SCENARIOS as readonly string[]).includes(scenario))
    throw new UsageError(`unknown scenario ${JSON.stringify(scenario)} (accepted: ${SCENARIOS.join(', ')})`);
  const o: ScenarioOptions = { scenario: scenario as ScenarioName, target: '' };
  const params: Partial<ScenarioParams> = {};
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag}: missing value`);
      return v;
    };
    switch (flag) {
      case '--target':
        o.target = val();
        break;
      case '--rate':
        params.rate = parseNum(val(), flag, 0);
        break;
      case '--duration':
        params.durationMs = parseDuration(val(), flag);
        break;
      case '--producers':
        o.producers = parseNum(val(), flag, 1);
        break;
      case '--payload-bytes':
        o.payloadBytes = parseNum(val(), flag, 0);
        break;
      case '--max-in-flight':
        o.maxInFlight = parseNum(val(), flag, 1);
        break;
      case '--batch':
        o.maxBatch = parseNum(val(), flag, 1);
        break;
      case '--p99-budget':
        params.p99BudgetMs = parseNum(val(), flag, 0, false);
        break;
      case '--step-factor':
        params.stepFactor = parseNum(val(), flag, 1.01, false);
        break;
      case '--max-rate':
        params.maxRate = parseNum(val(), flag, 1);
        break;
      case '--drain':
        o.drainMs = parseDuration(val(), flag);
        break;
      case '--mix':
        o.mix = true;
        break;
      case '--compare': {
        const next = argv[i + 1];
        o.compare = (next !== undefined && !next.startsWith('-') ? argv[++i]! : 'raw-redis').split(',');
        break;
      }
      case '--redis-url':
        o.redisUrl = val();
        break;
      case '--key-prefix':
        o.keyPrefix = val();
        break;
      case '--broker-url':
        o.brokerUrl = val();
        break;
      case '--redis-cluster':
        o.redisCluster = parseNodes(val(), flag);
        break;
      case '--out':
        o.outDir = val();
        break;
      default:
        throw new UsageError(`unknown option ${JSON.stringify(flag)} (see --help)`);
    }
  }
  if (o.target === '') throw new UsageError(`--target is required (accepted: ${targetNames().join(', ')})`);
  for (const t of [o.target, ...(o.compare ?? [])])
    if (!isTargetName(t))
      throw new UsageError(`unknown target ${JSON.stringify(t)} (accepted: ${targetNames().join(', ')})`);
  if (o.scenario === 'stress' && params.rate === 0)
    throw new UsageError('--rate 0: stress needs a first step rate > 0');
  o.params = params;
  return o;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    process.exit(argv.length === 0 ? 2 : 0);
  }
  let options: ScenarioOptions;
  try {
    options = parseArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`qe-loadgen: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    throw err;
  }
  try {
    const result = await runScenario(options);
    process.exit(result.pass ? 0 : 1);
  } catch (err) {
    process.stderr.write(`qe-loadgen: run failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/cli.ts')) void main();
