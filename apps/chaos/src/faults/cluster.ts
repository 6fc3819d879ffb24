import type { Fault } from './fault.js';

const shards = (cluster: boolean) => (cluster ? ['shard-0', 'shard-1', 'shard-2'] : []);
const shardOf = (target: string) => Number(target.slice('shard-'.length));

/** A manual failover (`CLUSTER FAILOVER` on a replica): the coordinated hand-over of a shard. Instant once done. */
export const clusterFailover: Fault = {
  name: 'cluster-failover',
  summary: 'CLUSTER FAILOVER: a replica of one shard takes over from its master (Cluster runs only)',
  targets: (t) => shards(t.cluster),
  durationMs: [0, 0],
  async inject(world, plan) {
    await world.cluster!.failover(shardOf(plan.target));
    return async () => {};
  },
};

/** SIGKILL of a shard's master: an automatic failover after the node timeout; the killed node rejoins as a replica. */
export const clusterMasterKill: Fault = {
  name: 'cluster-master-kill',
  summary:
    "SIGKILL one shard's master; its replica is promoted; restart the old master after the duration (Cluster runs only)",
  targets: (t) => shards(t.cluster),
  durationMs: [2000, 5000],
  async inject(world, plan) {
    return world.cluster!.killMaster(shardOf(plan.target));
  },
};
