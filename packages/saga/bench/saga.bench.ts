/**
 * `pnpm --filter @qe/saga bench`: a 4-step saga through `SagaOrchestrator`
 * and `SagaWorker` beside the same 4 steps as plain request/reply over the
 * bus (publish a request to a worker group, wait for the reply event, next
 * step), in the same run, on the memory transport and on Redis Streams.
 *
 * Prints sagas (or request/reply flows) per second, step latency (request
 * sent to reply handled) and the ratio. Env: QE_BENCH_SAGAS (per transport,
 * default 2000 in memory, 500 on Redis), QE_BENCH_CONCURRENCY (sagas in
 * flight, default 32), QE_BENCH_ROUNDS (default 2; medians), REDIS_URL,
 * QE_BENCH_TRANSPORTS (`memory,redis`).
 */
import { type AgentEvent, LatencyHistogram, MemoryBroker, MemoryTransport, QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { SagaOrchestrator, SagaWorker } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CONC = Number(process.env.QE_BENCH_CONCURRENCY ?? 32);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 2);
const TRANSPORTS = (process.env.QE_BENCH_TRANSPORTS ?? 'memory,redis').split(',');
const STEPS = ['s1', 's2', 's3', 's4'];

interface Result {
  perSec: number;
  p50: number;
  p99: number;
}

type Env = { buses: [QEEventBus, QEEventBus]; redis: Redis | null; cleanup(): Promise<void> };

