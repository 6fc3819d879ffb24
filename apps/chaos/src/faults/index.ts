import { clusterFailover, clusterMasterKill } from './cluster.js';
import type { Fault } from './fault.js';
import { clockJump, memoryPressure, poison, slowHandler } from './in-process.js';
import { connectionReset, networkStall } from './network.js';
import {
  killBroker,
  killConsumer,
  killProducer,
  pauseBroker,
  pauseConsumer,
  pauseProducer,
} from './process.js';
import { clientPause, redisKill } from './redis.js';

export type {
  ChildCommand,
  ChildControl,
  ClusterControl,
  Fault,
  FaultWorld,
  Heal,
  PlannedFault,
  RedisControl,
  Topology,
} from './fault.js';

/** Every fault the suite knows, in a fixed order (the schedule draws from this order, so it is part of the seed's meaning). */
export const FAULTS: readonly Fault[] = [
  killConsumer,
  killProducer,
  pauseConsumer,
  pauseProducer,
  redisKill,
  clientPause,
  connectionReset,
  networkStall,
  slowHandler,
  poison,
  clockJump,
  memoryPressure,
  clusterFailover,
  clusterMasterKill,
  // no targets without --broker, so appending them kept every other seed's schedule
  killBroker,
  pauseBroker,
];

/** The faults named (all when `names` is empty); throws naming an unknown one. */
export function selectFaults(names: readonly string[]): Fault[] {
  if (names.length === 0) return [...FAULTS];
  return names.map((n) => {
    const f = FAULTS.find((x) => x.name === n);
    if (!f) throw new Error(`unknown fault ${n}; known: ${FAULTS.map((x) => x.name).join(', ')}`);
    return f;
  });
}
