import { epochNow, LatencyHistogram } from '@qe/core';
import { toWire } from './histogram-wire.js';
import { Ledger, type SentRecord } from './ledger.js';
import type { FromRole, RoleInit, SecondStats, ToRole } from './messages.js';
import { drive } from './schedule.js';
import { targetByName } from './targets/index.js';
import type { LoadConsumer, LoadPayload, LoadProducer } from './targets/target.js';

/** Handles the coordinator's messages for one role; the same code runs in a child process or in-process. */
export type RoleHandler = (msg: ToRole) => Promise<void>;

function rssSampler(): { max(): number; reset(): void; stop(): void } {
  let max = process.memoryUsage.rss();
  const t = setInterval(() => {
    const r = process.memoryUsage.rss();
    if (r > max) max = r;
  }, 200);
  t.unref();
  return {
    max: () => Math.max(max, process.memoryUsage.rss()),
    reset: () => {
      max = process.memoryUsage.rss();
    },
    stop: () => clearInterval(t),
  };
}

interface PhaseRecv {
  t0: number;
  ledger: Ledger;
  hist: LatencyHistogram;
  seconds: { received: number; h: LatencyHistogram }[];
  firstAt: number;
  lastAt: number;
}

/** The consumer role: a ledger, a histogram and per-second stats per phase. */
export function consumerRole(post: (m: FromRole) => void): RoleHandler {
  let consumer: LoadConsumer | null = null;
  const phases = new Map<number, PhaseRecv>();
  let current: PhaseRecv | null = null;
  let currentPh = -1;
  let progress: NodeJS.Timeout | null = null;
  let index = 0;
  const rss = rssSampler();
  const phase = (ph: number): PhaseRecv => {
    let r = phases.get(ph);
    if (!r) {
      r = {
        t0: epochNow(),
        ledger: new Ledger(),
        hist: new LatencyHistogram(),
        seconds: [],
        firstAt: 0,
        lastAt: 0,
      };
      phases.set(ph, r);
    }
    return r;
  };
  const onEvent = (p: LoadPayload) => {
    const r = p.ph === currentPh && current ? current : phase(p.ph);
    const now = epochNow();
    if (r.firstAt === 0) r.firstAt = now;
    r.lastAt = now;
    const sec = Math.max(0, Math.floor((now - r.t0) / 1000));
    while (r.seconds.length <= sec) r.seconds.push({ received: 0, h: new LatencyHistogram() });
    const s = r.seconds[sec]!;
    s.received++;
    if (r.ledger.record(p.p, p.s)) {
      const lat = now - p.t;
      r.hist.recordMs(lat);
      s.h.recordMs(lat);
    }
  };
  return async (msg) => {
    if (msg.cmd === 'init') {
      index = msg.init.index;
      const target = targetByName(msg.init.target);
      consumer = await target.consumer(msg.init.ctx, onEvent);
      post({ kind: 'ready' });
    } else if (msg.cmd === 'begin') {
      rss.reset();
      current = phase(msg.ph);
      current.t0 = msg.t0;
      currentPh = msg.ph;
      if (progress) clearInterval(progress);
      progress = setInterval(() => {
        post({
          kind: 'progress',
          role: 'consumer',
          index,
          ph: msg.ph,
          count: current?.ledger.unique ?? 0,
          rss: rss.max(),
        });
      }, 500);
      progress.unref();
    } else if (msg.cmd === 'expect') {
      const r = phase(msg.ph);
      const sent = new Map<number, SentRecord>(msg.sent);
      let expected = 0;
      for (const rec of sent.values()) expected += rec.attempted - rec.failed.length;
      let lastUnique = -1;
      let lastChange = Date.now();
      while (r.ledger.unique < expected) {
        if (r.ledger.unique !== lastUnique) {
          lastUnique = r.ledger.unique;
          lastChange = Date.now();
        } else if (Date.now() - lastChange > msg.drainMs) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      // a short grace period to catch duplicates delivered right behind the last event
      await new Promise((res) => setTimeout(res, 100));
      if (progress) clearInterval(progress);
      progress = null;
      const series: SecondStats[] = r.seconds.map((s, sec) => ({
        sec,
        received: s.received,
        p50: s.h.quantileMs(0.5),
        p90: s.h.quantileMs(0.9),
        p99: s.h.quantileMs(0.99),
        p999: s.h.quantileMs(0.999),
        max: s.h.count === 0 ? 0 : s.h.maxUs / 1000,
      }));
      post({
        kind: 'received',
        ph: msg.ph,
        counts: r.ledger.reconcile(sent),
        histogram: toWire(r.hist),
        series,
        firstAt: r.firstAt,
        lastAt: r.lastAt,
        rssMax: rss.max(),
      });
      phases.delete(msg.ph);
    } else if (msg.cmd === 'exit') {
      if (progress) clearInterval(progress);
      rss.stop();
      await consumer?.close();
      consumer = null;
    }
  };
}

/** The producer role: drives one phase at a time and reports what it sent. */
export function producerRole(post: (m: FromRole) => void): RoleHandler {
  let producer: LoadProducer | null = null;
  let init: RoleInit | null = null;
  let pad = '';
  const rss = rssSampler();
  return async (msg) => {
    if (msg.cmd === 'init') {
      init = msg.init;
      pad = 'x'.repeat(Math.max(0, init.payloadBytes));
      producer = await targetByName(init.target).producer(init.ctx, init.index);
      post({ kind: 'ready' });
    } else if (msg.cmd === 'run') {
      const i = init!;
      const p = producer!;
      rss.reset();
      let sent = 0;
      const progress = setInterval(
        () =>
          post({
            kind: 'progress',
            role: 'producer',
            index: i.index,
            ph: msg.ph,
            count: sent,
            rss: rss.max(),
          }),
        500,
      );
      progress.unref();
      const r = await drive({
        rate: msg.spec.rate,
        durationMs: msg.spec.durationMs,
        maxInFlight: i.maxInFlight,
        maxBatch: i.maxBatch,
        send: async (group) => {
          const payloads: LoadPayload[] = group.map((d) =>
            pad === ''
              ? { ph: msg.ph, p: i.index, s: d.seq, t: d.intendedAt }
              : { ph: msg.ph, p: i.index, s: d.seq, t: d.intendedAt, pad },
          );
          const refused = await p.send(payloads);
          sent += group.length - refused.length;
          return refused.map((k) => group[k]!.seq);
        },
      });
      clearInterval(progress);
      post({
        kind: 'sent',
        index: i.index,
        ph: msg.ph,
        record: { attempted: r.attempted, failed: r.failed },
        startedAt: r.startedAt,
        endedAt: r.endedAt,
        maxLagMs: r.maxLagMs,
        lateness: toWire(r.lateness),
        perSecond: r.perSecond,
        errors: r.errors,
        rssMax: rss.max(),
      });
    } else if (msg.cmd === 'exit') {
      rss.stop();
      await producer?.close();
      producer = null;
    }
  };
}
