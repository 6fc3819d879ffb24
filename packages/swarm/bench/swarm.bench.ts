/**
 * Dispatch throughput and latency of @qe/swarm beside a plain group
 * subscription doing the same work in the same run: 100 agents (capacity 1)
 * on one bus, a dispatcher on another, 10,000 tasks submitted at once. The
 * baseline: 100 subscriptions in one group on the agents' bus, 10,000 events
 * published at once. The ratio is the cost of orchestration (registry,
 * capability matching, per-task assignment, result back to the submitter).
 *
 *   pnpm --filter @qe/swarm bench                      # memory transport
 *   REDIS_URL=redis://127.0.0.1:6379 pnpm --filter @qe/swarm bench   # Redis Streams too
 *   TASKS=20000 AGENTS=100 pnpm --filter @qe/swarm bench
 */
import { type AgentEvent, MemoryBroker, MemoryTransport, QEEventBus, type Transport } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { SwarmNode, type TaskResult } from '../src/index.js';

const TASKS = Number(process.env.TASKS ?? 10_000);
const AGENTS = Number(process.env.AGENTS ?? 100);
const REDIS_URL = process.env.REDIS_URL;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/** The same small piece of work for both: a few hundred microseconds of hashing-like arithmetic, then yield. */
async function work(n: number): Promise<number> {
  let h = n;
  for (let i = 0; i < 2000; i++) h = (h * 31 + i) | 0;
  await new Promise((r) => setImmediate(r));
  return h;
}

interface Row {
  name: string;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
  p99AssignToStart?: number;
}

async function swarmRun(makeTransport: () => Transport): Promise<Row> {
  const agentsBus = new QEEventBus({ nodeId: 'agents', transport: makeTransport(), freezeEvents: false });
  const dispBus = new QEEventBus({ nodeId: 'dispatcher', transport: makeTransport(), freezeEvents: false });
  await agentsBus.start();
  await dispBus.start();
  const host = new SwarmNode({ bus: agentsBus, heartbeatIntervalMs: 1000 });
  const disp = new SwarmNode({ bus: dispBus, heartbeatIntervalMs: 1000 });
  await host.start();
  await disp.start();
  for (let i = 0; i < AGENTS; i++)
    await host.registerAgent({
      id: `a${i}`,
      type: 'w',
      capabilities: ['work'],
      handler: (c) => work(c.input as number),
    });
  while (disp.listAgents({ status: 'active' }).length < AGENTS) await new Promise((r) => setTimeout(r, 10));
  const t0 = performance.now();
  const submitted = Date.now();
  const results: TaskResult[] = await Promise.all(
    Array.from({ length: TASKS }, (_, i) => disp.submit({ input: i, requires: ['work'] })),
  );
  const seconds = (performance.now() - t0) / 1000;
  const submitToStart = results.map((r) => r.startedAt - submitted);
  const assignToStart = results.map((r) => r.startDelayMs);
  await disp.stop();
  await host.stop();
  await dispBus.stop();
  await agentsBus.stop();
  return {
    name: '@qe/swarm dispatch',
    seconds,
    perSecond: TASKS / seconds,
    p50: pct(submitToStart, 50),
    p99: pct(submitToStart, 99),
    p99AssignToStart: pct(assignToStart, 99),
  };
}

async function groupRun(makeTransport: () => Transport): Promise<Row> {
  const agentsBus = new QEEventBus({ nodeId: 'agents', transport: makeTransport(), freezeEvents: false });
  const pubBus = new QEEventBus({ nodeId: 'publisher', transport: makeTransport(), freezeEvents: false });
  await agentsBus.start();
  await pubBus.start();
  const starts: number[] = [];
  let done = 0;
  let finished!: () => void;
  const all = new Promise<void>((r) => {
    finished = r;
  });
  const subs = [];
  for (let i = 0; i < AGENTS; i++)
    subs.push(
      agentsBus.subscribe(
        'bench.work',
        async (e: AgentEvent) => {
          starts.push(Date.now() - e.timestamp);
          await work(e.data as number);
          if (++done === TASKS) finished();
        },
        { group: 'workers', maxConcurrency: 1 },
      ),
    );
  await Promise.all(subs.map((s) => s.ready));
  const t0 = performance.now();
  const CHUNK = 1000;
  for (let i = 0; i < TASKS; i += CHUNK)
    await pubBus.publishBatch(
      Array.from({ length: Math.min(CHUNK, TASKS - i) }, (_, k) => ({
        type: 'bench.work',
        agentId: 'pub',
        data: i + k,
      })),
    );
  await all;
  const seconds = (performance.now() - t0) / 1000;
  await pubBus.stop();
  await agentsBus.stop();
  return {
    name: 'plain group subscription',
    seconds,
    perSecond: TASKS / seconds,
    p50: pct(starts, 50),
    p99: pct(starts, 99),
  };
}

function print(title: string, rows: Row[]): void {
  console.log(`\n${title}: ${AGENTS} agents, ${TASKS} tasks`);
  console.log(
    `${'run'.padEnd(28)} ${'seconds'.padStart(8)} ${'tasks/s'.padStart(9)} ${'p50 submit→start'.padStart(17)} ${'p99 submit→start'.padStart(17)} ${'p99 assign→start'.padStart(17)}`,
  );
  for (const r of rows)
    console.log(
      `${r.name.padEnd(28)} ${r.seconds.toFixed(2).padStart(8)} ${Math.round(r.perSecond).toString().padStart(9)} ${`${r.p50} ms`.padStart(17)} ${`${r.p99} ms`.padStart(17)} ${(r.p99AssignToStart === undefined ? '-' : `${r.p99AssignToStart} ms`).padStart(17)}`,
    );
  const [s, g] = rows as [Row, Row];
  console.log(
    `ratio (group / swarm): throughput ${(g.perSecond / s.perSecond).toFixed(2)}x, p99 start latency ${(s.p99 / Math.max(1, g.p99)).toFixed(2)}x (swarm / group)`,
  );
}

const broker = new MemoryBroker();
const memory = () => new MemoryTransport({ broker });
// warm-up, not reported
await swarmRun(memory);
await groupRun(memory);
print('memory transport', [await swarmRun(memory), await groupRun(memory)]);

if (REDIS_URL) {
  const prefix = `qe-bench:swarm:${Date.now().toString(36)}`;
  const redis = () =>
    new RedisStreamsTransport({
      url: REDIS_URL,
      keyPrefix: prefix,
      blockMs: 50,
      maxLen: TASKS * 10,
    }) as Transport;
  print('Redis Streams', [await swarmRun(redis), await groupRun(redis)]);
  const r = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
}
process.exit(0);
