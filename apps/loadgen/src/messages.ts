import type { WireHistogram } from './histogram-wire.js';
import type { LedgerCounts, SentRecord } from './ledger.js';
import type { TargetContext } from './targets/target.js';

/** How one phase is driven. */
export interface PhaseSpec {
  /** Total events per second over all producers; 0 = max-throughput mode. */
  rate: number;
  durationMs: number;
}

/** What a load role (producer or consumer) needs to start, sent once as `init`. */
export interface RoleInit {
  role: 'producer' | 'consumer';
  target: string;
  index: number;
  ctx: TargetContext;
  payloadBytes: number;
  maxInFlight: number;
  maxBatch: number;
}

/** One second of a phase, as the consumer saw it (latency of events first delivered in that second). */
export interface SecondStats {
  sec: number;
  received: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Coordinator to role. A role handles these one at a time, in order. */
export type ToRole =
  | { cmd: 'init'; init: RoleInit }
  | { cmd: 'begin'; ph: number; t0: number }
  | { cmd: 'run'; ph: number; spec: PhaseSpec }
  | { cmd: 'expect'; ph: number; sent: [number, SentRecord][]; drainMs: number }
  | { cmd: 'exit' };

/** Role to coordinator: readiness, progress every 500 ms, and one result per phase. */
export type FromRole =
  | { kind: 'ready' }
  | { kind: 'error'; message: string }
  | { kind: 'progress'; role: 'producer' | 'consumer'; index: number; ph: number; count: number; rss: number }
  | {
      kind: 'sent';
      index: number;
      ph: number;
      record: SentRecord;
      startedAt: number;
      endedAt: number;
      maxLagMs: number;
      lateness: WireHistogram;
      perSecond: number[];
      errors: string[];
      rssMax: number;
    }
  | {
      kind: 'received';
      ph: number;
      counts: LedgerCounts;
      histogram: WireHistogram;
      series: SecondStats[];
      firstAt: number;
      lastAt: number;
      rssMax: number;
    };
