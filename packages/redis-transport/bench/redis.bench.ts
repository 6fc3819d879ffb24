/**
 * Redis benchmark: producer and consumer in separate processes.
 *
 *   pnpm --filter @qe/redis-transport bench
 *   QE_BENCH_EVENTS=200000 QE_BENCH_SECONDS=10 pnpm --filter @qe/redis-transport bench
 *
 * 1. Max throughput with bounded in-flight publishes (QE_BENCH_EVENTS events).
 * 2. Open loop at 10,000 events/s (QE_BENCH_SECONDS s): sends scheduled by the
 *    clock, latency from the intended send time to handler entry.
 * Each beside raw ioredis XADD -> XREADGROUP (COUNT 500) -> XACK doing the same
 * work in the same run, with the ratio.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { epochNow, LatencyHistogram, QEEventBus } from '@qe/core';
import { Redis } from 'ioredis';
import { RedisStreamsTransport } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const N = Number(process.env.QE_BENCH_EVENTS ?? 100_000);
const SECONDS = Number(process.env.QE_BENCH_SECONDS ?? 5);
const RATE = Number(process.env.QE_BENCH_RATE ?? 10_000);
const INFLIGHT = 1000;
const STREAM_FIELD = 'e';
const payload = (i: number, at: number) => ({
  i,
  at,
  task: 'summarise',
  tokens: 1234,
  tags: ['bench', 'qe'],
  note: 'x'.repeat(120),
});

type Role = 'producer' | 'consumer';
type Kind = 'raw' | 'bus' | 'bus-batch';
type Mode = 'max' | 'open';

/** CPU time (user + system) this process has used, ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function send(msg: unknown) {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

// ------------------------------------------------------------------ children

async function rawConsumer(prefix: string, total: number) {
  const r = new Redis(URL_);
  const stream = `${prefix}:raw`;
  await r.xgroup('CREATE', stream, 'g', '$', 'MKSTREAM').catch(() => {});
  const h = new LatencyHistogram();
  let n = 0;
  const cpu0 = cpuMs();
  send({ ready: true });
  while (n < total) {
    const res = (await r.xreadgroup(
      'GROUP',
      'g',
      'c1',
      'COUNT',
      500,
      'BLOCK',
      1000,
      'STREAMS',
      stream,
      '>',
    )) as [string, [string, string[]][]][] | null;
    if (!res) continue;
    const ids: string[] = [];
    for (const [, entries] of res)
      for (const [id, fields] of entries) {
        const data = JSON.parse(fields[1]!) as { at: number };
        h.recordMs(epochNow() - data.at);
        ids.push(id);
        n++;
      }
    await r.xack(stream, 'g', ...ids);
  }
  send({
    done: true,
    lastAt: epochNow(),
    cpuMs: cpuMs() - cpu0,
    hist: h.snapshot(),
    rss: process.memoryUsage.rss(),
  });
  r.disconnect();
}

async function busConsumer(prefix: string, total: number) {
  const bus = new QEEventBus({
    nodeId: 'bench-consumer',
    transport: new RedisStreamsTransport({ url: URL_, keyPrefix: prefix }),
  });
  await bus.start();
  const h = new LatencyHistogram();
  let n = 0;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  await bus.subscribe(
    'bench.*',
    (e) => {
      h.recordMs(epochNow() - (e.data as { at: number }).at);
      if (++n === total) finish();
    },
    { group: 'g', maxConcurrency: 64 },
  ).ready;
  const cpu0 = cpuMs();
  send({ ready: true });
  await done;
  send({
    done: true,
    lastAt: epochNow(),
    cpuMs: cpuMs() - cpu0,
    hist: h.snapshot(),
    rss: process.memoryUsage.rss(),
  });
  await bus.stop();
}

async function produce(kind: Kind, mode: Mode, prefix: string, total: number) {
  let publish: (i: number, at: number) => Promise<unknown>;
  let close: () => Promise<unknown>;
  if (kind === 'raw') {
    const r = new Redis(URL_);
    const stream = `${prefix}:raw`;
    publish = (i, at) => r.xadd(stream, '*', STREAM_FIELD, JSON.stringify(payload(i, at)));
    close = async () => r.disconnect();
  } else {
    const bus = new QEEventBus({
      nodeId: 'bench-producer',
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: prefix }),
    });
    await bus.start();
    const event = (i: number, at: number) => ({
      type: 'bench.work',
      agentId: `agent-${i % 16}`,
      data: payload(i, at),
    });
    if (kind === 'bus-batch' && mode === 'max') {
      // publishBatch, 100 events a call: one promise and one validation pass per batch
      const B = 100;
      let batch: ReturnType<typeof event>[] = [];
      let waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
      publish = (i, at) => {
        batch.push(event(i, at));
        const p = new Promise<void>((resolve, reject) => waiting.push({ resolve, reject }));
        if (batch.length === B || i === total - 1) {
          const [b, w] = [batch, waiting];
          batch = [];
          waiting = [];
          bus.publishBatch(b).then(
            () => {
              for (const x of w) x.resolve();
            },
            (e) => {
              for (const x of w) x.reject(e);
            },
          );
        }
        return p;
      };
    } else publish = (i, at) => bus.publish(event(i, at));
    close = () => bus.stop();
  }
  const cpu0 = cpuMs();
  const started = epochNow();
  if (mode === 'max') {
    let inflight = 0;
    let waiter: (() => void) | null = null;
    for (let i = 0; i < total; i++) {
      while (inflight >= INFLIGHT) await new Promise<void>((r) => (waiter = r));
      inflight++;
      void publish(i, epochNow()).finally(() => {
        inflight--;
        const w = waiter;
        waiter = null;
        w?.();
      });
    }
    while (inflight > 0) await new Promise<void>((r) => (waiter = r));
  } else {
    let sent = 0;
    const pending: Promise<unknown>[] = [];
    await new Promise<void>((resolve) => {
      const step = () => {
        const due = Math.min(total, Math.floor(((epochNow() - started) / 1000) * RATE));
        while (sent < due) {
          pending.push(publish(sent, started + (sent / RATE) * 1000));
          sent++;
        }
        if (pending.length > 5000) void Promise.all(pending.splice(0));
        if (sent < total) setTimeout(step, 1);
        else resolve();
      };
      step();
    });
    await Promise.all(pending);
  }
  send({
    published: true,
    startedAt: started,
    ms: epochNow() - started,
    cpuMs: cpuMs() - cpu0,
    rss: process.memoryUsage.rss(),
  });
  await close();
}

// ------------------------------------------------------------------ parent

function child(
  role: Role,
  kind: Kind,
  mode: Mode,
  prefix: string,
  total: number,
): { proc: ChildProcess; next: () => Promise<Record<string, unknown>> } {
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.QE_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/qeprof'] : []),
      '--conditions=@qe/source',
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      role,
      kind,
      mode,
      prefix,
      String(total),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const queue: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      const w = waiters.shift();
      if (w) w(msg);
      else queue.push(msg);
    }
  });
  return {
    proc,
    next: () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise((r) => waiters.push(r))),
  };
}

async function runPair(kind: Kind, mode: Mode, total: number) {
  const prefix = `qe-bench:${kind}:${mode}:${Date.now().toString(36)}`;
  const consumer = child('consumer', kind, mode, prefix, total);
  await consumer.next(); // ready
  const producer = child('producer', kind, mode, prefix, total);
  const pub = await producer.next();
  const done = await consumer.next();
  // from the first publish to the last event handled: process start-up is not the pipeline's cost
  const elapsed = Number(done.lastAt) - Number(pub.startedAt);
  const r = new Redis(URL_);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
  return {
    eps: (total / elapsed) * 1000,
    hist: done.hist as Record<string, number>,
    rss: Math.max(Number(done.rss), Number(pub.rss)),
  };
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number) => `${x.toFixed(2)} ms`;

async function main() {
  console.log(
    `# redis benchmark (node ${process.version}; producer and consumer in separate processes; ${URL_})`,
  );
  const raw = await runPair('raw', 'max', N);
  const bus = await runPair('bus', 'max', N);
  const batch = await runPair('bus-batch', 'max', N);
  console.log(`\n## max throughput, ${fmt(N)} events, ${INFLIGHT} events in flight`);
  console.log(`raw ioredis XADD/XREADGROUP/XACK      ${fmt(raw.eps).padStart(9)} events/s`);
  console.log(
    `QEEventBus publish() on RedisStreams  ${fmt(bus.eps).padStart(9)} events/s   ratio ${(bus.eps / raw.eps).toFixed(2)}`,
  );
  console.log(
    `QEEventBus publishBatch(100)          ${fmt(batch.eps).padStart(9)} events/s   ratio ${(batch.eps / raw.eps).toFixed(2)}`,
  );
  const total = RATE * SECONDS;
  const rawO = await runPair('raw', 'open', total);
  const busO = await runPair('bus', 'open', total);
  console.log(
    `\n## open loop ${fmt(RATE)} events/s for ${SECONDS} s (latency from intended send time to handler)`,
  );
  for (const [name, r] of [
    ['raw ioredis', rawO],
    ['QEEventBus ', busO],
  ] as const)
    console.log(
      `${name}  p50 ${ms(r.hist.p50!)}  p99 ${ms(r.hist.p99!)}  p99.9 ${ms(r.hist.p999!)}  max ${ms(r.hist.max!)}  rss ${(r.rss / 2 ** 20).toFixed(0)} MB`,
    );
  console.log(`p99 ratio (bus / raw) ${(busO.hist.p99! / rawO.hist.p99!).toFixed(2)}`);
}

const [role, kind, mode, prefix, total] = process.argv.slice(2);
if (role === 'consumer')
  await (kind === 'raw' ? rawConsumer(prefix!, Number(total)) : busConsumer(prefix!, Number(total)));
else if (role === 'producer') await produce(kind as Kind, mode as Mode, prefix!, Number(total));
else await main();
