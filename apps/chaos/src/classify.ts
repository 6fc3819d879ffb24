import type { LedgerRecord } from './ledger.js';

/** When a fault was active: injected at `start`, healed at `end` (epoch ms). */
export interface FaultWindow {
  index: number;
  name: string;
  target: string;
  start: number;
  end: number;
}

/** A dead letter found in Redis at the end of the run, mapped to its event key and subscription set. */
export interface DeadLetterRecord {
  key: string;
  sub: string;
  t: number;
}

/** A child process that exited without a fault killing it. */
export interface UnexpectedExit {
  node: string;
  t: number;
  code: number | null;
  signal: string | null;
}

export interface ClassifyInput {
  records: readonly LedgerRecord[];
  faults: readonly FaultWindow[];
  deadLetters: readonly DeadLetterRecord[];
  /**
   * The subscription sets that must each handle every acknowledged event
   * (e.g. `group:workers`, `broadcast:b0`), or a function giving them for the
   * producer that published it (a Cluster's producers feed other consumers).
   */
  expectedSubs: readonly string[] | ((producer: string) => readonly string[]);
  /**
   * Which (producer, subscription set) pairs are at-most-once: their losses
   * are counted (`lostAtMostOnce`), marked `gap logged` when a process logged
   * a lost subscriber connection in the window, and a duplicate fails.
   * `true`: a loss is allowed anywhere (Redis pub/sub, at-most-once by
   * contract); `'faults'`: only inside a fault window with its margins (a
   * WebSocket broadcast subscriber: at-most-once across a reconnect, but
   * nothing may go missing in steady state).
   */
  atMostOnce?: (producer: string, sub: string) => boolean | 'faults';
  /** `aof` (appendfsync always): no acknowledged event may be lost. `none`: only where a Redis restart wiped data, signalled. */
  persistence: 'aof' | 'none';
  /** An anomaly this long before a fault's start, or after its heal, is attributed to it. */
  beforeMs: number;
  afterMs: number;
  exits?: readonly UnexpectedExit[];
}

/** Counts for one fault window (or for steady state, or for the whole run). */
export interface Counts {
  /** Publish attempts due while the fault was active (between injection and heal, no margins). */
  published: number;
  /** Of those, acknowledged by `publish`. */
  acknowledged: number;
  /** Of those, rejected by `publish` (not expected to arrive; may, unless `stored: none`). */
  failed: number;
  /** Acknowledged and never handled by some expected subscription set, nor dead-lettered there (one per set). */
  lost: number;
  /** Of `lost`, losses the verdict allows: a Redis restart without persistence that the bus signalled. */
  lostSignalled: number;
  /** Of `lost`, losses of at-most-once events (pub/sub, WS broadcast): allowed by their contract (WS broadcast: in a fault window only). */
  lostAtMostOnce: number;
  /** Successful handler calls beyond the first of an event in one subscription set. */
  duplicated: number;
  /** Events dead-lettered (one per subscription set). */
  deadLettered: number;
  /** Deliveries that should not exist: unknown keys, a poison event handled successfully, a `stored: none` event delivered. */
  unexpected: number;
}

export type AnomalyKind = 'lost' | 'duplicate' | 'duplicate-new-id' | 'unexpected' | 'exit';

export interface Anomaly {
  kind: AnomalyKind;
  key: string;
  sub?: string;
  /** When it happened (publish time for a loss, the extra call for a duplicate). */
  t: number;
  /** The fault it is attributed to (`#3 kill-consumer@g0`) or `none`. */
  fault: string;
  /** True when the verdict allows it. */
  allowed: boolean;
  detail?: string;
}

export interface Classification {
  totals: Counts;
  /** Index 0..n-1: the fault windows in order; then `none` (steady state). */
  perFault: { label: string; window?: FaultWindow; counts: Counts }[];
  anomalies: Anomaly[];
  verdict: { pass: boolean; reasons: string[] };
}

const zero = (): Counts => ({
  published: 0,
  acknowledged: 0,
  failed: 0,
  lost: 0,
  lostSignalled: 0,
  lostAtMostOnce: 0,
  duplicated: 0,
  deadLettered: 0,
  unexpected: 0,
});

/** A fault's label in reports and anomalies. */
export const faultLabel = (w: FaultWindow) => `#${w.index} ${w.name}@${w.target}`;

/** The log line a Streams consumer writes when Redis lost its groups (restart without persistence). */
const WIPE_SIGNAL = /consumer group missing|NOGROUP/;
/**
 * The log line the pub/sub transport writes when its subscriber connection
 * dropped, or a WebSocket client when its connection to the broker did
 * (events in the gap are lost).
 */
const GAP_SIGNAL = /subscriber connection lost|ws connection lost/;

interface EventState {
  p?: Extract<LedgerRecord, { k: 'p' }>;
  acked: boolean;
  failed?: Extract<LedgerRecord, { k: 'f' }>;
  calls: Map<string, Extract<LedgerRecord, { k: 'h' }>[]>;
  dead: Set<string>;
}