async function env(kind: string, tag: string): Promise<Env> {
  const prefix = `qe-bench:saga:${tag}:${Date.now().toString(36)}`;
  if (kind === 'memory') {
    const broker = new MemoryBroker();
    const mk = (id: string) => new QEEventBus({ nodeId: id, transport: new MemoryTransport({ broker }) });
    const buses: [QEEventBus, QEEventBus] = [mk(`${tag}-a`), mk(`${tag}-b`)];
    await Promise.all(buses.map((b) => b.start()));
    return { buses, redis: null, cleanup: async () => void (await Promise.all(buses.map((b) => b.stop()))) };
  }
  const mk = (id: string) =>
    new QEEventBus({
      nodeId: id,
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${prefix}:bus`, blockMs: 100 }),
    });
  const buses: [QEEventBus, QEEventBus] = [mk(`${tag}-a`), mk(`${tag}-b`)];
  await Promise.all(buses.map((b) => b.start()));
  const redis = new Redis(URL_);
  return {
    buses,
    redis,
    cleanup: async () => {
      await Promise.all(buses.map((b) => b.stop()));
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length) await redis.del(...keys);
      } while (cursor !== '0');
      redis.disconnect();
    },
  };
}

/** Runs `n` flows with `CONC` in flight; returns flows/s. */
async function drive(n: number, flow: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(CONC, n) }, async () => {
      while (next < n) await flow(next++);
    }),
  );
  return (n / (performance.now() - t0)) * 1000;
}

async function sagaRun(kind: string, n: number, round: number): Promise<Result> {
  const e = await env(kind, `saga${round}`);
  const [ob, wb] = e.buses;
  const keyPrefix = `qe-bench:saga:st${round}:${Date.now().toString(36)}`;
  const workers = STEPS.map(
    (s) =>
      new SagaWorker({
        bus: wb,
        name: `w_${s}`,
        concurrency: CONC,
        handler: () => ({ [s]: true }),
        ...(e.redis ? { redis: e.redis, keyPrefix } : {}),
      }),
  );
  await Promise.all(workers.map((w) => w.start()));
  const o = new SagaOrchestrator({ bus: ob, ...(e.redis ? { redis: e.redis, keyPrefix } : {}) });
  o.define({ name: 'bench', steps: STEPS.map((s) => ({ name: s, worker: `w_${s}` })) });
  await o.start();
  // completion signal: the terminal status event, seen by the orchestrator's watch
  const waiting = new Map<string, () => void>();
  o.watch('*', (st) => {
    if (st.status === 'completed') waiting.get(st.transactionId)?.();
  });
  const flow = async (i: number) => {
    const id = `b${round}-${i}`;
    const done = new Promise<void>((res) => waiting.set(id, res));
    await o.begin('bench', { i }, { transactionId: id });
    await done;
    waiting.delete(id);
  };
  await drive(Math.min(200, n), (i) => flow(i + 1_000_000)); // warm-up
  o.resetStats();
  const perSec = await drive(n, flow);
  const lat = o.stats().stepLatency;
  await o.stop();
  await Promise.all(workers.map((w) => w.stop()));
  await e.cleanup();
  return { perSec, p50: lat.p50, p99: lat.p99 };
}

async function requestReplyRun(kind: string, n: number, round: number): Promise<Result> {
  const e = await env(kind, `rr${round}`);
  const [rb, wb] = e.buses;
  for (const s of STEPS)
    await wb.subscribe(
      `rr.req.${s}`,
      async (ev: AgentEvent) => {
        const d = ev.data as { ctx: Record<string, unknown> };
        await wb.publish({
          type: `rr.res.${s}`,
          agentId: wb.nodeId,
          data: { result: { [s]: true }, ctx: d.ctx },
          metadata: { correlationId: ev.metadata!.correlationId!, causationId: ev.id },
        });
      },
      { group: `rr-${s}`, maxConcurrency: CONC },
    ).ready;
  const pending = new Map<string, (e: AgentEvent) => void>();
  const hist = new LatencyHistogram();
  await rb.subscribe(
    'rr.res.*',
    (ev: AgentEvent) => {
      pending.get(ev.metadata!.causationId!)?.(ev);
    },
    { maxConcurrency: 64 },
  ).ready;
  let seq = 0;
  const flow = async (i: number) => {
    let ctx: Record<string, unknown> = { i };
    for (const s of STEPS) {
      const id = `rr${round}-${i}-${s}-${seq++}`;
      const t0 = performance.now();
      const reply = new Promise<AgentEvent>((res) => pending.set(id, res));
      await rb.publish({
        id,
        type: `rr.req.${s}`,
        agentId: rb.nodeId,
        data: { ctx },
        metadata: { correlationId: `c${i}` },
      });
      const ev = await reply;
      pending.delete(id);
      hist.recordMs(performance.now() - t0);
      ctx = { ...ctx, ...(ev.data as { result: Record<string, unknown> }).result };
    }
  };
  await drive(Math.min(200, n), (i) => flow(i + 1_000_000));
  hist.reset();
  const perSec = await drive(n, flow);
  await e.cleanup();
  return { perSec, p50: hist.quantileMs(0.5), p99: hist.quantileMs(0.99) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (x: number, d = 0) =>
  x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

const rows: string[] = [];
for (const kind of TRANSPORTS) {
  const n = Number(process.env.QE_BENCH_SAGAS ?? (kind === 'memory' ? 2000 : 500));
  const sagas: Result[] = [];
  const rr: Result[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // alternate which goes first, so neither always runs on a colder or warmer machine
    if (round % 2 === 0) {
      sagas.push(await sagaRun(kind, n, round));
      rr.push(await requestReplyRun(kind, n, round));
    } else {
      rr.push(await requestReplyRun(kind, n, round));
      sagas.push(await sagaRun(kind, n, round));
    }
    process.stderr.write(`${kind} round ${round + 1}/${ROUNDS} done\n`);
  }
  const s = {
    perSec: median(sagas.map((x) => x.perSec)),
    p50: median(sagas.map((x) => x.p50)),
    p99: median(sagas.map((x) => x.p99)),
  };
  const q = {
    perSec: median(rr.map((x) => x.perSec)),
    p50: median(rr.map((x) => x.p50)),
    p99: median(rr.map((x) => x.p99)),
  };
  rows.push(
    `| ${kind} | ${f(s.perSec)} | ${f(q.perSec)} | ${f(s.perSec / q.perSec, 2)} | ${f(s.p50, 2)} / ${f(s.p99, 2)} | ${f(q.p50, 2)} / ${f(q.p99, 2)} | ${f(s.p50 / q.p50, 2)} |`,
  );
}
console.log(
  `\n4-step saga vs the same 4 steps as plain request/reply; ${CONC} in flight, medians of ${ROUNDS} rounds\n`,
);
console.log(
  '| transport | sagas/s | request/reply flows/s | ratio | saga step p50 / p99 ms | request/reply step p50 / p99 ms | p50 ratio |',
);
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) console.log(r);
