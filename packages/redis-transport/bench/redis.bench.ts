/**
 * Redis benchmark: producer and consumer in separate processes.
 *
 *   pnpm --filter @qe/redis-transport bench
 *   QE_BENCH_ROUNDS=5 QE_BENCH_EVENTS=200000 QE_BENCH_SECONDS=10 pnpm --filter @qe/redis-transport bench
 *
 * 1. Max throughput with bounded in-flight publishes (QE_BENCH_EVENTS events),
 *    from the first publish to the last event handled.
 * 2. Open loop at QE_BENCH_RATE (10,000) events/s for QE_BENCH_SECONDS (5) s
 *    after QE_BENCH_WARMUP (1) s of unmeasured warm-up: sends scheduled by the
 *    clock, latency from the intended send time to handler entry.
 * Each beside raw ioredis XADD -> XREADGROUP (COUNT 500) -> XACK moving the same
 * events (the same JSON: see `rawEvent`), alternating in every round (QE_BENCH_ROUNDS, default 3); the summary is
 * the median of the rounds, with the ratio to raw and the CPU time each
 * process (and a local redis-server) spent per event.
 * 3. Cluster (mode `cluster`): the bus's max throughput (QE_BENCH_CLUSTER_EVENTS,
 *    default 30,000 events, 1,000 in flight, 6 partitions) on local Clusters the
 *    run starts and stops itself (1 master + 1 replica on ports 7456-7457, 3
 *    masters + 3 replicas on 7450-7455), each without and with replicated acks
 *    (`replicas: { wait: 1 }`), beside the single node moving the same events.
 *    QE_BENCH_MODES=cluster runs these rows only; QE_BENCH_MODES=max,open leaves them out.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { epochNow, LatencyHistogram, QEEventBus } from '@qe/core';
import { Redis } from 'ioredis';
import { RedisPubSubTransport, RedisStreamsTransport } from '../src/index.js';
import { type LocalCluster, startCluster } from '../test/cluster.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const N = Number(process.env.QE_BENCH_EVENTS ?? 200_000);
const SECONDS = Number(process.env.QE_BENCH_SECONDS ?? 5);
const WARMUP = Number(process.env.QE_BENCH_WARMUP ?? 1);
const RATE = Number(process.env.QE_BENCH_RATE ?? 10_000);
const ROUNDS = Math.max(1, Number(process.env.QE_BENCH_ROUNDS ?? 3));
/** Which parts run: `max`, `open` or both (the default), for example QE_BENCH_MODES=open. */
const MODES = new Set((process.env.QE_BENCH_MODES ?? 'max,open,cluster').split(','));
const CLUSTER_N = Number(process.env.QE_BENCH_CLUSTER_EVENTS ?? 30_000);

/**
 * Where a bus child connects (env QE_BENCH_TARGET, JSON): the single node at
 * REDIS_URL, or a Cluster's seed nodes, with replicated acks or not.
 */
interface Target {
  cluster?: { host: string; port: number }[];
  wait?: number;
}
const TARGET: Target = JSON.parse(process.env.QE_BENCH_TARGET ?? '{}') as Target;
const streamsOptions = () =>
  TARGET.cluster
    ? {
        cluster: { nodes: TARGET.cluster },
        partitions: 6,
        ...(TARGET.wait ? { replicas: { wait: TARGET.wait, timeoutMs: 1000 } } : {}),
      }
    : { url: URL_ };
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

/**
 * What the raw baseline moves: the same event the bus moves (id, type, agentId,
 * timestamp, priority and the payload), as JSON, so both sides carry the same
 * bytes; the bus's own extras (frame header, publish time field) are not copied.
 */
const rawEvent = (i: number, at: number) => ({
  id: randomUUID(),
  type: 'bench.work',
  agentId: `agent-${i % 16}`,
  timestamp: Date.now(),
  priority: 2,
  data: payload(i, at),
});

