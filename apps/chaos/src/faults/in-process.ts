import type { Fault } from './fault.js';

/** Faults a child process injects into itself on command (stdin). */

/** Every handler call of one consumer waits `param` ms first, for the fault's duration (backlog, claims, timeouts). */
export const slowHandler: Fault = {
  name: 'slow-handler',
  summary: 'one consumer handler sleeps 100-1500 ms per call for a while',
  targets: (t) => t.consumers,
  durationMs: [3000, 8000],
  param: (rng) => rng.int(100, 1500),
  async inject(world, plan) {
    const c = world.child(plan.target);
    c.command({ cmd: 'slow', ms: plan.param });
    return async () => c.command({ cmd: 'slow', ms: 0 });
  },
};

/** One producer publishes `param` poison events: every handler throws on them, so they must end dead-lettered. */
export const poison: Fault = {
  name: 'poison',
  summary: 'a producer publishes 1-5 events every handler throws on (must be dead-lettered, never lost)',
  targets: (t) => t.producers,
  durationMs: [0, 0],
  param: (rng) => rng.int(1, 5),
  async inject(world, plan) {
    world.child(plan.target).command({ cmd: 'poison', count: plan.param });
    return async () => {};
  },
};

/** `Date.now()` of one process jumps by `param` ms (±1 min..2 h), for the fault's duration, then back. */
export const clockJump: Fault = {
  name: 'clock-jump',
  summary: "one process's Date.now() jumps 1 min-2 h forward or back for a while",
  targets: (t) => [...t.producers, ...t.consumers],
  durationMs: [3000, 10_000],
  param: (rng) => (rng.next() < 0.5 ? -1 : 1) * rng.int(60_000, 7_200_000),
  async inject(world, plan) {
    const c = world.child(plan.target);
    c.command({ cmd: 'clock', offsetMs: plan.param });
    return async () => c.command({ cmd: 'clock', offsetMs: 0 });
  },
};

/** One process fills its V8 heap to 60% of its old-space limit (children run with a 256 MB old space) and holds it. */
export const memoryPressure: Fault = {
  name: 'memory-pressure',
  summary: 'one process fills its heap to 60% of its 256 MB old-space limit and holds it for a while',
  targets: (t) => [...t.producers, ...t.consumers],
  durationMs: [3000, 8000],
  async inject(world, plan) {
    const c = world.child(plan.target);
    c.command({ cmd: 'pressure', on: true });
    return async () => c.command({ cmd: 'pressure', on: false });
  },
};
