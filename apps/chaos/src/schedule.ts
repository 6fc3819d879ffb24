import type { Fault, PlannedFault, Topology } from './faults/index.js';
import { createRng } from './rng.js';

export interface ScheduleOptions {
  seed: number;
  /** Length of the load; faults end before `durationMs - cooldownMs`. */
  durationMs: number;
  faults: readonly Pick<Fault, 'name' | 'targets' | 'durationMs' | 'param'>[];
  topology: Topology;
  /** Steady load before the first fault (the baseline). Default 8 s. */
  warmupMs?: number;
  /** Steady load after the last heal (recovery is measured here). Default 10 s. */
  cooldownMs?: number;
  /** Range of quiet time between one heal and the next fault. Default 2-6 s. */
  gapMs?: readonly [number, number];
}

/**
 * Draws a fault schedule: after the warm-up, faults one at a time (each healed
 * before the next, so every anomaly has one cause), separated by quiet gaps,
 * each a fault, a target, a duration and a parameter drawn from the seed.
 * Pure: the same options give the same schedule, which is how a failing run is
 * reproduced (`--seed`). Faults with no target in the topology are skipped.
 */
export function buildSchedule(o: ScheduleOptions): PlannedFault[] {
  const rng = createRng(o.seed);
  const warmup = o.warmupMs ?? 8000;
  const end = o.durationMs - (o.cooldownMs ?? 10_000);
  const [gapLo, gapHi] = o.gapMs ?? [2000, 6000];
  const usable = o.faults
    .map((f) => ({ f, targets: f.targets(o.topology) }))
    .filter((x) => x.targets.length > 0);
  const out: PlannedFault[] = [];
  if (usable.length === 0) return out;
  let at = warmup;
  for (;;) {
    const { f, targets } = rng.pick(usable);
    const target = rng.pick(targets);
    const durationMs = rng.int(f.durationMs[0], f.durationMs[1]);
    const param = f.param ? f.param(rng) : 0;
    const gap = rng.int(gapLo, gapHi);
    if (at + durationMs > end) break;
    out.push({ index: out.length, atMs: at, fault: f.name, target, durationMs, param });
    at += durationMs + gap;
  }
  return out;
}
