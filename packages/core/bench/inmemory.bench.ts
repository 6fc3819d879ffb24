/**
 * In-memory throughput and latency: QEEventBus (patterns, priorities and
 * metrics on) beside Node's EventEmitter and eventemitter3 doing the same work
 * (a fresh event object per emit), in the same run, with the ratio.
 *
 *   pnpm --filter @qe/core bench            (or: pnpm bench at the root)
 *   QE_BENCH_EVENTS=2000000 pnpm --filter @qe/core bench
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import EventEmitter3 from 'eventemitter3';
import { epochNow, LatencyHistogram, QEEventBus } from '../src/index.js';

const N1 = Number(process.env.QE_BENCH_EVENTS ?? 1_000_000);
const N10 = Math.round(N1 / 5);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);
const TYPE = 'agent.task.complete';

/** A fresh, complete event per emit: what every contender builds (an event needs an id and a time). */
function makeEvent(i: number) {
  return {
    id: randomUUID(),
    type: TYPE,
    agentId: 'agent-1',
    timestamp: Date.now(),
    priority: 2 as const,
    data: { i },
  };
}

/**
 * `measured`: the emitter also does what the bus does for metrics: stamps the
 * publish time and records publish-to-handler latency in a histogram.
 */
async function runEmitter(kind: 'events' | 'eventemitter3', n: number, subs: number, measured = false) {
  type Ev = ReturnType<typeof makeEvent> & { at?: number };
  type Emitter = { on(t: string, f: (e: Ev) => void): unknown; emit(t: string, e: unknown): boolean };
  const ee: Emitter = kind === 'events' ? new EventEmitter().setMaxListeners(100) : new EventEmitter3();
  const h = new LatencyHistogram();
  let seen = 0;
  for (let s = 0; s < subs; s++)
    ee.on(
      TYPE,
      measured
        ? (e: Ev) => {
            h.recordMs(epochNow() - e.at!);
            seen += e.data.i >= 0 ? 1 : 0;
          }
        : (e: Ev) => void (seen += e.data.i >= 0 ? 1 : 0),
    );
  const t0 = performance.now();
  if (measured) for (let i = 0; i < n; i++) ee.emit(TYPE, { ...makeEvent(i), at: epochNow() });
  else for (let i = 0; i < n; i++) ee.emit(TYPE, makeEvent(i));
  const dt = performance.now() - t0;
  if (seen !== n * subs) throw new Error(`emitter saw ${seen}, expected ${n * subs}`);
  return (n / dt) * 1000;
}

async function runBus(n: number, subs: number, generateIds: boolean) {
  const bus = new QEEventBus({ nodeId: 'bench', backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const target = n * subs;
  for (let s = 0; s < subs; s++)
    bus.subscribe('agent.*.complete', (e) => {
      seen += (e.data as { i: number }).i >= 0 ? 1 : 0;
      if (seen === target) done();
    });
  const t0 = performance.now();
  let last: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < n; i++) {
    last = bus.publish(
      generateIds
        ? { type: TYPE, agentId: 'agent-1', data: { i } }
        : (makeEvent(i) as Parameters<typeof bus.publish>[0]),
    );
    if ((i & 1023) === 1023) await last;
  }
  await last;
  await finished;
  const dt = performance.now() - t0;
  const m = bus.getDetailedMetrics();
  await bus.stop();
  return { rate: (n / dt) * 1000, p50: m.latency.p50, p99: m.latency.p99 };
}

/** Open loop: sends scheduled by the clock at `rate`/s; latency from the intended send time. */
async function openLoop(rate: number, seconds: number) {
  const bus = new QEEventBus({ nodeId: 'bench-open', backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  const h = new LatencyHistogram();
  const total = rate * seconds;
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  bus.subscribe('agent.*.complete', (e) => {
    h.recordMs(epochNow() - (e.data as { at: number }).at);
    if (++seen === total) done();
  });
  const start = epochNow();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const step = () => {
      const due = Math.min(total, Math.floor(((epochNow() - start) / 1000) * rate));
      while (sent < due) {
        const at = start + (sent / rate) * 1000;
        void bus.publish({ type: TYPE, agentId: 'agent-1', data: { at } });
        sent++;
      }
      if (sent < total) setImmediate(step);
      else resolve();
    };
    step();
  });
  await finished;
  await bus.stop();
  return h.snapshot();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function main() {
  console.log(`# in-memory benchmark (node ${process.version}, ${ROUNDS} rounds, median)`);
  for (const [subs, n] of [
    [1, N1],
    [10, N10],
  ] as const) {
    const r: Record<string, number[]> = { events: [], ee3: [], ee3m: [], bus: [], busIds: [] };
    const p: { p50: number[]; p99: number[] } = { p50: [], p99: [] };
    for (let k = 0; k < ROUNDS; k++) {
      r.events!.push(await runEmitter('events', n, subs));
      r.ee3!.push(await runEmitter('eventemitter3', n, subs));
      r.ee3m!.push(await runEmitter('eventemitter3', n, subs, true));
      const b = await runBus(n, subs, false);
      r.bus!.push(b.rate);
      p.p50.push(b.p50);
      p.p99.push(b.p99);
      r.busIds!.push((await runBus(n, subs, true)).rate);
    }
    const ee3 = median(r.ee3!);
    const bus = median(r.bus!);
    console.log(`\n## ${subs} subscriber(s), ${fmt(n)} events`);
    console.log(`node:events EventEmitter   ${fmt(median(r.events!)).padStart(12)} events/s`);
    console.log(`eventemitter3              ${fmt(ee3).padStart(12)} events/s`);
    console.log(
      `eventemitter3 + latency    ${fmt(median(r.ee3m!)).padStart(12)} events/s   (stamps publish time, records a histogram, as the bus does)`,
    );
    console.log(
      `QEEventBus (memory)        ${fmt(bus).padStart(12)} events/s   ratio vs eventemitter3 ${(bus / ee3).toFixed(2)}, vs eventemitter3 + latency ${(bus / median(r.ee3m!)).toFixed(2)}   p50 ${median(p.p50).toFixed(3)} ms  p99 ${median(p.p99).toFixed(3)} ms (publish→handler under saturation: queueing delay)`,
    );
    console.log(
      `QEEventBus, bus makes id+ts${fmt(median(r.busIds!)).padStart(12)} events/s   ratio vs eventemitter3 ${(median(r.busIds!) / ee3).toFixed(2)}, vs eventemitter3 + latency ${(median(r.busIds!) / median(r.ee3m!)).toFixed(2)}`,
    );
  }
  const ol = await openLoop(100_000, 3);
  console.log(
    `\n## open loop, 100,000 events/s for 3 s, 1 subscriber (latency from intended send time)\np50 ${ol.p50.toFixed(3)} ms  p99 ${ol.p99.toFixed(3)} ms  p99.9 ${ol.p999.toFixed(3)} ms  max ${ol.max.toFixed(3)} ms  (aim: p99 < 1 ms)`,
  );
}

await main();
