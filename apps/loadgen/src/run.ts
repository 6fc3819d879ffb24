import { type ChildProcess, fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { epochNow, LatencyHistogram } from '@qe/core';
import { fromWire } from './histogram-wire.js';
import type { LedgerCounts, SentRecord } from './ledger.js';
import type { FromRole, PhaseSpec, RoleInit, SecondStats, ToRole } from './messages.js';
import { consumerRole, producerRole } from './roles.js';
import { targetByName } from './targets/index.js';
import type { TargetContext } from './targets/target.js';

/** How `runLoad` drives a target: roles, limits and the phase plan. */
export interface LoadOptions {
  target: string;
  ctx: TargetContext;
  producers: number;
  payloadBytes: number;
  /** Per producer. */
  maxInFlight: number;
  maxBatch: number;
  /** Give up waiting for stragglers after this long without progress. */
  drainMs: number;
  /** Run producers and consumer in child processes (default: unless the target must be in-process). */
  separateProcesses?: boolean;
  /** Called with the next phase to run given the results so far; null ends the run. */
  nextPhase: (done: readonly PhaseResult[]) => PhaseSpec | null;
  onProgress?: (p: Progress) => void;
}

/** A progress report, twice a second while a phase runs. */
export interface Progress {
  ph: number;
  spec: PhaseSpec;
  elapsedMs: number;
  sent: number;
  received: number;
  rssBytes: number;
}

/** The outcome of one phase. */
export interface PhaseResult {
  ph: number;
  spec: PhaseSpec;
  counts: LedgerCounts;
  histogram: LatencyHistogram;
  /** Per second: sent (by the producers), received and latency percentiles (by the consumer). */
  series: (SecondStats & { sent: number })[];
  /** Sends per second actually issued. */
  sendRate: number;
  /** Distinct events delivered per second, from the first send to the last delivery. */
  deliveredRate: number;
  wallMs: number;
  maxLagMs: number;
  /** Sender lateness behind the schedule, all producers (open loop; empty in max mode). */
  lateness: LatencyHistogram;
  rss: { producerMax: number; consumerMax: number };
  errors: string[];
}

interface Role {
  post(m: ToRole): void;
  events: EventEmitter;
  kill(): void;
}

function tsxLoader(): string {
  return import.meta.resolve('tsx');
}

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));

function childRole(): Role {
  const events = new EventEmitter();
  const child: ChildProcess = fork(WORKER, [], {
    execArgv: ['--conditions=@qe/source', '--import', tsxLoader()],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  child.on('message', (m) => events.emit('msg', m));
  child.on('exit', (code) => events.emit('exit', code));
  return {
    post: (m) => child.send(m),
    events,
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

function localRole(kind: 'producer' | 'consumer'): Role {
  const events = new EventEmitter();
  const handler = (kind === 'consumer' ? consumerRole : producerRole)((m) =>
    queueMicrotask(() => events.emit('msg', m)),
  );
  let chain: Promise<void> = Promise.resolve();
  return {
    post: (m) => {
      chain = chain.then(() =>
        handler(m).catch((err: unknown) => {
          events.emit('msg', { kind: 'error', message: err instanceof Error ? err.message : String(err) });
        }),
      );
    },
    events,
    kill: () => {},
  };
}

function waitFor<K extends FromRole['kind']>(
  role: Role,
  kind: K,
  pred: (m: Extract<FromRole, { kind: K }>) => boolean = () => true,
): Promise<Extract<FromRole, { kind: K }>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: FromRole) => {
      if (m.kind === 'error') {
        cleanup();
        reject(new Error(m.message));
      } else if (m.kind === kind && pred(m as Extract<FromRole, { kind: K }>)) {
        cleanup();
        resolve(m as Extract<FromRole, { kind: K }>);
      }
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`a load process exited early (code ${code})`));
    };
    const cleanup = () => {
      role.events.off('msg', onMsg);
      role.events.off('exit', onExit);
    };
    role.events.on('msg', onMsg);
    role.events.on('exit', onExit);
  });
}

/**
 * Runs phases of load against a target: one consumer and `producers`
 * producers (child processes unless the target is in-process), a ledger
 * reconciliation and a histogram per phase. Never throws for lost events:
 * they are counted; throws when a role fails to start or dies.
 */
