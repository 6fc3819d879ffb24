/** The command line of `qe-chaos`, parsed. */
export interface ChaosOptions {
  durationMs: number;
  seed: number;
  /** Fault names to draw from; empty = every fault that fits the topology. */
  faults: string[];
  out: string;
  /** `aof`: Redis with `appendonly yes`, `appendfsync always`. `none`: no persistence at all. */
  persistence: 'aof' | 'none';
  /** Events per second, per producer (open loop). */
  rate: number;
  /** First Redis port of the run (the single node; the Cluster takes the next six). */
  basePort: number;
  /** Also run a 3+3 Redis Cluster with its own producer and consumers. */
  cluster: boolean;
  /** Also run a producer and a broadcast consumer on Redis pub/sub (at-most-once). */
  pubsub: boolean;
  /** Also run a producer and two members of a router group (`@qe/router`, hash-based). */
  router: boolean;
  /** Also run the broker (`@qe/broker`) with WebSocket clients: a producer, a group member and a broadcast subscriber. */
  broker: boolean;
}

export class UsageError extends Error {}

/** `90s`, `2m`, `30m`, `1h`, `1500ms` or a bare number of seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`not a duration: ${text} (e.g. 90s, 2m, 30m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

export const USAGE = `qe-chaos [--duration 2m] [--seed N] [--faults a,b,...] [--out dir]
         [--persistence aof|none] [--rate N] [--base-port 18600] [--cluster] [--pubsub] [--router] [--broker]

Runs producers and consumers of QE Event Bus on Redis in child processes, injects
faults from a schedule drawn from --seed, writes a ledger of every event and a
report to --out, and exits 1 when the verdict fails (2 for bad usage).`;

export function parseArgs(argv: readonly string[]): ChaosOptions {
  const o: ChaosOptions = {
    durationMs: 120_000,
    seed: Date.now() % 1_000_000,
    faults: [],
    out: 'chaos-results',
    persistence: 'aof',
    rate: 40,
    basePort: 18600,
    cluster: false,
    pubsub: false,
    router: false,
    broker: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--') continue;
    if (flag === '--cluster' || flag === '--pubsub' || flag === '--router' || flag === '--broker') {
      o[flag.slice(2) as 'cluster' | 'pubsub' | 'router' | 'broker'] = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    switch (flag) {
      case '--duration':
        o.durationMs = parseDuration(value);
        break;
      case '--seed':
        o.seed = Number(value);
        if (!Number.isInteger(o.seed)) throw new UsageError(`--seed must be an integer, got ${value}`);
        break;
      case '--faults':
        o.faults = value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        break;
      case '--out':
        o.out = value;
        break;
      case '--persistence':
        if (value !== 'aof' && value !== 'none') throw new UsageError('--persistence is aof or none');
        o.persistence = value;
        break;
      case '--rate':
        o.rate = Number(value);
        if (!(o.rate > 0)) throw new UsageError('--rate must be positive');
        break;
      case '--base-port':
        o.basePort = Number(value);
        break;
      default:
        throw new UsageError(`unknown option ${flag}`);
    }
  }
  if (o.durationMs < 20_000) throw new UsageError('--duration must be at least 20s (warm-up and drain)');
  return o;
}
