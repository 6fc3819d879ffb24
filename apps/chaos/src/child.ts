/**
 * A producer or consumer process of a chaos run (started by the coordinator
 * with `startFixture`): `child.ts <producer|group|broadcast> <name> <incarnation>`.
 * Environment: CHAOS_REDIS_URL (or CHAOS_CLUSTER_NODES, JSON), CHAOS_PREFIX, CHAOS_DIR, CHAOS_RATE,
 * CHAOS_CLAIM_IDLE_MS, CHAOS_MODE (`pubsub` for Redis pub/sub).
 * stdout: `{"ready":true}` once running, `{"mem":{...}}` every second.
 * stdin: one `ChildCommand` per line. Everything it does goes to its ledger file.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { getHeapStatistics } from 'node:v8';
import { type AgentEvent, type ConsumeContext, epochNow, type Logger, QEEventBus } from '@qe/core';
import { drive } from '@qe/loadgen/schedule';
import { createRedisTransport } from '@qe/redis-transport';
import { hashBased, RoutedTransport } from '@qe/router';
import { Redis } from 'ioredis';
import type { ChildCommand } from './faults/index.js';
import { type LedgerRecord, LedgerWriter } from './ledger.js';

const [role, name, incText] = process.argv.slice(2) as ['producer' | 'group' | 'broadcast', string, string];
const inc = Number(incText);
const env = (k: string) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const dir = env('CHAOS_DIR');
const ledger = new LedgerWriter(join(dir, 'ledger', `${name}.${inc}.jsonl`));
const logFile = join(dir, 'logs', `${name}.log`);
const clusterNodes = process.env.CHAOS_CLUSTER_NODES
  ? (JSON.parse(process.env.CHAOS_CLUSTER_NODES) as { host: string; port: number }[])
  : undefined;
/**
 * `CHAOS_MODE=pubsub`: this process's bus is on Redis pub/sub (at-most-once).
 * `router`: on `@qe/router`'s RoutedTransport (group `routed`, hash-based),
 * over Redis Streams. Otherwise Redis Streams.
 */
const mode = process.env.CHAOS_MODE ?? 'streams';
const pubsub = mode === 'pubsub';
const routed = mode === 'router';
const groupName = routed ? 'routed' : 'workers';
const subName =
  role === 'group'
    ? `${clusterNodes ? 'cluster:' : routed ? 'router:' : ''}group:${groupName}`
    : role === 'broadcast'
      ? `broadcast:${name}`
      : '';
const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);

// --- in-process faults -------------------------------------------------------
const realDateNow = Date.now;
let slowMs = 0;
let poisonLeft = 0;
let hog: number[][] = [];
let hogTimer: NodeJS.Timeout | null = null;
/**
 * Fills the V8 heap to 60% of the old-space limit the coordinator set
 * (`--max-old-space-size`, CHAOS_HEAP_MB) with 1 MB chunks of doubles (a
 * Buffer would be off-heap) and keeps it there. Not a share of
 * `heap_size_limit`: that counts the young generation too (448 MB for a
 * 256 MB old space). At 80% (205 of 256 MB) V8 aborted every process within
 * seconds ("ineffective mark-compacts near heap limit", seed 3 --cluster),
 * whatever the bus did; 60% keeps the GC busy and the process alive.
 */
const heapTarget = 0.6 * Number(env('CHAOS_HEAP_MB')) * 1_048_576;
const fillHeap = () => {
  while (process.memoryUsage().heapUsed < heapTarget) hog.push(new Array(131_072).fill(Math.random()));
};
function onCommand(c: ChildCommand): void {
  if (c.cmd === 'slow') slowMs = c.ms;
  else if (c.cmd === 'poison') poisonLeft += c.count;
  else if (c.cmd === 'clock') Date.now = c.offsetMs === 0 ? realDateNow : () => realDateNow() + c.offsetMs;
  else if (c.cmd === 'pressure') {
    if (hogTimer) clearInterval(hogTimer);
    hogTimer = null;
    hog = [];
    if (c.on) {
      fillHeap();
      hogTimer = setInterval(fillHeap, 500);
    }
  } else if (c.cmd === 'stop') void stop();
}

// --- logging: warnings and errors are signals, so they go to the ledger too ----
const lastLogged = new Map<string, number>();
const log =
  (lvl: 'debug' | 'info' | 'warn' | 'error') =>
  (msg: string, fields?: Record<string, unknown>): void => {
    const t = epochNow();
    appendFileSync(
      logFile,
      `${new Date(t).toISOString()} ${lvl} ${msg} ${fields ? JSON.stringify(fields) : ''}\n`,
    );
    if (lvl !== 'warn' && lvl !== 'error') return;
    // one ledger line per message per second: a flapping connection must not flood the ledger
    if (t - (lastLogged.get(msg) ?? 0) < 1000) return;
    lastLogged.set(msg, t);
    ledger.write({ k: 'log', node: name, lvl, msg, t });
  };
const logger: Logger = { debug: () => {}, info: log('info'), warn: log('warn'), error: log('error') };