export async function runLoad(o: LoadOptions): Promise<PhaseResult[]> {
  const target = targetByName(o.target);
  const separate = (o.separateProcesses ?? true) && !target.inProcess;
  const make = (kind: 'producer' | 'consumer') => (separate ? childRole() : localRole(kind));
  const init = (role: 'producer' | 'consumer', index: number): RoleInit => ({
    role,
    target: o.target,
    index,
    ctx: o.ctx,
    payloadBytes: o.payloadBytes,
    maxInFlight: o.maxInFlight,
    maxBatch: o.maxBatch,
  });
  const consumer = make('consumer');
  const producers = Array.from({ length: o.producers }, () => make('producer'));
  const all = [consumer, ...producers];
  const results: PhaseResult[] = [];
  try {
    consumer.post({ cmd: 'init', init: init('consumer', 0) });
    await waitFor(consumer, 'ready');
    await Promise.all(
      producers.map((p, i) => {
        p.post({ cmd: 'init', init: init('producer', i) });
        return waitFor(p, 'ready');
      }),
    );
    for (let spec = o.nextPhase(results); spec !== null; spec = o.nextPhase(results)) {
      results.push(await runPhase(o, results.length, spec, consumer, producers));
    }
  } finally {
    for (const r of all) r.post({ cmd: 'exit' });
    await new Promise((r) => setTimeout(r, separate ? 300 : 50));
    for (const r of all) r.kill();
    await target.cleanup?.(o.ctx).catch(() => {});
  }
  return results;
}

async function runPhase(
  o: LoadOptions,
  ph: number,
  spec: PhaseSpec,
  consumer: Role,
  producers: Role[],
): Promise<PhaseResult> {
  const t0 = epochNow();
  consumer.post({ cmd: 'begin', ph, t0 });
  const perProducer: PhaseSpec = { rate: spec.rate / producers.length, durationMs: spec.durationMs };
  const sentCount = new Map<number, number>();
  let received = 0;
  let rss = 0;
  const onProgress = (m: FromRole) => {
    if (m.kind !== 'progress' || m.ph !== ph) return;
    if (m.role === 'producer') sentCount.set(m.index, m.count);
    else received = m.count;
    rss = Math.max(rss, m.rss);
  };
  const roles = [consumer, ...producers];
  for (const r of roles) r.events.on('msg', onProgress);
  const ticker = setInterval(() => {
    let sent = 0;
    for (const n of sentCount.values()) sent += n;
    o.onProgress?.({ ph, spec, elapsedMs: epochNow() - t0, sent, received, rssBytes: rss });
  }, 500);
  try {
    const sentMsgs = await Promise.all(
      producers.map((p) => {
        const done = waitFor(p, 'sent', (m) => m.ph === ph);
        p.post({ cmd: 'run', ph, spec: perProducer });
        return done;
      }),
    );
    const sent: [number, SentRecord][] = sentMsgs.map((m) => [m.index, m.record]);
    const recvP = waitFor(consumer, 'received', (m) => m.ph === ph);
    consumer.post({ cmd: 'expect', ph, sent, drainMs: o.drainMs });
    const recv = await recvP;
    const startedAt = Math.min(...sentMsgs.map((m) => m.startedAt));
    const sendEnd = Math.max(...sentMsgs.map((m) => m.endedAt));
    const sentPerSec: number[] = [];
    for (const m of sentMsgs) {
      const offset = Math.max(0, Math.floor((m.startedAt - t0) / 1000));
      m.perSecond.forEach((n, i) => {
        while (sentPerSec.length <= i + offset) sentPerSec.push(0);
        sentPerSec[i + offset]! += n;
      });
    }
    const len = Math.max(sentPerSec.length, recv.series.length);
    const series = Array.from({ length: len }, (_, sec) => {
      const s = recv.series[sec] ?? { sec, received: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
      return { ...s, sec, sent: sentPerSec[sec] ?? 0 };
    });
    const attempted = sentMsgs.reduce((a, m) => a + m.record.attempted, 0);
    const deliverEnd = Math.max(recv.lastAt, sendEnd);
    return {
      ph,
      spec,
      counts: recv.counts,
      histogram: fromWire(recv.histogram),
      series,
      sendRate: attempted / Math.max(1e-3, (sendEnd - startedAt) / 1000),
      deliveredRate: recv.counts.unique / Math.max(1e-3, ((recv.lastAt || deliverEnd) - startedAt) / 1000),
      wallMs: deliverEnd - startedAt,
      maxLagMs: Math.max(...sentMsgs.map((m) => m.maxLagMs)),
      lateness: sentMsgs.reduce((acc, m) => {
        acc.add(fromWire(m.lateness));
        return acc;
      }, new LatencyHistogram()),
      rss: { producerMax: Math.max(...sentMsgs.map((m) => m.rssMax)), consumerMax: recv.rssMax },
      errors: sentMsgs.flatMap((m) => m.errors).slice(0, 20),
    };
  } finally {
    clearInterval(ticker);
    for (const r of roles) r.events.off('msg', onProgress);
  }
}
