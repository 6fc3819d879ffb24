import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@qe/test-utils';

/** A throwaway three-master Redis Cluster on the given ports (this package's range is 7300-7349). */
export interface TestCluster {
  nodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

function cli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', timeout: 10_000 });
}

/** The cluster's servers and its `cluster_state:ok` can take a while on a busy machine. */
const until = (ok: () => boolean, what: string) => waitFor(ok, what, 15_000);

/** Starts the servers (data in a temp dir), joins them into a cluster, waits for `cluster_state:ok`. */
export async function startCluster(ports: readonly number[]): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'qe-broker-cluster-'));
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await Promise.all(
      procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : undefined)),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      const p = spawn(
        '/usr/bin/redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--cluster-node-timeout',
          '2000',
          '--dir',
          dir,
          '--save',
          '',
          '--appendonly',
          'no',
        ],
        { stdio: 'ignore' },
      );
      procs.push(p);
    }
    for (const port of ports)
      await until(() => {
        try {
          return cli(port, 'PING').trim() === 'PONG';
        } catch {
          return false;
        }
      }, `redis-server on ${port}`);
    execFileSync(
      'redis-cli',
      ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'],
      {
        stdio: 'ignore',
        timeout: 20_000,
      },
    );
    for (const port of ports)
      await until(() => cli(port, 'CLUSTER', 'INFO').includes('cluster_state:ok'), `cluster on ${port}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes: ports.map((port) => ({ host: '127.0.0.1', port })), stop };
}