type Role = 'producer' | 'consumer';
type Kind = 'raw' | 'bus' | 'bus-batch' | 'raw-ps' | 'bus-ps';
/** Pub/sub kinds are at-most-once: their consumer gives up waiting this long after it is ready. */
const PUBSUB_DEADLINE_MS = (WARMUP + SECONDS + 8) * 1000;
type Mode = 'max' | 'open';
type MaxKind = 'raw' | 'bus' | 'bus-batch';
/** What the open loop runs: Streams (at-least-once) and pub/sub (at-most-once), raw and bus. */
const OPEN_KINDS = ['raw', 'bus', 'raw-ps', 'bus-ps'] as const;
type OpenKind = (typeof OPEN_KINDS)[number];

/** CPU time (user + system) this process has used, ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** GC pause time of this process so far, ms (major and minor). */
const gc = { ms: 0, major: 0 };
if (process.argv[2] === 'consumer' || process.argv[2] === 'producer')
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.ms += e.duration;
      if (process.env.QE_BENCH_GC_LOG)
        process.stderr.write(
          `gc ${process.argv[2]} ${process.argv[3]} kind=${(e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind} ${e.duration.toFixed(2)} ms at ${e.startTime.toFixed(0)}\n`,
        );
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === 4) gc.major++; // NODE_PERFORMANCE_GC_MAJOR
    }
  }).observe({ entryTypes: ['gc'] });

function send(msg: unknown) {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

// ------------------------------------------------------------------ children

/** Latency of events from `warm` on (the warm-up's are not measured), and the end. */
class Recorder {
  readonly h = new LatencyHistogram();
  n = 0;
  private readonly cpu0 = cpuMs();
  private readonly gc0 = gc.ms;
  constructor(
    readonly total: number,
    readonly warm: number,
  ) {}
  record(data: { i: number; at: number }): boolean {
    if (data.i >= this.warm) this.h.recordMs(epochNow() - data.at);
    return ++this.n === this.total;
  }
  report() {
    send({
      done: true,
      lastAt: epochNow(),
      cpuMs: cpuMs() - this.cpu0,
      gcMs: gc.ms - this.gc0,
      hist: this.h.snapshot(),
      received: this.n,
      rss: process.memoryUsage.rss(),
    });
  }
}

async function rawConsumer(prefix: string, total: number, warm: number) {
  const r = new Redis(URL_);
  const stream = `${prefix}:raw`;
  await r.xgroup('CREATE', stream, 'g', '$', 'MKSTREAM').catch(() => {});
  const rec = new Recorder(total, warm);
  send({ ready: true });
  while (rec.n < total) {
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
        rec.record((JSON.parse(fields[1]!) as ReturnType<typeof rawEvent>).data);
        ids.push(id);
      }
    await r.xack(stream, 'g', ...ids);
  }
  rec.report();
  r.disconnect();
}

async function busConsumer(prefix: string, total: number, warm: number) {
  const bus = new QEEventBus({
    nodeId: 'bench-consumer',
    transport: new RedisStreamsTransport({ ...streamsOptions(), keyPrefix: prefix }),
  });
  await bus.start();
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  let rec!: Recorder;
  await bus.subscribe(
    'bench.*',
    (e) => {
      if (rec.record(e.data as { i: number; at: number })) finish();
    },
    { group: 'g', maxConcurrency: 64 },
  ).ready;
  rec = new Recorder(total, warm);
  send({ ready: true });
  await done;
  rec.report();
  await bus.stop();
}

