import { createRedisTransport } from '@qe/redis-transport';
import { Cluster } from 'ioredis';
import { busTarget } from './bus.js';
import type { Target, TargetContext } from './target.js';

/** `redis-cluster` or `redis-cluster:N` (a local Cluster of N masters that the run starts for itself). */
export const CLUSTER_TARGET = /^redis-cluster(?::([1-9]))?$/;

function nodesOf(ctx: TargetContext) {
  if (!ctx.redisCluster || ctx.redisCluster.length === 0)
    throw new Error('the redis-cluster target needs Cluster nodes: --redis-cluster host:port[,host:port...]');
  return ctx.redisCluster;
}

/** Deletes the run's keys on every master of the Cluster. */
async function deleteClusterKeys(ctx: TargetContext): Promise<void> {
  const c = new Cluster(nodesOf(ctx), { lazyConnect: true, redisOptions: { maxRetriesPerRequest: 3 } });
  await c.connect();
  try {
    for (const node of c.nodes('master')) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${ctx.keyPrefix}*`, 'COUNT', 1000);
        cursor = next;
        // one slot per call: keys of different slots cannot go in one UNLINK
        for (const k of keys) await c.unlink(k);
      } while (cursor !== '0');
    }
  } finally {
    c.disconnect();
  }
}

/**
 * The bus on Redis Cluster (`@qe/redis-transport` with `cluster`, default
 * partitions): as the `redis` target, every producer and the consumer are
 * their own node in their own process. `redis-cluster:N` runs against a local
 * Cluster of N masters (no replicas) that the coordinator starts for this
 * target and stops after it; plain `redis-cluster` against `--redis-cluster`.
 */
export function redisClusterTarget(name: string): Target {
  return {
    ...busTarget({
      name,
      inProcess: false,
      transport: (ctx) =>
        createRedisTransport({ cluster: { nodes: nodesOf(ctx) }, keyPrefix: ctx.keyPrefix }),
      cleanup: deleteClusterKeys,
    }),
  };
}
