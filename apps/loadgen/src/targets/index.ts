import { bullmqTarget } from './bullmq.js';
import { httpTarget, wsTarget } from './gateways.js';
import { memoryTarget } from './memory.js';
import { rawRedisTarget } from './raw-redis.js';
import { redisTarget } from './redis.js';
import type { Target } from './target.js';

const TARGETS: Record<string, Target> = {
  memory: memoryTarget,
  redis: redisTarget,
  'raw-redis': rawRedisTarget,
  bullmq: bullmqTarget,
  ws: wsTarget,
  http: httpTarget,
};

/** The names `--target` accepts. */
export function targetNames(): string[] {
  return Object.keys(TARGETS);
}

/** The target called `name`; throws naming the accepted names otherwise. */
export function targetByName(name: string): Target {
  const t = TARGETS[name];
  if (!t) throw new Error(`unknown target ${JSON.stringify(name)} (accepted: ${targetNames().join(', ')})`);
  return t;
}
