import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { type RedisProcess, startRedis } from './redis.js';

/** A local Redis Cluster: `masters` masters with `replicas` replicas each, on `base`.. (default 3 + 3). */
export interface LocalCluster {
  nodes: { host: string; port: number }[];
  servers: RedisProcess[];
  /** The server process serving `port`. */
  server(port: number): RedisProcess;
  /** The port of the master serving `key`'s slot, and of its replicas. */
  owners(key: string): Promise<{ master: number; replicas: number[] }>;
  stop(): Promise<void>;
}

export interface ClusterShape {
  masters?: number;
  replicas?: number;
  /** Extra redis-server arguments for every node. */
  args?: string[];
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

/**
 * Forms a cluster by hand (redis-cli --cluster create wants at least 3
 * masters): slots split evenly over the masters, every node meets the first,
 * replicas replicate their master.
 */
async function formByHand(ports: number[], masters: number, replicas: number): Promise<void> {
  const conns = ports.map((port) => new Redis({ port, lazyConnect: true }));
  try {
    await Promise.all(conns.map((c) => c.connect()));
    const ids = await Promise.all(conns.map(async (c) => String(await c.cluster('MYID'))));
    const per = Math.floor(16384 / masters);
    for (let m = 0; m < masters; m++) {
      const lo = m * per;
      const hi = m === masters - 1 ? 16383 : lo + per - 1;
      await conns[m]!.call('CLUSTER', 'ADDSLOTSRANGE', lo, hi);
    }
    for (let i = 1; i < ports.length; i++) await conns[i]!.cluster('MEET', '127.0.0.1', ports[0]!);
    // a replica can replicate only a master it already knows
    for (let m = 0; m < masters; m++)
      for (let r = 0; r < replicas; r++) {
        const c = conns[masters + m * replicas + r]!;
        const deadline = Date.now() + 20_000;
        for (;;) {
          try {
            await c.cluster('REPLICATE', ids[m]!);
            break;
          } catch (err) {
            if (Date.now() > deadline) throw err;
            await new Promise((res) => setTimeout(res, 200));
          }
        }
      }
  } finally {
    for (const c of conns) c.disconnect();
  }
}

/**
 * Starts a local Redis Cluster of `startRedis` processes on ports `base`..
 * (cluster bus on port + 10000), forms it (redis-cli for 3+ masters with 0 or
 * 1 replica, by hand otherwise) and resolves once every node reports
 * `cluster_state:ok` and every replica's link is up. Stop it with `stop()`
 * (SIGKILL by PID); `QE_KEEP_REDIS_DIRS=1` keeps the data directories.
 */
export async function startCluster(base: number, shape: ClusterShape = {}): Promise<LocalCluster> {
  const masters = shape.masters ?? 3;
  const replicas = shape.replicas ?? 1;
  const ports = Array.from({ length: masters * (1 + replicas) }, (_, i) => base + i);
  const servers = await Promise.all(
    ports.map((port) =>
      startRedis(port, [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '1000',
        // a node that never met another does not know its own address and reports it as '' in
        // CLUSTER SLOTS (a one-master Cluster): clients then cannot connect
        '--cluster-announce-ip',
        '127.0.0.1',
        '--appendonly',
        'no',
        // replicas must be in sync before a failover test kills their master
        '--repl-diskless-sync-delay',
        '0',
        ...(shape.args ?? []),
      ]),
    ),
  );
  const stopAll = async () => {
    await Promise.all(servers.map((s) => s.stop()));
    if (!process.env.QE_KEEP_REDIS_DIRS) for (const s of servers) s.cleanup();
  };
  try {
    if (masters >= 3 && (replicas === 1 || replicas === 0))
      execFileSync(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...ports.map((p) => `127.0.0.1:${p}`),
          '--cluster-replicas',
          String(replicas),
          '--cluster-yes',
        ],
        { stdio: 'ignore' },
      );
    else await formByHand(ports, masters, replicas);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = await Promise.all(ports.map(clusterOk));
      if (states.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('local cluster did not reach cluster_state:ok');
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  const owners = async (key: string) => {
    // any live node answers; some may be nodes a test killed
    let lastErr: unknown;
    for (const port of ports) {
      const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => {});
      try {
        await r.connect();
        const slot = Number(await r.cluster('KEYSLOT', key));
        const slots = (await r.cluster('SLOTS')) as unknown as [number, number, ...[string, number][]][];
        const row = slots.find(([lo, hi]) => slot >= lo && slot <= hi)!;
        const [, , master, ...reps] = row;
        return { master: master![1], replicas: reps.map((x) => x[1]) };
      } catch (err) {
        lastErr = err;
      } finally {
        r.disconnect();
      }
    }
    throw lastErr;
  };
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    servers,
    server: (port) => servers[ports.indexOf(port)]!,
    owners,
    stop: stopAll,
  };
}