const bus = new QEEventBus({
  nodeId: `chaos-${name}`,
  transport: routed
    ? routedTransport()
    : pubsub
      ? createRedisTransport({
          mode: 'pubsub',
          url: env('CHAOS_REDIS_URL'),
          keyPrefix: env('CHAOS_PREFIX'),
          publishTimeoutMs: 3000,
        })
      : createRedisTransport({
          ...(clusterNodes
            ? // on the Cluster, publish resolves only once a replica has the write, so a failover cannot lose it
              { cluster: { nodes: clusterNodes }, replicas: { wait: 1, timeoutMs: 1000 } }
            : { url: env('CHAOS_REDIS_URL') }),
          keyPrefix: env('CHAOS_PREFIX'),
          claimIdleMs: Number(env('CHAOS_CLAIM_IDLE_MS')),
          publishTimeoutMs: 3000,
        }),
  freezeEvents: false,
  retryAttempts: 2,
  retryDelay: 50,
  shutdownTimeoutMs: 5000,
  logger,
});
bus.on('error', (err: Error) => log('error')(`bus error: ${err.message}`));
// pub/sub keeps no dead letters to read back, so every process notes its own
bus.on('deadLetter', (d: { event: AgentEvent }) =>
  ledger.write({ k: 'd', key: (d.event.data as { key: string }).key, sub: subName, t: epochNow() }),
);

/** Group events through the router's member inboxes; the inner Streams transport carries the rest. */
function routedTransport(): RoutedTransport {
  const redis = new Redis(env('CHAOS_REDIS_URL'), { maxRetriesPerRequest: 20 });
  redis.on('error', () => {});
  return new RoutedTransport({
    inner: createRedisTransport({
      url: env('CHAOS_REDIS_URL'),
      keyPrefix: `${env('CHAOS_PREFIX')}:r`,
      claimIdleMs: Number(env('CHAOS_CLAIM_IDLE_MS')),
      publishTimeoutMs: 3000,
    }),
    redis,
    prefix: `${env('CHAOS_PREFIX')}:router`,
    strategy: hashBased(),
    memberTtlMs: 3000,
  });
}

const stopping = new AbortController();
let driving: Promise<unknown> = Promise.resolve();

async function runProducer(): Promise<void> {
  const rate = Number(env('CHAOS_RATE'));
  driving = drive({
    rate,
    durationMs: 7 * 24 * 3_600_000,
    maxInFlight: rate * 20,
    maxBatch: 16,
    signal: stopping.signal,
    send: async (group) => {
      const sent: { key: string; poison: boolean }[] = [];
      const recs: LedgerRecord[] = [];
      for (const d of group) {
        const key = `${name}.${inc}.${d.seq}`;
        const poison = poisonLeft > 0;
        if (poison) poisonLeft--;
        sent.push({ key, poison });
        recs.push(
          poison
            ? { k: 'p', key, t: d.intendedAt, node: name, poison }
            : { k: 'p', key, t: d.intendedAt, node: name },
        );
      }
      ledger.writeMany(recs);
      const results = await Promise.allSettled(
        sent.map((s, i) =>
          bus.publish({
            type: s.poison ? 'chaos.poison' : 'chaos.event',
            agentId: `chaos-${name}-a${group[i]!.seq % 8}`,
            data: { key: s.key },
          }),
        ),
      );
      const t = epochNow();
      ledger.writeMany(
        results.map((r, i): LedgerRecord => {
          const key = sent[i]!.key;
          if (r.status === 'fulfilled') return { k: 'a', key, t };
          const e = r.reason as { code?: string; details?: { stored?: string } };
          const f: LedgerRecord = { k: 'f', key, t };
          if (e.code) f.code = e.code;
          if (e.details?.stored) f.stored = e.details.stored;
          return f;
        }),
      );
      return [];
    },
  });
}

async function runConsumer(): Promise<void> {
  const sub = subName;
  const unsub = bus.subscribe(
    'chaos.**',
    async (ev: AgentEvent, ctx: ConsumeContext) => {
      const key = (ev.data as { key: string }).key;
      if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
      const call = { key, id: ev.id, sub, node: name, t: epochNow() };
      // the bus's count of calls: in-process retries and transport redeliveries
      const att = ctx.attempt;
      if (ev.type === 'chaos.poison') {
        ledger.write({ k: 'h', ...call, att, ok: false });
        throw new Error(`poison event ${key}`);
      }
      ledger.write({ k: 'h', ...call, att, ok: true });
    },
    role === 'group' ? { group: groupName, startFrom: 'earliest' } : { startFrom: 'earliest' },
  );
  await unsub.ready;
}

async function stop(): Promise<void> {
  stopping.abort();
  await driving;
  await bus.stop().catch(() => {});
  ledger.close();
  process.exit(0);
}

process.on('disconnect', () => process.exit(0));
createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    onCommand(JSON.parse(line) as ChildCommand);
  } catch (err) {
    log('error')(`bad command ${line}: ${(err as Error).message}`);
  }
});
process.stdin.on('end', () => process.exit(0));
setInterval(() => {
  const m = process.memoryUsage();
  say({ mem: { rss: m.rss, heapUsed: m.heapUsed, heapLimit: getHeapStatistics().heap_size_limit } });
}, 1000).unref();

await bus.start();
if (role === 'producer') await runProducer();
else await runConsumer();
say({ ready: true });
