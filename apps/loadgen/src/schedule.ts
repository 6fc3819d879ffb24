import { epochNow, LatencyHistogram } from '@qe/core';

/** One event to send: its sequence number and the epoch ms it was due. */
export interface Due {
  seq: number;
  /** Open loop: the clock's schedule; max mode: the moment it was issued. */
  intendedAt: number;
}

/** How `drive` schedules sends. */
export interface DriveOptions {
  /** Events per second; 0 = max-throughput mode (as fast as `maxInFlight` allows). */
  rate: number;
  durationMs: number;
  /** Sends not yet resolved, at most. */
  maxInFlight: number;
  /** Events handed to one `send` call at most. */
  maxBatch: number;
  /**
   * Resolves with the sequence numbers the target refused (usually none);
   * rejects when it refused the whole group.
   */
  send: (group: Due[]) => Promise<readonly number[]>;
  /** Stop early (Ctrl-C). */
  signal?: AbortSignal;
}

/** What `drive` sent, what was refused, and how late the sender ran. */
export interface DriveResult {
  attempted: number;
  failed: number[];
  /** Epoch ms of the first and last scheduled send. */
  startedAt: number;
  endedAt: number;
  /** The worst lateness of an actual send behind its schedule, ms (open loop). */
  maxLagMs: number;
  /**
   * How late each event was actually handed to the target behind its due time
   * (timer granularity, a busy sender): part of every latency by design.
   */
  lateness: LatencyHistogram;
  /** Sends per wall-clock second since `startedAt`. */
  perSecond: number[];
  errors: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const parked = new Int32Array(new SharedArrayBuffer(4));

/**
 * Waits until about `ms` from now. Node timers wake 1-2 ms late, which an
 * open-loop sender would count as latency of the system under test; so gaps
 * under 2 ms are slept with `Atomics.wait` (the thread sleeps in the kernel,
 * no spinning, I/O waits at most that long) and then the loop yields once.
 */
async function waitFor(ms: number): Promise<void> {
  if (ms >= 2) return sleep(ms - 1);
  if (ms > 0.02) Atomics.wait(parked, 0, 0, ms);
  return tick();
}
const tick = () => new Promise<void>((r) => setImmediate(r));

/**
 * Drives a load. Open loop (`rate > 0`): event `i` is due at `start + i/rate`,
 * whatever happened to earlier sends, and carries that due time, so a stall
 * in the target shows up as latency instead of silently slowing the sender
 * (no coordinated omission). When the target falls `maxInFlight` behind, the
 * sender waits, but the due times keep their schedule. Max mode (`rate = 0`):
 * keeps `maxInFlight` sends outstanding and stamps each with its issue time.
 * Sequence numbers are dense from 0, which the ledger relies on.
 */
export async function drive(o: DriveOptions): Promise<DriveResult> {
  const start = epochNow();
  const period = o.rate > 0 ? 1000 / o.rate : 0;
  const total = o.rate > 0 ? Math.floor((o.rate * o.durationMs) / 1000) : Number.POSITIVE_INFINITY;
  const deadline = start + o.durationMs;
  const perSecond: number[] = [];
  const failed: number[] = [];
  const errors: string[] = [];
  let next = 0;
  let inFlight = 0;
  let maxLag = 0;
  const lateness = new LatencyHistogram();
  let slot: (() => void) | null = null;
  const settle = (n: number) => {
    inFlight -= n;
    if (slot) {
      const s = slot;
      slot = null;
      s();
    }
  };
  while (next < total && !o.signal?.aborted) {
    const now = epochNow();
    if (o.rate === 0 && now >= deadline) break;
    if (inFlight >= o.maxInFlight) {
      await new Promise<void>((r) => (slot = r));
      continue;
    }
    let n: number;
    if (o.rate > 0) {
      const due = Math.min(total, Math.floor((now - start) / period) + 1);
      if (due <= next) {
        await waitFor(start + next * period - now);
        continue;
      }
      n = Math.min(due - next, o.maxBatch, o.maxInFlight - inFlight);
      const lag = now - (start + next * period);
      if (lag > maxLag) maxLag = lag;
    } else n = Math.min(o.maxBatch, o.maxInFlight - inFlight);
    const group: Due[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const seq = next + k;
      group[k] = { seq, intendedAt: o.rate > 0 ? start + seq * period : now };
      if (o.rate > 0) lateness.recordMs(now - group[k]!.intendedAt);
    }
    const sec = Math.floor((now - start) / 1000);
    while (perSecond.length <= sec) perSecond.push(0);
    perSecond[sec]! += n;
    next += n;
    inFlight += n;
    o.send(group).then(
      (refused) => {
        for (const seq of refused) failed.push(seq);
        settle(n);
      },
      (err: unknown) => {
        for (const d of group) failed.push(d.seq);
        if (errors.length < 20) errors.push(err instanceof Error ? err.message : String(err));
        settle(n);
      },
    );
    await tick();
  }
  while (inFlight > 0) await new Promise<void>((r) => (slot = r));
  return {
    attempted: next,
    failed,
    startedAt: start,
    endedAt: epochNow(),
    maxLagMs: maxLag,
    lateness,
    perSecond,
    errors,
  };
}