/** Pub/sub consumers (raw SUBSCRIBE, or the bus on RedisPubSubTransport); lost messages end the wait at a deadline. */
async function pubsubConsumer(kind: 'raw-ps' | 'bus-ps', prefix: string, total: number, warm: number) {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const rec = new Recorder(total, warm);
  let close: () => Promise<unknown>;
  if (kind === 'raw-ps') {
    const sub = new Redis(URL_);
    await sub.subscribe(`${prefix}:raw-ps`);
    sub.on('messageBuffer', (_ch: Buffer, msg: Buffer) => {
      if (rec.record((JSON.parse(msg.toString()) as ReturnType<typeof rawEvent>).data)) finish();
    });
    close = async () => sub.disconnect();
  } else {
    const bus = new QEEventBus({
      nodeId: 'bench-ps-consumer',
      transport: new RedisPubSubTransport({ url: URL_, keyPrefix: prefix }),
    });
    await bus.start();
    await bus.subscribe('bench.*', (e) => {
      if (rec.record(e.data as { i: number; at: number })) finish();
    }).ready;
    close = () => bus.stop();
  }
  send({ ready: true });
  const deadline = setTimeout(finish, PUBSUB_DEADLINE_MS);
  await done;
  clearTimeout(deadline);
  rec.report();
  await close();
}

