import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { epochNow, QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { type LocalCluster, startCluster, startProxy, startRedis } from '@qe/test-utils';
import type { ChaosOptions } from './args.js';
import {
  type Classification,
  classify,
  type DeadLetterRecord,
  type FaultWindow,
  faultLabel,
  type UnexpectedExit,
} from './classify.js';
import { type FaultWorld, selectFaults, type Topology } from './faults/index.js';
import { parseLines, readLedger } from './ledger.js';
import { handledEvents, perSecond, recoveries } from './metrics.js';
import { type MemorySample, writeReport } from './report.js';
import { buildSchedule } from './schedule.js';
import { BROKER_CHILD, ChildProc, clusterControl, faultWorld, redisControl, WS_CHILD } from './world.js';

/** Entries a dead consumer held are claimed by a live one after this idle time (the transport option). */
const CLAIM_IDLE_MS = 2000;
/** An anomaly this long before a fault or after its heal is attributed to it (a claim needs 1-2 idle periods). */
const BEFORE_MS = 1000;
const AFTER_MS = 4 * CLAIM_IDLE_MS + 4000;
/** With `--broker`: the WS producer's events go through the broker under their own key prefix, to the WS clients only. */
const WS_SUBS = ['ws:group:wsworkers', 'ws:broadcast:wb0'];
/** Who must handle each event: the single node's consumers, or for the Cluster's producer (`cp0`) the Cluster's. */
const expectedSubs = (producer: string) =>
  producer.startsWith('w')
    ? WS_SUBS
    : producer.startsWith('c')
      ? ['cluster:group:workers', 'broadcast:cb0']
      : producer.startsWith('s')
        ? ['broadcast:s0']
        : producer.startsWith('r')
          ? ['router:group:routed']
          : ['group:workers', 'broadcast:b0'];
/**
 * The pub/sub producer's events are at-most-once by contract; a WS broadcast
 * subscriber misses what is sent while it is disconnected (at-most-once across
 * a reconnect), so its losses are allowed inside fault windows only.
 */
const atMostOnce = (producer: string, sub: string): boolean | 'faults' =>
  producer.startsWith('s') ? true : sub.startsWith('ws:broadcast:') ? 'faults' : false;
/** The broker's settings: claims and ack timeouts short enough that redelivery happens within a run. */
const BROKER_CLAIM_IDLE_MS = CLAIM_IDLE_MS;
const BROKER_ACK_TIMEOUT_MS = 3000;

export interface ChaosResult {
  dir: string;
  classification: Classification;
  notes: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/** Every dead letter of one Redis (the single node, or the Cluster), as (event key, subscription set). */
async function deadLettersOf(
  where: { url: string } | { cluster: { nodes: { host: string; port: number }[] } },
  keyPrefix: string,
  subPrefix = '',
): Promise<DeadLetterRecord[]> {
  const groupSub = `${subPrefix}${'cluster' in where ? 'cluster:group:' : 'group:'}`;
  const bus = new QEEventBus({
    nodeId: 'chaos-coordinator',
    transport: createRedisTransport({ ...where, keyPrefix }),
  });
  await bus.start();
  try {
    const out: DeadLetterRecord[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await bus.deadLetters!.list(after ? { limit: 1000, after } : { limit: 1000 });
      for (const d of page) {
        const key = (d.event.data as { key?: string }).key ?? '?';
        const sub = d.group
          ? `${groupSub}${d.group}`
          : `${subPrefix}broadcast:${(d.nodeId ?? '').replace(/^chaos-/, '')}`;
        out.push({ key, sub, t: d.deadAt });
      }
      if (page.length < 1000) return out;
      after = page.at(-1)!.id;
    }
  } finally {
    await bus.stop();
  }
}

/**
 * One chaos run: Redis (single node, AOF `appendfsync always` or no
 * persistence) behind a TCP proxy, consumers (two members of group `workers`,
 * one broadcast subscriber) and two open-loop producers as child processes,
 * faults from the seeded schedule one at a time, then a drain, the dead
 * letters, the classification and the report in `o.out`.
 */
export async function runChaos(
  o: ChaosOptions,
  log: (line: string) => void = console.log,
): Promise<ChaosResult> {
  const dir = resolve(o.out);
  for (const sub of ['ledger', 'logs']) rmSync(join(dir, sub), { recursive: true, force: true });
  for (const f of ['faults.jsonl', 'memory.jsonl']) rmSync(join(dir, f), { force: true });
  mkdirSync(join(dir, 'ledger'), { recursive: true });
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const topology: Topology = {
    producers: [
      'p0',
      'p1',
      ...(o.cluster ? ['cp0'] : []),
      ...(o.pubsub ? ['sp0'] : []),
      ...(o.router ? ['rp0'] : []),
      ...(o.broker ? ['wp0'] : []),
    ],
    consumers: [
      'g0',
      'g1',
      'b0',
      ...(o.cluster ? ['cg0', 'cb0'] : []),
      ...(o.pubsub ? ['s0'] : []),
      ...(o.router ? ['r0', 'r1'] : []),
      ...(o.broker ? ['wg0', 'wb0'] : []),
    ],
    persistence: o.persistence,
    cluster: o.cluster,
    ...(o.broker ? { brokers: ['broker'] } : {}),
  };
  const faults = selectFaults(o.faults);
  const schedule = buildSchedule({ seed: o.seed, durationMs: o.durationMs, faults, topology });
  writeFileSync(join(dir, 'schedule.json'), `${JSON.stringify(schedule, null, 2)}\n`);
  const notes: string[] = [];
  let t0 = epochNow();
  const exits: UnexpectedExit[] = [];
  const windows: FaultWindow[] = [];

  const redisArgs =
    o.persistence === 'aof' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const server = await startRedis(o.basePort, redisArgs);
  const redis = redisControl(server);
  const proxy = await startProxy(o.basePort);
  const keyPrefix = `chaos:${o.seed}`;
  const env = {
    dir,
    redisUrl: `redis://127.0.0.1:${proxy.port}`,
    keyPrefix,
    rate: o.rate,
    claimIdleMs: CLAIM_IDLE_MS,
  };
  // the Cluster: 3 masters + 3 replicas, AOF always on every node, on base+10.. (cluster bus +10000)
  const cluster: LocalCluster | undefined = o.cluster
    ? await startCluster(o.basePort + 10, {
        args: ['--cluster-require-full-coverage', 'no', '--appendonly', 'yes', '--appendfsync', 'always'],
      })
    : undefined;
  const clusterEnv = cluster ? { ...env, clusterNodes: cluster.nodes } : env;
  const deadLetters = async () => [
    ...(await deadLettersOf({ url: `redis://127.0.0.1:${o.basePort}` }, keyPrefix)),
    // the broker's: group `wsworkers` maps to `ws:group:wsworkers`; its own broadcast binding to no expected set
    ...(o.broker
      ? await deadLettersOf({ url: `redis://127.0.0.1:${o.basePort}` }, `${keyPrefix}:ws`, 'ws:')
      : []),
    ...(cluster ? await deadLettersOf({ cluster: { nodes: cluster.nodes } }, keyPrefix) : []),
  ];
  const children = new Map<string, ChildProc>();
  const onExit = (e: UnexpectedExit) => {
    exits.push(e);
    notes.push(
      `${e.node} exited with no fault killing it at ${((e.t - t0) / 1000).toFixed(1)} s (code ${e.code}, signal ${e.signal}); restarted`,
    );
    log(`[chaos] ${e.node} exited unexpectedly (code ${e.code}, signal ${e.signal}); restarting`);
  };
  children.set('g0', new ChildProc('g0', 'group', env, onExit));
  children.set('g1', new ChildProc('g1', 'group', env, onExit));
  children.set('b0', new ChildProc('b0', 'broadcast', env, onExit));
  children.set('p0', new ChildProc('p0', 'producer', env, onExit));
  children.set('p1', new ChildProc('p1', 'producer', env, onExit));
  if (o.pubsub) {
    children.set('s0', new ChildProc('s0', 'broadcast', { ...env, mode: 'pubsub' }, onExit));
    children.set('sp0', new ChildProc('sp0', 'producer', { ...env, mode: 'pubsub' }, onExit));
  }
  if (o.router) {
    children.set('r0', new ChildProc('r0', 'group', { ...env, mode: 'router' }, onExit));
    children.set('r1', new ChildProc('r1', 'group', { ...env, mode: 'router' }, onExit));
    children.set('rp0', new ChildProc('rp0', 'producer', { ...env, mode: 'router' }, onExit));
  }
  if (o.broker) {
    // the real broker on base+5, its Redis through the proxy; WS clients on its gateway
    const brokerPort = o.basePort + 5;
    const brokerEnv = {
      ...env,
      extra: {
        HOST: '127.0.0.1',
        PORT: String(brokerPort),
        NODE_ID: 'chaos-broker',
        REDIS_URL: env.redisUrl,
        EVENTBUS_KEY_PREFIX: `${keyPrefix}:ws`,
        EVENTBUS_CLAIM_IDLE: String(BROKER_CLAIM_IDLE_MS),
        WS_ACK_TIMEOUT: String(BROKER_ACK_TIMEOUT_MS),
        HTTP_GATEWAY_ENABLED: 'false',
        SHUTDOWN_TIMEOUT: '5000',
        LOG_LEVEL: 'info',
      },
    };
    const wsEnv = { ...env, wsUrl: `ws://127.0.0.1:${brokerPort}/events` };
    children.set('broker', new ChildProc('broker', 'broker', brokerEnv, onExit, BROKER_CHILD));
    children.set('wg0', new ChildProc('wg0', 'group', wsEnv, onExit, WS_CHILD));
    children.set('wb0', new ChildProc('wb0', 'broadcast', wsEnv, onExit, WS_CHILD));
    children.set('wp0', new ChildProc('wp0', 'producer', wsEnv, onExit, WS_CHILD));
  }
  if (cluster) {
    children.set('cg0', new ChildProc('cg0', 'group', clusterEnv, onExit));
    children.set('cb0', new ChildProc('cb0', 'broadcast', clusterEnv, onExit));
    children.set('cp0', new ChildProc('cp0', 'producer', clusterEnv, onExit));
  }
  const killAll = () => {
    for (const c of children.values()) c.killNow();
    try {
      server.proc.kill('SIGKILL');
      for (const s of cluster?.servers ?? []) s.proc.kill('SIGKILL');
    } catch {}
  };
  process.once('exit', killAll);
  // Ctrl-C: a signal ends Node without 'exit' listeners, which would leave the redis-servers running
  const interrupted = (sig: NodeJS.Signals) => {
    killAll();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const memTimer = setInterval(() => {
    redis
      .call('INFO', 'memory')
      .then((info) => {
        const rss = Number(/used_memory_rss:(\d+)/.exec(String(info))?.[1] ?? 0);
        const used = Number(/used_memory:(\d+)/.exec(String(info))?.[1] ?? 0);
        appendFileSync(
          join(dir, 'memory.jsonl'),
          `${JSON.stringify({ proc: 'redis', t: epochNow(), rss, heapUsed: used })}\n`,
        );
      })
      .catch(() => {});
  }, 2000);

  try {
    for (const n of topology.brokers ?? []) await children.get(n)!.start();
    for (const n of topology.consumers) await children.get(n)!.start();
    await Promise.all(topology.producers.map((n) => children.get(n)!.start()));
    t0 = epochNow();
    log(`[chaos] seed ${o.seed}: ${schedule.length} faults over ${o.durationMs / 1000} s; results in ${dir}`);
    const world: FaultWorld = faultWorld(
      children,
      redis,
      proxy,
      cluster ? clusterControl(cluster) : undefined,
    );
    for (const plan of schedule) {
      await sleep(t0 + plan.atMs - epochNow());
      const fault = faults.find((f) => f.name === plan.fault)!;
      const start = epochNow();
      try {
        const heal = await fault.inject(world, plan);
        await sleep(plan.durationMs);
        await heal();
      } catch (err) {
        notes.push(`#${plan.index} ${plan.fault}@${plan.target}: ${(err as Error).message}`);
      }
      const w: FaultWindow = {
        index: plan.index,
        name: plan.fault,
        target: plan.target,
        start,
        end: epochNow(),
      };
      windows.push(w);
      appendFileSync(join(dir, 'faults.jsonl'), `${JSON.stringify({ ...w, param: plan.param })}\n`);
      log(
        `[chaos] ${((start - t0) / 1000).toFixed(1)}s ${faultLabel(w)}${plan.param ? ` (${plan.param})` : ''}: ${Math.round(w.end - start)} ms`,
      );
    }
    await sleep(t0 + o.durationMs - epochNow());
    log('[chaos] load done; stopping producers and draining');
    await Promise.all(topology.producers.map((n) => children.get(n)!.stop()));
    // drain: until every acknowledged event is handled (or dead-lettered) everywhere, or no progress for 20 s
    const drainStart = epochNow();
    let lastLost = Number.POSITIVE_INFINITY;
    let lastProgress = epochNow();
    for (;;) {
      const dl = await deadLetters().catch(() => []);
      const c = classify({
        records: readLedger(join(dir, 'ledger')),
        faults: windows,
        deadLetters: dl,
        expectedSubs,
        atMostOnce,
        persistence: o.persistence,
        beforeMs: BEFORE_MS,
        afterMs: AFTER_MS,
      });
      // losses the verdict allows (pub/sub, a signalled wipe) will never arrive: do not wait for them
      const missing = c.anomalies.filter((a) => a.kind === 'lost' && !a.allowed).length;
      if (missing === 0) break;
      if (missing < lastLost) {
        lastLost = missing;
        lastProgress = epochNow();
      } else if (epochNow() - lastProgress > 20_000 || epochNow() - drainStart > 120_000) {
        notes.push(
          `drain ended after ${Math.round((epochNow() - drainStart) / 1000)} s with ${missing} events not handled`,
        );
        break;
      }
      await sleep(1000);
    }
    log(`[chaos] drained in ${Math.round((epochNow() - drainStart) / 1000)} s; stopping consumers`);
    await Promise.all(topology.consumers.map((n) => children.get(n)!.stop()));
    await Promise.all((topology.brokers ?? []).map((n) => children.get(n)!.stop()));
  } finally {
    clearInterval(memTimer);
    for (const c of children.values()) await c.stop(3000);
  }
  const dl = await deadLetters();
  await cluster?.stop();
  redis.close();
  await proxy.close();
  await server.stop('SIGTERM');
  server.cleanup();
  process.removeListener('exit', killAll);
  process.removeListener('SIGINT', interrupted);
  process.removeListener('SIGTERM', interrupted);

  const records = readLedger(join(dir, 'ledger'));
  const classification = classify({
    records,
    faults: windows,
    deadLetters: dl,
    expectedSubs,
    atMostOnce,
    persistence: o.persistence,
    beforeMs: BEFORE_MS,
    afterMs: AFTER_MS,
    exits,
  });
  const handled = handledEvents(records);
  const seconds = Math.ceil(o.durationMs / 1000) + 5;
  const memory = parseLines<MemorySample>(readFileSyncSafe(join(dir, 'memory.jsonl')));
  writeReport(dir, {
    options: o,
    t0,
    schedule,
    windows,
    classification,
    seconds: perSecond(records, handled, t0, seconds),
    recoveries: recoveries(handled, windows, faultLabel),
    memory,
    notes,
  });
  return { dir, classification, notes };
}

function readFileSyncSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
