/**
 * `pnpm --filter @qe/contracts bench`:
 *
 * 1. The bus with and without contract validation, in the same run: ~1 KB
 *    `order.created` events (nested object, an array of 8 items, formats),
 *    published in batches and handled by one subscriber; with validation both
 *    on publish (strict) and on consume. Memory transport and Redis Streams;
 *    rounds alternate (off, on, off, on, ...) and medians are printed with the
 *    throughput cost.
 * 2. Spec 003's `< 50 ms` cross-project latency on Redis: project A sends to
 *    project B through `CrossProjectMessenger` (credential check, policy,
 *    contract check, shared rate limit, publish, audit append) while B receives
 *    on its own bus; time from `send()` to B's handler, p50/p95/p99/max.
 *
 * Env: QE_BENCH_EVENTS (per round, default 50,000 memory / 20,000 Redis),
 * QE_BENCH_ROUNDS (default 5 memory / 3 Redis), QE_BENCH_WARMUP (rounds per path
 * before measuring, default 4 memory / 1 Redis), QE_BENCH_MESSAGES (cross-project, default 2,000),
 * QE_BENCH_CONCURRENCY (cross-project sends in flight, default 4), REDIS_URL,
 * QE_BENCH_TRANSPORTS (`memory,redis`).
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  type EventInput,
  LatencyHistogram,
  MemoryBroker,
  MemoryTransport,
  QEEventBus,
  type Transport,
} from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import {
  ContractRegistry,
  CrossProjectMessenger,
  contractValidation,
  generateCredential,
} from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROUNDS = process.env.QE_BENCH_ROUNDS === undefined ? undefined : Number(process.env.QE_BENCH_ROUNDS);
const TRANSPORTS = (process.env.QE_BENCH_TRANSPORTS ?? 'memory,redis').split(',');
const MESSAGES = Number(process.env.QE_BENCH_MESSAGES ?? 2000);
const CONC = Number(process.env.QE_BENCH_CONCURRENCY ?? 4);
const BATCH = 100;

const ORDER_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['orderId', 'customer', 'items', 'total', 'currency', 'createdAt'],
  properties: {
    orderId: { type: 'string', minLength: 1 },
    customer: {
      type: 'object',
      required: ['id', 'email'],
      properties: {
        id: { type: 'string' },
        email: { type: 'string', format: 'email' },
        name: { type: 'string' },
        tier: { enum: ['bronze', 'silver', 'gold'] },
      },
    },
    items: {
      type: 'array',
      minItems: 1,
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['sku', 'qty', 'price'],
        properties: {
          sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{4}$' },
          name: { type: 'string' },
          qty: { type: 'integer', minimum: 1 },
          price: { type: 'number', minimum: 0 },
        },
      },
    },
    total: { type: 'number', minimum: 0 },
    currency: { type: 'string', minLength: 3, maxLength: 3 },
    createdAt: { type: 'string', format: 'date-time' },
    notes: { type: 'string' },
  },
};

function order(i: number) {
  const items = Array.from({ length: 8 }, (_, k) => ({
    sku: `ABC-${String(1000 + k)}`,
    name: `Item number ${k} of the catalogue`,
    qty: 1 + (k % 3),
    price: 9.99 + k,
  }));
  return {
    orderId: `order-${i}`,
    customer: {
      id: `cust-${i % 1000}`,
      email: `customer${i % 1000}@example.com`,
      name: 'Ada Lovelace',
      tier: 'gold',
    },
    items,
    total: items.reduce((s, x) => s + x.qty * x.price, 0),
    currency: 'EUR',
    createdAt: new Date(1_700_000_000_000 + i).toISOString(),
    notes: 'Leave the parcel with the neighbour if nobody answers.',
  };
}

const eventBytes = JSON.stringify({ type: 'order.created', agentId: 'bench', data: order(1) }).length;

async function cleanupPrefix(redis: Redis, prefix: string) {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
}

// one registry for the run: validators are compiled once per contract version and stay hot, as in a service
const registry = new ContractRegistry();
await registry.register({ type: 'order.created', version: '1.0.0', owner: 'bench', schema: ORDER_SCHEMA });
const validation = contractValidation({ registry });
const fastRegistry = new ContractRegistry({ formats: 'fast' });
await fastRegistry.register({
  type: 'order.created',
  version: '1.0.0',
  owner: 'bench',
  schema: ORDER_SCHEMA,
});
const fastValidation = contractValidation({ registry: fastRegistry });

async function throughput(
  kind: string,
  validate: false | 'full' | 'fast',
  n: number,
  round: number,
): Promise<Run> {
  const prefix = `qe-bench:contracts:${round}${validate || 'n'}:${Date.now().toString(36)}`;
  const transport: Transport =
    kind === 'memory'
      ? new MemoryTransport({ broker: new MemoryBroker() })
      : new RedisStreamsTransport({ url: URL_, keyPrefix: `${prefix}:bus`, blockMs: 100 });
  const bus = new QEEventBus({
    nodeId: 'bench',
    transport,
    middleware: validate === 'full' ? [validation] : validate === 'fast' ? [fastValidation] : [],
    backpressure: { maxQueueSize: 50_000 },
  });
  await bus.start();
  let handled = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const sub = bus.subscribe('order.created', () => {
    if (++handled === n) done();
  });
  await sub.ready;
  const batches: EventInput[][] = [];
  for (let i = 0; i < n; i += BATCH)
    batches.push(
      Array.from({ length: Math.min(BATCH, n - i) }, (_, k) => ({
        type: 'order.created',
        agentId: 'bench',
        data: order(i + k),
      })),
    );
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const b of batches) await bus.publishBatch(b);
  await all;
  const perSec = (n / (performance.now() - t0)) * 1000;
  const cpu = process.cpuUsage(c0);
  const cpuUs = (cpu.user + cpu.system) / n;
  await bus.stop();
  if (kind === 'redis') {
    const r = new Redis(URL_);
    await cleanupPrefix(r, prefix);
    r.disconnect();
  }
  return { perSec, cpuUs };
}

interface Run {
  perSec: number;
  /** This process's CPU time per event (µs): steadier than wall time on a shared machine. */
  cpuUs: number;
}

