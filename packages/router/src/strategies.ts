import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  checkFunctionSetting,
  checkIntSetting,
  type GroupBalancer,
  type GroupMember,
  type LoadBalancerConfig,
} from '@qe/core';

/**
 * A load-balancing strategy: core's `GroupBalancer` (pick a member index for
 * an event) plus optional feedback. Strategies are plain objects; write your
 * own by implementing `pick` (for example weighted by observed latency, or by
 * a capability the event needs).
 */
export interface Strategy extends GroupBalancer {
  /** Called when a member finished an event (for adaptive strategies). */
  onResult?(memberId: string, latencyMs: number, ok: boolean): void;
}

export type StrategyName = 'round_robin' | 'least_connections' | 'weighted' | 'hash_based';

/** Each member in turn. */
export function roundRobin(): Strategy {
  const next = new Map<string, number>();
  return {
    name: 'round_robin',
    pick(_e, members, key) {
      const i = next.get(key) ?? 0;
      next.set(key, (i + 1) % Math.max(1, members.length));
      return i % members.length;
    },
  };
}

/** The member with the fewest events in flight (ties rotate, so equal members share). */
export function leastConnections(): Strategy {
  let rr = 0;
  return {
    name: 'least_connections',
    pick(_e, members) {
      let best = -1;
      let bestLoad = Number.POSITIVE_INFINITY;
      const start = rr++ % members.length;
      for (let k = 0; k < members.length; k++) {
        const i = (start + k) % members.length;
        const load = members[i]!.inFlight;
        if (load < bestLoad) {
          best = i;
          bestLoad = load;
        }
      }
      return best;
    },
  };
}

/**
 * Smooth weighted round-robin: over any window, member `m` gets
 * weight(m)/sum(weights) of the events, interleaved rather than in runs.
 * Weights are a `Map` from member id (spec 000), changeable at run time with
 * `setWeight`; members without a weight get `defaultWeight`.
 */
export function weighted(
  weights: Map<string, number> = new Map(),
  defaultWeight = 1,
): Strategy & { setWeight(memberId: string, weight: number): void; weights(): Map<string, number> } {
  const check = (id: string, w: number) => {
    if (!Number.isFinite(w) || w < 0) throw new ConfigError(`weights.${id}`, 'must be a number >= 0');
  };
  if (!(weights instanceof Map)) throw new ConfigError('weights', 'must be a Map from member id to weight');
  if (!Number.isFinite(defaultWeight) || defaultWeight < 0)
    throw new ConfigError('defaultWeight', 'must be a number >= 0');
  for (const [id, w] of weights) check(id, w);
  const current = new Map<string, number>();
  return {
    name: 'weighted',
    setWeight(id, w) {
      check(id, w);
      weights.set(id, w);
    },
    weights: () => new Map(weights),
    pick(_e, members) {
      let total = 0;
      let best = 0;
      let bestScore = Number.NEGATIVE_INFINITY;
      for (let i = 0; i < members.length; i++) {
        const id = members[i]!.id;
        const w = weights.get(id) ?? defaultWeight;
        total += w;
        const score = (current.get(id) ?? 0) + w;
        current.set(id, score);
        if (score > bestScore) {
          bestScore = score;
          best = i;
        }
      }
      const chosen = members[best]!.id;
      current.set(chosen, (current.get(chosen) ?? 0) - total);
      return best;
    },
  };
}

function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16; // final mix so neighbouring strings spread over the ring
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

/**
 * Consistent hashing on `agentId` (or `key(event)`) with `virtualNodes`
 * points per member on a ring: while membership is stable a key always goes
 * to the same member, and when one member of N leaves only its ~1/N of the
 * keys move.
 */
export function hashBased(
  options: { key?: (event: AgentEvent) => string; virtualNodes?: number } = {},
): Strategy & { memberFor(key: string, members: readonly GroupMember[]): number } {
  assertKnownKeys(options, ['key', 'virtualNodes']);
  checkIntSetting('virtualNodes', options.virtualNodes, 1, 10_000);
  checkFunctionSetting('key', options.key);
  const vnodes = options.virtualNodes ?? 160;
  const keyOf = options.key ?? ((e: AgentEvent) => e.agentId);
  let ringFor = '';
  let ring: { point: number; member: string }[] = [];
  const build = (members: readonly GroupMember[]) => {
    const ids = members.map((m) => m.id).sort();
    const sig = ids.join('\u0000');
    if (sig === ringFor) return;
    ring = [];
    for (const id of ids)
      for (let v = 0; v < vnodes; v++) ring.push({ point: hash32(`${id}#${v}`), member: id });
    ring.sort((a, b) => a.point - b.point);
    ringFor = sig;
  };
  const memberFor = (key: string, members: readonly GroupMember[]) => {
    build(members);
    const h = hash32(key);
    let lo = 0;
    let hi = ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ring[mid]!.point < h) lo = mid + 1;
      else hi = mid;
    }
    const id = ring[lo % ring.length]!.member;
    return members.findIndex((m) => m.id === id);
  };
  return { name: 'hash_based', memberFor, pick: (e, members) => memberFor(keyOf(e), members) };
}

/** Spec 000's `loadBalancer.strategy` names to strategies. */
export function createStrategy(
  name: StrategyName,
  options: { weights?: Map<string, number> } = {},
): Strategy {
  assertKnownKeys(options, ['weights']);
  if (options.weights !== undefined && name !== 'weighted')
    throw new ConfigError('loadBalancer.weights', `only the weighted strategy reads weights, not ${name}`);
  switch (name) {
    case 'round_robin':
      return roundRobin();
    case 'least_connections':
      return leastConnections();
    case 'weighted':
      return weighted(options.weights);
    case 'hash_based':
      return hashBased();
    default:
      throw new ConfigError(
        'loadBalancer.strategy',
        `unknown strategy ${JSON.stringify(name)}: round_robin, least_connections, weighted or hash_based`,
      );
  }
}

/** Spec 000's `loadBalancer` settings this package has no use for, and what to use instead. */
const UNSUPPORTED_LB: Readonly<Record<string, string>> = {
  healthCheckInterval:
    'members are checked by heartbeat: set RoutedTransport heartbeatMs and memberTtlMs instead',
  maxConnections:
    "a member takes what its subscriptions can run: set the subscription's maxConcurrency (and the bus's backpressure.maxQueueSize) instead",
};

/**
 * The strategy spec 000's `loadBalancer` config asks for:
 * `strategyFromConfig({ strategy: 'weighted', weights })`. `healthCheckInterval`
 * and `maxConnections` are refused with a `CONFIG` error saying what to set
 * instead, as is any other key; they used to be accepted and ignored.
 */
export function strategyFromConfig(lb: LoadBalancerConfig | undefined): Strategy {
  if (lb === undefined) return roundRobin();
  assertKnownKeys(lb, ['strategy', 'weights'], 'loadBalancer.', UNSUPPORTED_LB);
  return createStrategy(lb.strategy, lb.weights === undefined ? {} : { weights: lb.weights });
}
