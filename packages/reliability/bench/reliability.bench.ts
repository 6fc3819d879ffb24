/**
 * The in-memory bus with every reliability middleware on a subscription versus
 * the bus alone, in the same run (the yardstick is the bare bus measured
 * alternately with the composed one; medians of several rounds).
 *
 *   pnpm --filter @qe/reliability bench
 */
import { type Middleware, QEEventBus } from '@qe/core';
import {
  createBulkhead,
  createCircuitBreaker,
  createIdempotency,
  createRateLimiter,
  createRetryMiddleware,
  createTimeoutMiddleware,
} from '../src/index.js';

const N = Number(process.env.QE_BENCH_EVENTS ?? 100_000);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);

const pieces: Record<string, () => Middleware> = {
  idempotency: () => createIdempotency({ windowMs: 60_000 }),
  'rate limit': () => createRateLimiter({ windowMs: 1000, maxEvents: 100_000_000, key: 'agentId' }),
  'circuit breaker': () =>
    createCircuitBreaker({ failureThreshold: 10, recoveryTimeout: 1000, monitoringPeriod: 10_000 }),
  retry: () => createRetryMiddleware({ retryAttempts: 3, retryDelay: 10, maxRetryDelay: 100 }),
  timeout: () => createTimeoutMiddleware({ timeoutMs: 5000 }),
  bulkhead: () => createBulkhead({ maxConcurrent: 64, maxQueue: 1000 }),
};

async function run(middleware: Middleware[]): Promise<number> {
  const bus = new QEEventBus({ nodeId: 'bench', backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  bus.subscribe(
    'agent.*.complete',
    () => {
      if (++seen === N) done();
    },
    { maxConcurrency: 64, middleware },
  );
  const t0 = performance.now();
  let last: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < N; i++) {
    last = bus.publish({ type: 'agent.task.complete', agentId: `a${i & 63}`, data: { i } });
    if ((i & 1023) === 1023) await last;
  }
  await finished;
  const rate = (N / (performance.now() - t0)) * 1000;
  await bus.stop();
  return rate;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const configs: [string, () => Middleware[]][] = [
  ['bus alone (yardstick)', () => []],
  ...Object.entries(pieces).map(([name, make]): [string, () => Middleware[]] => [
    `+ ${name}`,
    () => [make()],
  ]),
  ['+ all six', () => Object.values(pieces).map((make) => make())],
];
const rates = new Map<string, number[]>(configs.map(([name]) => [name, []]));
// rounds interleave the configurations so drift on a shared machine hits all alike
for (let k = 0; k < ROUNDS; k++) for (const [name, make] of configs) rates.get(name)!.push(await run(make()));
const base = median(rates.get('bus alone (yardstick)')!);
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(
  `# reliability middleware cost (in-memory bus, ${N.toLocaleString('en-US')} events, median of ${ROUNDS})`,
);
for (const [name] of configs) {
  const r = median(rates.get(name)!);
  console.log(`${name.padEnd(24)} ${fmt(r).padStart(10)} events/s   ratio ${(r / base).toFixed(2)}`);
}
