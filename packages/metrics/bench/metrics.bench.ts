/**
 * The in-memory bus with the Prometheus and tracing middleware on versus off,
 * in the same run (no tracing SDK registered: the cost of being ready to trace).
 *
 *   pnpm --filter @qe/metrics bench
 */
import { QEEventBus } from '@qe/core';
import { Registry } from 'prom-client';
import { createPrometheusMiddleware, createTracingMiddleware } from '../src/index.js';

const N = Number(process.env.QE_BENCH_EVENTS ?? 300_000);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);

async function run(withMiddleware: boolean): Promise<number> {
  const bus = new QEEventBus({
    nodeId: 'bench',
    backpressure: { maxQueueSize: 100_000 },
    middleware: withMiddleware
      ? [createPrometheusMiddleware({ registry: new Registry() }), createTracingMiddleware()]
      : [],
  });
  await bus.start();
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  bus.subscribe('agent.*.complete', () => {
    if (++seen === N) done();
  });
  const t0 = performance.now();
  let last: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < N; i++) {
    last = bus.publish({ type: 'agent.task.complete', agentId: 'a', data: { i } });
    if ((i & 1023) === 1023) await last;
  }
  await finished;
  const rate = (N / (performance.now() - t0)) * 1000;
  await bus.stop();
  return rate;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const off: number[] = [];
const on: number[] = [];
for (let k = 0; k < ROUNDS; k++) {
  off.push(await run(false));
  on.push(await run(true));
}
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(
  `# metrics + tracing middleware cost (in-memory, ${N.toLocaleString('en-US')} events, median of ${ROUNDS})`,
);
console.log(`bus alone                          ${fmt(median(off)).padStart(10)} events/s`);
console.log(
  `bus + Prometheus + tracing (no SDK) ${fmt(median(on)).padStart(9)} events/s   ratio ${(median(on) / median(off)).toFixed(2)} (cost ${((1 - median(on) / median(off)) * 100).toFixed(0)}%)`,
);