async function produce(kind: Kind, mode: Mode, prefix: string, total: number) {
  let stats = (): Record<string, unknown> => ({});
  let publish: (i: number, at: number) => Promise<unknown>;
  let close: () => Promise<unknown>;
  if (kind === 'raw') {
    const r = new Redis(URL_);
    const stream = `${prefix}:raw`;
    publish = (i, at) => r.xadd(stream, '*', STREAM_FIELD, JSON.stringify(rawEvent(i, at)));
    close = async () => r.disconnect();
  } else if (kind === 'raw-ps') {
    const r = new Redis(URL_);
    const channel = `${prefix}:raw-ps`;
    publish = (i, at) => r.publish(channel, JSON.stringify(rawEvent(i, at)));
    close = async () => r.disconnect();
  } else {
    const bus = new QEEventBus({
      nodeId: 'bench-producer',
      transport:
        kind === 'bus-ps'
          ? new RedisPubSubTransport({ url: URL_, keyPrefix: prefix })
          : new RedisStreamsTransport({ ...streamsOptions(), keyPrefix: prefix }),
    });
    await bus.start();
    stats = () => bus.transport.stats();
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
  const gc0 = gc.ms;
  const started = epochNow();
  let inflight = 0;
  let failed = 0;
  let waiter: (() => void) | null = null;
  // counts completions only: holding every publish's result would make the producer's heap the subject
  const settle = () => {
    inflight--;
    const w = waiter;
    waiter = null;
    w?.();
  };
  const fail = () => {
    failed++;
    settle();
  };
  if (mode === 'max') {
    for (let i = 0; i < total; i++) {
      while (inflight >= INFLIGHT) await new Promise<void>((r) => (waiter = r));
      inflight++;
      publish(i, epochNow()).then(settle, fail);
    }
  } else {
    let sent = 0;
    await new Promise<void>((resolve) => {
      const step = () => {
        const due = Math.min(total, Math.floor(((epochNow() - started) / 1000) * RATE));
        while (sent < due) {
          inflight++;
          publish(sent, started + (sent / RATE) * 1000).then(settle, fail);
          sent++;
        }
        if (sent < total) setTimeout(step, 1);
        else resolve();
      };
      step();
    });
  }
  while (inflight > 0) await new Promise<void>((r) => (waiter = r));
  send({
    published: true,
    startedAt: started,
    failed,
    ms: epochNow() - started,
    cpuMs: cpuMs() - cpu0,
    gcMs: gc.ms - gc0,
    rss: process.memoryUsage.rss(),
    unreplicated: Number(stats().unreplicated ?? 0),
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
  warm: number,
  target: Target = {},
): { proc: ChildProcess; next: () => Promise<Record<string, unknown>> } {
  const proc = spawn(
    process.execPath,
    [
      ...(process.env.QE_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/qeprof'] : []),
      ...(process.env.QE_BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? []),
      '--conditions=@qe/source',
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      role,
      kind,
      mode,
      prefix,
      String(total),
      String(warm),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, QE_BENCH_TARGET: JSON.stringify(target) },
    },
  );
  const queue: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      // node's own tracing (QE_BENCH_NODE_FLAGS=--trace-gc) shares stdout: pass it on
      if (!text.startsWith('{')) {
        process.stderr.write(`${role} ${kind}: ${text}\n`);
        continue;
      }
      const msg = JSON.parse(text) as Record<string, unknown>;
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

/** CPU ms a redis-server on this machine has used so far, or undefined (remote, or no /proc). */
async function redisCpuMs(r: Redis): Promise<number | undefined> {
  try {
    const pid = /process_id:(\d+)/.exec(await r.info('server'))?.[1];
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // utime + stime in 10 ms ticks
  } catch {
    return undefined;
  }
}

interface PairResult {
  eps: number;
  hist: Record<string, number>;
  rss: number;
  failed: number;
  /** Events the consumer never saw (pub/sub is at-most-once; 0 for streams). */
  lost: number;
  /** CPU µs per event: producer, consumer, redis-server (NaN when unknown). */
  cpu: [number, number, number];
  /** GC pause ms per 10,000 events: producer, consumer. */
  gc: [number, number];
  /** Events whose replication WAIT could not confirm (replicated acks). */
  unreplicated: number;
}

async function runPair(
  kind: Kind,
  mode: Mode,
  total: number,
  warm: number,
  target: Target = {},
): Promise<PairResult> {
  const prefix = `qe-bench:${kind}:${mode}:${Date.now().toString(36)}`;
  const r = new Redis(URL_);
  const consumer = child('consumer', kind, mode, prefix, total, warm, target);
  await consumer.next(); // ready
  // a Cluster's redis-servers are not measured (several processes); its keys go with it
  const redis0 = target.cluster ? undefined : await redisCpuMs(r);
  const producer = child('producer', kind, mode, prefix, total, warm, target);
  const exited = (c: ChildProcess) =>
    new Promise<void>((r) =>
      c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()),
    );
  const pub = await producer.next();
  const done = await consumer.next();
  const redis1 = target.cluster ? undefined : await redisCpuMs(r);
  // both closed before the next pair starts (and before the run stops its Clusters)
  await Promise.all([exited(producer.proc), exited(consumer.proc)]);
  // from the first publish to the last event handled: process start-up is not the pipeline's cost
  const elapsed = Number(done.lastAt) - Number(pub.startedAt);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
  const perEvent = (ms: number | undefined) => (ms === undefined ? Number.NaN : (ms * 1000) / total);
  return {
    eps: (total / elapsed) * 1000,
    hist: done.hist as Record<string, number>,
    rss: Math.max(Number(done.rss), Number(pub.rss)),
    failed: Number(pub.failed),
    lost: total - Number(done.received),
    cpu: [
      perEvent(Number(pub.cpuMs)),
      perEvent(Number(done.cpuMs)),
      perEvent(redis0 === undefined || redis1 === undefined ? undefined : redis1 - redis0),
    ],
    gc: [(Number(pub.gcMs) * 10_000) / total, (Number(done.gcMs) * 10_000) / total],
    unreplicated: Number(pub.unreplicated ?? 0),
  };
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
const ms = (x: number) => `${x.toFixed(2)} ms`;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const cpuCol = (rs: PairResult[]) =>
  [0, 1, 2].map((k) => median(rs.map((r) => r.cpu[k]!)).toFixed(1)).join(' / ');
const gcCol = (rs: PairResult[]) => [0, 1].map((k) => median(rs.map((r) => r.gc[k]!)).toFixed(1)).join(' / ');

async function main() {
  console.log(
    `# redis benchmark (node ${process.version}; producer and consumer in separate processes; ${URL_}; ${ROUNDS} rounds)`,
  );
  const max: Record<MaxKind, PairResult[]> = { raw: [], bus: [], 'bus-batch': [] };
  const open: Record<OpenKind, PairResult[]> = { raw: [], bus: [], 'raw-ps': [], 'bus-ps': [] };
  const openTotal = Math.round(RATE * (WARMUP + SECONDS));
  const openWarm = Math.round(RATE * WARMUP);
  const clusterRows: Record<ClusterRow, PairResult[]> = {
    single: [],
    'c1-async': [],
    'c1-wait': [],
    'c3-async': [],
    'c3-wait': [],
  };
  const clusters: LocalCluster[] = [];
  const targets = {} as Record<ClusterRow, Target>;
  if (MODES.has('cluster')) {
    const [one, three] = await Promise.all([
      startCluster(7456, { masters: 1, replicas: 1 }),
      startCluster(7450, { masters: 3, replicas: 1 }),
    ]);
    clusters.push(one, three);
    targets.single = {};
    targets['c1-async'] = { cluster: one.nodes };
    targets['c1-wait'] = { cluster: one.nodes, wait: 1 };
    targets['c3-async'] = { cluster: three.nodes };
    targets['c3-wait'] = { cluster: three.nodes, wait: 1 };
  }
  // an interrupted run stops its Clusters too
  const onSignal = (sig: NodeJS.Signals) => {
    void Promise.all(clusters.map((c) => c.stop())).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await rounds();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(clusters.map((c) => c.stop()));
  }
  async function rounds() {
    for (let round = 1; round <= ROUNDS; round++) {
      const line: string[] = [`round ${round}:`];
      if (MODES.has('max')) {
        for (const kind of ['raw', 'bus', 'bus-batch'] as const)
          max[kind].push(await runPair(kind, 'max', N, 0));
        const last = (k: MaxKind) => max[k][round - 1]!;
        line.push(
          `max raw ${fmt(last('raw').eps)}  bus ${fmt(last('bus').eps)}  batch ${fmt(last('bus-batch').eps)} events/s`,
        );
      }
      if (MODES.has('open')) {
        for (const kind of OPEN_KINDS) open[kind].push(await runPair(kind, 'open', openTotal, openWarm));
        const lastO = (k: OpenKind) => open[k][round - 1]!;
        line.push(
          `open p99 raw ${ms(lastO('raw').hist.p99!)}  bus ${ms(lastO('bus').hist.p99!)}` +
            ` | pub/sub raw ${ms(lastO('raw-ps').hist.p99!)}  bus ${ms(lastO('bus-ps').hist.p99!)}`,
        );
      }
      if (MODES.has('cluster')) {
        for (const row of CLUSTER_ROWS)
          clusterRows[row].push(await runPair('bus', 'max', CLUSTER_N, 0, targets[row]));
        const lastC = (k: ClusterRow) => fmt(clusterRows[k][round - 1]!.eps);
        line.push(
          `cluster single ${lastC('single')}  1 master ${lastC('c1-async')} / wait ${lastC('c1-wait')}  3 masters ${lastC('c3-async')} / wait ${lastC('c3-wait')} events/s`,
        );
      }
      console.log(line.join(' | '));
    }
  }
  const failed = [...Object.values(max), ...Object.values(open), ...Object.values(clusterRows)]
    .flat()
    .reduce((a, r) => a + r.failed, 0);
  if (failed > 0) console.log(`!! ${failed} publishes failed`);
  if (MODES.has('max')) printMax(max);
  if (MODES.has('open')) printOpen(open);
  if (MODES.has('cluster')) printCluster(clusterRows);
}

const CLUSTER_ROWS = ['single', 'c1-async', 'c1-wait', 'c3-async', 'c3-wait'] as const;
type ClusterRow = (typeof CLUSTER_ROWS)[number];

function printCluster(rows: Record<ClusterRow, PairResult[]>) {
  const base = median(rows.single.map((r) => r.eps));
  console.log(
    `\n## Cluster: QEEventBus publish() on RedisStreams, ${fmt(CLUSTER_N)} events, ${INFLIGHT} in flight, 6 partitions (median of ${ROUNDS})` +
      '\n                                              events/s  ratio   p50 / p99 publish-to-handler   CPU µs/event producer / consumer   unreplicated / failed publishes',
  );
  for (const [name, row] of [
    ['single node (REDIS_URL)                     ', 'single'],
    ['Cluster 1 master + 1 replica                ', 'c1-async'],
    ['Cluster 1 master + 1 replica, WAIT 1        ', 'c1-wait'],
    ['Cluster 3 masters + 3 replicas              ', 'c3-async'],
    ['Cluster 3 masters + 3 replicas, WAIT 1      ', 'c3-wait'],
  ] as const) {
    const rs = rows[row];
    const eps = median(rs.map((r) => r.eps));
    const q = (k: string) => median(rs.map((r) => r.hist[k]!));
    const cpu = [0, 1].map((k) => median(rs.map((r) => r.cpu[k]!)).toFixed(1)).join(' / ');
    console.log(
      `${name}  ${fmt(eps).padStart(9)}  ${(eps / base).toFixed(2).padStart(5)}   ${`${ms(q('p50'))} / ${ms(q('p99'))}`.padEnd(30)}${cpu.padEnd(35)}${rs.reduce((a, r) => a + r.unreplicated, 0)} / ${rs.reduce((a, r) => a + r.failed, 0)}`,
    );
  }
}

function printMax(max: Record<MaxKind, PairResult[]>) {
  const rawEps = median(max.raw.map((r) => r.eps));
  console.log(
    `\n## max throughput, ${fmt(N)} events, ${INFLIGHT} in flight (median of ${ROUNDS})` +
      '\n                                       events/s  ratio   CPU µs/event producer / consumer / redis   GC ms per 10k events producer / consumer',
  );
  for (const [name, kind] of [
    ['raw ioredis XADD/XREADGROUP/XACK    ', 'raw'],
    ['QEEventBus publish() on RedisStreams', 'bus'],
    ['QEEventBus publishBatch(100)        ', 'bus-batch'],
  ] as const) {
    const eps = median(max[kind].map((r) => r.eps));
    console.log(
      `${name}  ${fmt(eps).padStart(9)}  ${(eps / rawEps).toFixed(2).padStart(5)}   ${cpuCol(max[kind]).padEnd(40)}${gcCol(max[kind])}`,
    );
  }
}

function printOpen(open: Record<OpenKind, PairResult[]>) {
  console.log(
    `\n## open loop ${fmt(RATE)} events/s for ${SECONDS} s after ${WARMUP} s warm-up (latency from intended send time to handler; median of ${ROUNDS})`,
  );
  const q = (rs: PairResult[], k: string) => median(rs.map((r) => r.hist[k]!));
  for (const [name, kind] of [
    ['raw ioredis streams    ', 'raw'],
    ['QEEventBus streams     ', 'bus'],
    ['raw ioredis PUBLISH/SUB', 'raw-ps'],
    ['QEEventBus pub/sub     ', 'bus-ps'],
  ] as const) {
    const rs = open[kind];
    const lost = rs.reduce((a, r) => a + r.lost, 0);
    console.log(
      `${name}  ${lost > 0 ? `(${lost} lost) ` : ''}p50 ${ms(q(rs, 'p50'))}  p99 ${ms(q(rs, 'p99'))}  p99.9 ${ms(q(rs, 'p999'))}  max ${ms(q(rs, 'max'))}  ` +
        `rss ${(median(rs.map((r) => r.rss)) / 2 ** 20).toFixed(0)} MB  CPU µs/event ${cpuCol(rs)}  GC ms/10k events ${gcCol(rs)}`,
    );
  }
  console.log(
    `p99 ratio (bus / raw) streams ${(q(open.bus, 'p99') / q(open.raw, 'p99')).toFixed(2)}, pub/sub ${(q(open['bus-ps'], 'p99') / q(open['raw-ps'], 'p99')).toFixed(2)}`,
  );
}

const [role, kind, mode, prefix, total, warm] = process.argv.slice(2);
if (role === 'consumer')
  await (kind === 'raw-ps' || kind === 'bus-ps'
    ? pubsubConsumer(kind, prefix!, Number(total), Number(warm ?? 0))
    : (kind === 'raw' ? rawConsumer : busConsumer)(prefix!, Number(total), Number(warm ?? 0)));
else if (role === 'producer') await produce(kind as Kind, mode as Mode, prefix!, Number(total));
else await main();
