import type { AgentEvent } from './event.js';

/** What a balancer knows of one member of a group. */
export interface GroupMember {
  /** Stable id (the member's node id, or node id + binding). */
  readonly id: string;
  /** Deliveries handed to it and not yet settled. */
  readonly inFlight: number;
}

/**
 * Chooses which member of a group handles an event. Implementations are plain
 * objects; `@qe/router` ships round-robin, least-connections, weighted and
 * consistent-hash strategies. `pick` is called once per event on the hot path
 * and must not allocate needlessly; it returns an index into `members`
 * (which is never empty).
 */
export interface GroupBalancer {
  readonly name: string;
  pick(event: AgentEvent, members: readonly GroupMember[], groupKey: string): number;
}

/** The default: each member in turn, per group. */
export function createRoundRobinBalancer(): GroupBalancer {
  const next = new Map<string, number>();
  return {
    name: 'round_robin',
    pick(_event, members, groupKey) {
      const i = next.get(groupKey) ?? 0;
      next.set(groupKey, i + 1 >= members.length ? 0 : i + 1);
      return i % members.length;
    },
  };
}
