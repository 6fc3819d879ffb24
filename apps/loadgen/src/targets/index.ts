import { bullmqTarget } from './bullmq.js';
import { httpTarget, wsTarget } from './gateways.js';
import { memoryTarget } from './memory.js';
import { rawRedisTarget } from './raw-redis.js';
import { redisTarget } from './redis.js';
import { CLUSTER_TARGET, redisClusterTarget } from './redis-cluster.js';
import type { Target } from './target.js';

const TARGETS: Record<string, Target> = {
  memory: memoryTarget,
  redis: redisTarget,
  'raw-redis': rawRedisTarget,
  bullmq: bullmqTarget,
  ws: wsTarget,
  http: httpTarget,
};

/** The names `--target` accepts (`redis-cluster:N`: a local Cluster of N masters, 1-9). */
export function targetNames(): string[] {
  return [...Object.keys(TARGETS), 'redis-cluster', 'redis-cluster:N'];
}

/** Whether `name` is a target (`redis-cluster:3` included). */
export function isTargetName(name: string): boolean {
  return name in TARGETS || CLUSTER_TARGET.test(name);
}

/** The target called `name`; throws naming the accepted names otherwise. */
export function targetByName(name: string): Target {
  if (CLUSTER_TARGET.test(name)) return redisClusterTarget(name);
  const t = TARGETS[name];
  if (!t) throw new Error(`unknown target ${JSON.stringify(name)} (accepted: ${targetNames().join(', ')})`);
  return t;
}