async function crossProjectLatency(separate: boolean): Promise<LatencyHistogram> {
  const prefix = `qe-bench:contracts:xp:${Date.now().toString(36)}`;
  const redis = new Redis(URL_);
  const mkBus = (id: string) =>
    new QEEventBus({
      nodeId: id,
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${prefix}:bus`, blockMs: 100 }),
    });
  const busA = mkBus('shop');
  const busB = mkBus('billing');
  await Promise.all([busA.start(), busB.start()]);
  const contracts = new ContractRegistry({ redis, keyPrefix: `${prefix}:contracts` });
  await contracts.start();
  await contracts.register({ type: 'order.created', version: '1.0.0', owner: 'shop', schema: ORDER_SCHEMA });
  const a = new CrossProjectMessenger({ bus: busA, redis, keyPrefix: `${prefix}:xp`, contracts });
  const b = new CrossProjectMessenger({ bus: busB, redis, keyPrefix: `${prefix}:xp`, contracts });
  await Promise.all([a.start(), b.start()]);
  const shopCred = generateCredential();
  const billingCred = generateCredential();
  await a.registerProject({
    projectId: 'shop',
    namespace: 'shop',
    allowedEventTypes: ['order.*'],
    allowedTargets: ['billing'],
    credential: shopCred,
    rateLimit: { windowMs: 1000, maxMessages: 1_000_000 },
  });
  await a.registerProject({
    projectId: 'billing',
    namespace: 'billing',
    allowedEventTypes: [],
    allowedTargets: [],
    acceptedEventTypes: ['order.created'],
    credential: billingCred,
  });
  const sentAt = new Map<string, number>();
  const hist = new LatencyHistogram();
  let received = 0;
  let allDone!: () => void;
  const all = new Promise<void>((r) => (allDone = r));
  const total = MESSAGES + 200;
  const arrived = (orderId: string, at: number) => {
    const t = sentAt.get(orderId);
    if (t !== undefined && received >= 200) hist.recordMs(at - t); // the first 200 warm up
    if (++received === total) allDone();
  };
  let child: ChildProcess | undefined;
  if (separate) {
    // project B in its own process; times are epoch ms from each process's clock (the same machine)
    child = spawn(
      process.execPath,
      [
        '--conditions=@qe/source',
        '--import',
        'tsx',
        fileURLToPath(new URL('./receiver.ts', import.meta.url)),
        URL_,
        prefix,
        billingCred,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let buf = '';
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ready') ready();
        else if (line.startsWith('r ')) {
          const [, id, at] = line.split(' ');
          arrived(id!, Number(at));
        }
      }
    });
    await isReady;
  } else
    await b.receive('billing', billingCred, (m) =>
      arrived((m.data as { orderId: string }).orderId, performance.timeOrigin + performance.now()),
    );
  let next = 0;
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      while (next < total) {
        const i = next++;
        const data = order(i);
        sentAt.set(data.orderId, performance.timeOrigin + performance.now());
        await a.send({ from: 'shop', to: 'billing', type: 'order.created', data, credential: shopCred });
      }
    }),
  );
  await all;
  if (child) {
    const exited = new Promise((r) => child!.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await Promise.all([a.close(), b.close(), contracts.close()]);
  await Promise.all([busA.stop(), busB.stop()]);
  await cleanupPrefix(redis, prefix);
  redis.disconnect();
  return hist;
}

/** ajv on its own: one `registry.check` of each event, no bus (the floor under any validating path). */
function checkAlone(reg: ContractRegistry, n: number): number {
  const events = Array.from({ length: n }, (_, i) => ({ type: 'order.created', data: order(i) }));
  const c0 = process.cpuUsage();
  let bad = 0;
  for (const e of events) if (reg.check(e).issues.length) bad++;
  const cpu = process.cpuUsage(c0);
  if (bad) throw new Error(`${bad} bench events fail their contract`);
  return (cpu.user + cpu.system) / n;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

console.log(
  `@qe/contracts bench: events of ${eventBytes} bytes (JSON), medians of alternating rounds after warm-up\n`,
);
for (const kind of TRANSPORTS) {
  const n = Number(process.env.QE_BENCH_EVENTS ?? (kind === 'memory' ? 50_000 : 20_000));
  const off: Run[] = [];
  const on: Run[] = [];
  const onFast: Run[] = [];
  // warm up the JIT on every path until steady (the first rounds of a path cost 2-4x)
  const warmups = Number(process.env.QE_BENCH_WARMUP ?? (kind === 'memory' ? 4 : 1));
  for (let w = 0; w < warmups; w++) {
    await throughput(kind, false, n, -1 - w);
    await throughput(kind, 'full', n, -1 - w);
    await throughput(kind, 'fast', n, -1 - w);
  }
  const rounds = ROUNDS ?? (kind === 'memory' ? 5 : 3);
  const alone: number[] = [];
  for (let r = 0; r < rounds; r++) {
    off.push(await throughput(kind, false, n, r));
    on.push(await throughput(kind, 'full', n, r));
    onFast.push(await throughput(kind, 'fast', n, r));
    alone.push(checkAlone(registry, n));
  }
  const a = median(off.map((x) => x.perSec));
  const b = median(on.map((x) => x.perSec));
  const ca = median(off.map((x) => x.cpuUs));
  const cb = median(on.map((x) => x.cpuUs));
  const f = median(onFast.map((x) => x.perSec));
  const cf = median(onFast.map((x) => x.cpuUs));
  console.log(
    `${kind}: ${fmt(n)} events per round, ${rounds} rounds, publishBatch(${BATCH}) -> 1 subscriber`,
  );
  console.log(`  without validation   ${fmt(a).padStart(9)} events/s   ${ca.toFixed(2)} µs CPU per event`);
  console.log(
    `  with validation      ${fmt(b).padStart(9)} events/s   ${cb.toFixed(2)} µs CPU per event   (publish strict + consume)`,
  );
  console.log(
    `    cost               ${(((a - b) / a) * 100).toFixed(1)} % throughput, ${(((cb - ca) / ca) * 100).toFixed(1)} % CPU per event (aim: under 15 %)`,
  );
  const ajv = median(alone);
  console.log(
    `    of which           ${ajv.toFixed(2)} µs is one schema check on its own (registry.check, no bus) = ${((ajv / ca) * 100).toFixed(0)} % of the bus's own cost per event${kind === 'memory' ? '; the consume side reuses the publish check (same object, same process)' : ''}`,
  );
  console.log(`  formats: 'fast'      ${fmt(f).padStart(9)} events/s   ${cf.toFixed(2)} µs CPU per event`);
  console.log(
    `    cost               ${(((a - f) / a) * 100).toFixed(1)} % throughput, ${(((cf - ca) / ca) * 100).toFixed(1)} % CPU per event`,
  );
  console.log('');
}
if (TRANSPORTS.includes('redis')) {
  for (const separate of [false, true]) {
    const h = (await crossProjectLatency(separate)).snapshot();
    console.log(
      `cross-project on Redis, ${separate ? 'B in another process' : 'A and B in one process'} (send() to B's handler, ${fmt(MESSAGES)} messages, ${CONC} in flight):`,
    );
    console.log(
      `  p50 ${h.p50.toFixed(2)} ms  p95 ${h.p95.toFixed(2)} ms  p99 ${h.p99.toFixed(2)} ms  max ${h.max.toFixed(2)} ms  (spec 003: < 50 ms)`,
    );
  }
}
