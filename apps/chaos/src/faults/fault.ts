import type { Rng } from '../rng.js';

/** The processes and servers of a run, by name. The same for a given set of options, so schedules are reproducible. */
export interface Topology {
  /** Producer processes (`p0`, `p1`). */
  producers: readonly string[];
  /** Consumer processes (`g0`, `g1` in group `workers`; `b0` a broadcast subscriber). */
  consumers: readonly string[];
  /** `aof` or `none`: what a Redis kill costs. */
  persistence: 'aof' | 'none';
  /** Whether a 3+3 Redis Cluster runs too (its masters are `cluster:<port>`). */
  cluster: boolean;
  /** Broker processes (`--broker`: `broker`); its WebSocket clients are among the producers and consumers. */
  brokers?: readonly string[];
}

/** A command a child process understands (sent as one JSON line on its stdin). */
export type ChildCommand =
  | { cmd: 'slow'; ms: number }
  | { cmd: 'poison'; count: number }
  | { cmd: 'clock'; offsetMs: number }
  | { cmd: 'pressure'; on: boolean }
  | { cmd: 'stop' };

/** One producer or consumer process as a fault sees it. */
export interface ChildControl {
  readonly name: string;
  /** Sends a signal to the current process, by PID. SIGKILL marks the exit as caused by a fault. */
  signal(sig: NodeJS.Signals): void;
  /** Starts a new incarnation (after a kill); resolves when it is ready. */
  restart(): Promise<void>;
  command(c: ChildCommand): void;
}

/** The single Redis node (behind the proxy) as a fault sees it. */
export interface RedisControl {
  kill(): Promise<void>;
  restart(): Promise<void>;
  /** A command on a direct connection (not through the proxy). */
  call(...args: (string | number)[]): Promise<unknown>;
}

/** The 3+3 Cluster, when the run has one. Shard `i` (0..2) is the master serving slot `i * 5461`, whichever node that is now. */
export interface ClusterControl {
  /** `CLUSTER FAILOVER` on a replica of shard `i`'s master; resolves once the replica reports itself master. Returns `old->new` ports. */
  failover(shard: number): Promise<string>;
  /** SIGKILL of shard `i`'s master (its replica takes over after the node timeout); the heal restarts it (it rejoins as a replica). */
  killMaster(shard: number): Promise<() => Promise<void>>;
}

/** What a fault may touch: a narrow context, not the whole run. */
export interface FaultWorld {
  child(name: string): ChildControl;
  readonly redis: RedisControl;
  /** The TCP proxy every child's Redis connection goes through. */
  readonly proxy: { cut(): void; stall(): void; resume(): void };
  readonly cluster?: ClusterControl;
}

/** One entry of a fault schedule: what, where, when (ms after the load started) and for how long. */
export interface PlannedFault {
  index: number;
  atMs: number;
  fault: string;
  target: string;
  durationMs: number;
  /** A fault-specific number drawn from the seed (a delay, a count, a clock offset); 0 when unused. */
  param: number;
}

/** Undoes a fault (restart, SIGCONT, resume...). Called once, `durationMs` after the injection. */
export type Heal = () => Promise<void>;

/**
 * A fault: a small module with a name, the targets it can hit in a topology,
 * how long it lasts, and `inject`, which does it and returns the heal. To add
 * one, write a module exporting a `Fault` and list it in `faults/index.ts`;
 * the schedule, the CLI's `--faults`, the ledger and the report pick it up.
 */
export interface Fault {
  readonly name: string;
  /** One line for `--help` and the README. */
  readonly summary: string;
  /** The names it may hit in this topology; empty when it does not apply (then it is never scheduled). */
  targets(t: Topology): readonly string[];
  /** Range of how long it lasts before its heal, ms (both 0 for an instant fault). */
  readonly durationMs: readonly [number, number];
  /** Draws the fault's parameter from the schedule's generator (only the schedule calls it). */
  param?(rng: Rng): number;
  inject(world: FaultWorld, plan: PlannedFault): Promise<Heal>;
}

export const noHeal: Heal = async () => {};
