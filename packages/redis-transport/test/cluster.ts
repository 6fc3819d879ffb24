import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { type RedisProcess, startRedis } from './redis-server.js';

/** A local Redis Cluster: 3 masters with a replica each, on `base`..`base+5`. */
export interface LocalCluster {
  nodes: { host: string; port: number }[];
  servers: RedisProcess[];
  /** The server process serving `port`. */
  server(port: number): RedisProcess;
  stop(): Promise<void>;
}

async function clusterOk(port: number): Promise<boolean> {
  const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    const info = await r.cluster('INFO');
    if (!/cluster_state:ok/.test(String(info))) return false;
    const repl = await r.info('replication');
    return /role:master/.test(repl) || /master_link_status:up/.test(repl);
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

export async function startCluster(base: number): Promise<LocalCluster> {
  const ports = Array.from({ length: 6 }, (_, i) => base + i);
  const servers = await Promise.all(
    ports.map((port) =>
      startRedis(port, [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '1000',
        '--appendonly',
        'no',
        // replicas must be in sync before a failover test kills their master
        '--repl-diskless-sync-delay',
        '0',
      ]),
    ),
  );
  execFileSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '1',
      '--cluster-yes',
    ],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    const states = await Promise.all(ports.map(clusterOk));
    if (states.every(Boolean)) break;
    if (Date.now() > deadline) throw new Error('local cluster did not reach cluster_state:ok');
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    servers,
    server: (port) => servers[ports.indexOf(port)]!,
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
      if (!process.env.QE_KEEP_REDIS_DIRS) for (const s of servers) s.cleanup();
    },
  };
}