/**
 * Reconciles a run's ledger against the delivery guarantees of SEMANTICS.md
 * and attributes each anomaly to the fault window it falls in. Pure: the same
 * input gives the same classification. Verdict rules:
 * - no unexpected delivery, ever;
 * - `aof`: no acknowledged event lost; `none`: a loss only inside a
 *   `redis-kill` window in which some process logged that its consumer group
 *   was missing (the bus noticed and said so), never silent;
 * - duplicates only inside a fault window (plus margins), and each with the
 *   same event id as the first delivery (removable by the idempotency middleware);
 * - no process exit that no fault caused (memory-pressure targets excepted).
 */
export function classify(input: ClassifyInput): Classification {
  const windows = [...input.faults].sort((a, b) => a.start - b.start);
  // the latest fault that started (less the margin) before t and whose margin after its heal covers t
  const windowOf = (t: number) =>
    windows.findLast((w) => t >= w.start - input.beforeMs && t <= w.end + input.afterMs);
  const perFault = windows.map((w) => ({ label: faultLabel(w), window: w, counts: zero() }));
  const steady = { label: 'none', counts: zero() };
  const bucket = (t: number, strict: boolean) => {
    const w = strict ? windows.find((x) => t >= x.start && t <= x.end) : windowOf(t);
    return w ? perFault[windows.indexOf(w)]! : steady;
  };
  const totals = zero();
  const anomalies: Anomaly[] = [];
  // publish counts go to the fault active at publish time; anomalies to the window with its margins
  const add = (field: keyof Counts, t: number, n = 1) => {
    totals[field] += n;
    bucket(t, field === 'published' || field === 'acknowledged' || field === 'failed').counts[field] += n;
  };
  const note = (a: Omit<Anomaly, 'fault'>) => {
    const w = windowOf(a.t);
    anomalies.push({ ...a, fault: w ? faultLabel(w) : 'none' });
  };

  const events = new Map<string, EventState>();
  const state = (key: string) => {
    let s = events.get(key);
    if (!s) {
      s = { acked: false, calls: new Map(), dead: new Set() };
      events.set(key, s);
    }
    return s;
  };
  const logs: Extract<LedgerRecord, { k: 'log' }>[] = [];
  for (const r of input.records) {
    if (r.k === 'log') logs.push(r);
    else if (r.k === 'p') state(r.key).p = r;
    else if (r.k === 'a') state(r.key).acked = true;
    else if (r.k === 'd') state(r.key).dead.add(r.sub);
    else if (r.k === 'f') state(r.key).failed = r;
    else if (r.k === 'h') {
      const s = state(r.key);
      const list = s.calls.get(r.sub) ?? [];
      list.push(r);
      s.calls.set(r.sub, list);
    }
  }
  for (const d of input.deadLetters) state(d.key).dead.add(d.sub);
  const expectedOf = (producer: string): ReadonlySet<string> =>
    new Set(typeof input.expectedSubs === 'function' ? input.expectedSubs(producer) : input.expectedSubs);
  const wipeSignalled = (w: FaultWindow | undefined) =>
    w !== undefined &&
    w.name === 'redis-kill' &&
    logs.some((l) => WIPE_SIGNAL.test(l.msg) && l.t >= w.start && l.t <= w.end + input.afterMs);

  for (const [key, s] of events) {
    if (!s.p) {
      for (const [sub, calls] of s.calls)
        for (const c of calls) {
          add('unexpected', c.t);
          note({ kind: 'unexpected', key, sub, t: c.t, allowed: false, detail: 'no publish of this key' });
        }
      continue;
    }
    const t = s.p.t;
    const expected = expectedOf(s.p.node);
    add('published', t);
    if (s.acked) add('acknowledged', t);
    else if (s.failed) add('failed', t);
    for (const [sub, calls] of s.calls)
      if (!expected.has(sub)) {
        add('unexpected', calls[0]!.t, calls.length);
        note({
          kind: 'unexpected',
          key,
          sub,
          t: calls[0]!.t,
          allowed: false,
          detail: 'unknown subscription set',
        });
      }
    for (const sub of expected) {
      const mode = input.atMostOnce?.(s.p.node, sub) ?? false;
      const atMostOnce = mode !== false;
      const ok = (s.calls.get(sub) ?? []).filter((c) => c.ok);
      if (s.p.poison && ok.length > 0) {
        add('unexpected', ok[0]!.t);
        note({ kind: 'unexpected', key, sub, t: ok[0]!.t, allowed: false, detail: 'poison event handled' });
        continue;
      }
      if (ok.length > 0 && !s.acked && s.failed?.stored === 'none') {
        add('unexpected', ok[0]!.t);
        note({
          kind: 'unexpected',
          key,
          sub,
          t: ok[0]!.t,
          allowed: false,
          detail: 'publish said stored: none',
        });
      }
      if (ok.length === 0 && s.dead.has(sub)) add('deadLettered', t);
      else if (ok.length === 0 && s.acked) {
        const w = windowOf(t);
        add('lost', t);
        if (atMostOnce) {
          const allowed = mode === true || w !== undefined;
          if (allowed) add('lostAtMostOnce', t);
          const gap =
            w !== undefined &&
            logs.some((l) => GAP_SIGNAL.test(l.msg) && l.t >= w.start && l.t <= w.end + input.afterMs);
          // a killed subscriber cannot log its gap: the kill itself explains it
          const killed = w !== undefined && w.name === 'kill-consumer' && sub.endsWith(`:${w.target}`);
          note({
            kind: 'lost',
            key,
            sub,
            t,
            allowed,
            detail: allowed
              ? `at-most-once, ${gap ? 'gap logged' : killed ? 'subscriber killed' : 'no gap logged'}`
              : 'at-most-once, but outside any fault window',
          });
          continue;
        }
        const allowed = input.persistence === 'none' && wipeSignalled(w);
        if (allowed) add('lostSignalled', t);
        note({
          kind: 'lost',
          key,
          sub,
          t,
          allowed,
          detail: s.p.poison ? 'poison event not dead-lettered' : '',
        });
      }
      for (let i = 1; i < ok.length; i++) {
        const c = ok[i]!;
        add('duplicated', c.t);
        const w = windowOf(c.t) ?? windowOf(t);
        const sameId = c.id === ok[0]!.id;
        anomalies.push({
          kind: sameId ? 'duplicate' : 'duplicate-new-id',
          key,
          sub,
          t: c.t,
          fault: w ? faultLabel(w) : 'none',
          allowed: w !== undefined && sameId && !atMostOnce,
          detail: [
            `call ${i + 1} on ${c.node} attempt ${c.att}`,
            sameId ? '' : `, id ${c.id} != ${ok[0]!.id}`,
            // a redelivery counts attempts; two first attempts mean a second copy of the event was stored
            // (not the order in time: a paused member can run its attempt 1 after another member's attempt 2)
            c.att === 1 && ok.filter((x) => x.att === 1).length > 1 ? ', attempt 1 again: stored twice' : '',
            atMostOnce ? ' (at-most-once)' : '',
          ].join(''),
        });
      }
    }
  }
  for (const e of input.exits ?? []) {
    const w = windows.find(
      (x) => x.name === 'memory-pressure' && x.target === e.node && e.t >= x.start && e.t <= x.end + 1000,
    );
    anomalies.push({
      kind: 'exit',
      key: e.node,
      t: e.t,
      fault: w ? faultLabel(w) : windowOf(e.t) ? faultLabel(windowOf(e.t)!) : 'none',
      allowed: w !== undefined,
      detail: `exit code ${e.code} signal ${e.signal}`,
    });
  }

  const reasons: string[] = [];
  const count = (kind: AnomalyKind, allowed = false) =>
    anomalies.filter((a) => a.kind === kind && a.allowed === allowed).length;
  if (totals.acknowledged === 0) reasons.push('no event was acknowledged: the run did no work');
  const lostAtMostOnce = anomalies.filter(
    (a) => a.kind === 'lost' && !a.allowed && a.detail?.startsWith('at-most-once'),
  ).length;
  if (lostAtMostOnce > 0)
    reasons.push(`${lostAtMostOnce} at-most-once (WS broadcast) events lost outside any fault window`);
  if (count('lost') - lostAtMostOnce > 0)
    reasons.push(
      input.persistence === 'aof'
        ? `${count('lost') - lostAtMostOnce} acknowledged events lost with AOF appendfsync always (must be 0)`
        : `${count('lost') - lostAtMostOnce} acknowledged events lost silently (outside a signalled Redis data wipe)`,
    );
  if (totals.unexpected > 0) reasons.push(`${totals.unexpected} unexpected deliveries`);
  const outside = anomalies.filter((a) => a.kind === 'duplicate' && !a.allowed && a.fault === 'none').length;
  if (outside > 0) reasons.push(`${outside} duplicates outside any fault window`);
  const twice = anomalies.filter((a) => a.kind === 'duplicate' && !a.allowed && a.fault !== 'none').length;
  if (twice > 0) reasons.push(`${twice} duplicates of at-most-once (pub/sub, WS broadcast) events`);
  const newId = anomalies.filter((a) => a.kind === 'duplicate-new-id').length;
  if (newId > 0) reasons.push(`${newId} duplicates with a different event id (not removable by id)`);
  if (count('exit') > 0) reasons.push(`${count('exit')} process exits no fault caused`);
  anomalies.sort((a, b) => a.t - b.t);
  return {
    totals,
    perFault: [...perFault, steady],
    anomalies,
    verdict: { pass: reasons.length === 0, reasons },
  };
}
