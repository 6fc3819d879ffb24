import type { ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { epochNow } from '@qe/core';
import { type LocalCluster, type RedisProcess, startFixture, type TcpProxy } from '@qe/test-utils';
import { Redis } from 'ioredis';
import type { UnexpectedExit } from './classify.js';
import type { ChildCommand, ChildControl, ClusterControl, FaultWorld, RedisControl } from './faults/index.js';

const CHILD = new URL('./child.ts', import.meta.url);
/** The scripts of `--broker`: the broker itself, and its WebSocket clients. */
export const BROKER_CHILD = new URL('./broker-child.ts', import.meta.url);
export const WS_CHILD = new URL('./ws-child.ts', import.meta.url);
/** Old-space limit of every child (the memory-pressure fault fills 60% of it). */
const CHILD_HEAP_MB = 256;

/**
 * A key in each shard of a 3-master Cluster formed by redis-cli (slots
 * 0-5460, 5461-10922, 10923-16383): `b` hashes to slot 3300, `c` to 7365, `a` to 15495.
 */
const SHARD_SLOT_KEYS = ['b', 'c', 'a'] as const;

/** What every child of a run shares. */
export interface ChildEnv {
  dir: string;
  redisUrl: string;
  /** `pubsub`: the child's bus uses Redis pub/sub (at-most-once); `router`: @qe/router's RoutedTransport. Default Streams. */
  mode?: 'pubsub' | 'router';
  /** Set for the children of the Cluster: its seed nodes. */
  clusterNodes?: { host: string; port: number }[];
  keyPrefix: string;
  rate: number;
  claimIdleMs: number;
  /** For WebSocket clients (`ws-child.ts`): the broker's gateway, `ws://127.0.0.1:<port>/events`. */
  wsUrl?: string;
  /** More environment for the process (the broker's settings). */
  extra?: Record<string, string>;
}

/**
 * One producer or consumer process of the run, restartable. An exit that no
 * fault asked for (`signal('SIGKILL')`, `stop()`) is recorded as unexpected
 * and the process is started again, so a crash shows in the verdict and the
 * run carries on. Processes are signalled by PID only.
 */
export class ChildProc implements ChildControl {
  private inc = 0;
  private proc: ChildProcess | null = null;
  private faultKilled = false;
  private stopping = false;
  private readyWaiter: (() => void) | null = null;

  constructor(
    readonly name: string,
    readonly role: 'producer' | 'group' | 'broadcast' | 'broker',
    private readonly env: ChildEnv,
    private readonly onExit: (e: UnexpectedExit) => void,
    /** `child.ts` (a bus producer or consumer), `ws-child.ts` or `broker-child.ts`. */
    private readonly script: URL = CHILD,
  ) {}

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  start(): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      this.readyWaiter = resolve;
      setTimeout(() => reject(new Error(`${this.name} not ready within 60 s`)), 60_000).unref();
    });
    this.faultKilled = false;
    const proc = startFixture(this.script, [this.role, this.name, String(this.inc)], {
      stdin: 'pipe',
      env: {
        CHAOS_DIR: this.env.dir,
        CHAOS_REDIS_URL: this.env.redisUrl,
        CHAOS_MODE: this.env.mode,
        CHAOS_CLUSTER_NODES: this.env.clusterNodes ? JSON.stringify(this.env.clusterNodes) : undefined,
        CHAOS_PREFIX: this.env.keyPrefix,
        CHAOS_RATE: String(this.env.rate),
        CHAOS_CLAIM_IDLE_MS: String(this.env.claimIdleMs),
        NODE_OPTIONS: `--max-old-space-size=${CHILD_HEAP_MB}`,
        CHAOS_HEAP_MB: String(CHILD_HEAP_MB),
        CHAOS_WS_URL: this.env.wsUrl,
        ...this.env.extra,
      },
      onLine: (line) => this.onLine(line),
    });
    proc.stdin!.on('error', () => {});
    proc.once('exit', (code, signal) => {
      if (this.proc !== proc) return;
      if (this.stopping || this.faultKilled) return;
      this.onExit({ node: this.name, t: epochNow(), code, signal });
      // carry on with a new incarnation: the crash is in the verdict already
      this.inc++;
      setTimeout(() => void this.start().catch(() => {}), 500);
    });
    this.proc = proc;
    return ready;
  }

  private onLine(line: string): void {
    let msg: { ready?: boolean; mem?: { rss: number; heapUsed: number; heapLimit: number } };
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (msg.ready) this.readyWaiter?.();
    if (msg.mem)
      appendFileSync(
        join(this.env.dir, 'memory.jsonl'),
        `${JSON.stringify({ proc: this.name, t: epochNow(), ...msg.mem })}\n`,
      );
  }

  signal(sig: NodeJS.Signals): void {
    if (sig === 'SIGKILL') this.faultKilled = true;
    this.proc?.kill(sig);
  }

  async restart(): Promise<void> {
    this.inc++;
    await this.start();
  }

  command(c: ChildCommand): void {
    if (this.proc?.stdin?.writable) this.proc.stdin.write(`${JSON.stringify(c)}\n`);
  }

  /** Asks it to stop (flush, ack, exit); SIGKILL by PID after `timeoutMs`. */
  async stop(timeoutMs = 15_000): Promise<void> {
    const proc = this.proc;
    this.stopping = true;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGCONT');
    this.command({ cmd: 'stop' });
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** Synchronous last resort (process exit): SIGKILL by PID. */
  killNow(): void {
    this.stopping = true;
    try {
      this.proc?.kill('SIGKILL');
    } catch {}
  }
}

/** The single Redis node as faults see it, with a direct admin connection. */
export function redisControl(server: RedisProcess): RedisControl & { close(): void } {
  let admin: Redis | null = null;
  const conn = () => {
    if (!admin) {
      admin = new Redis({ port: server.port, maxRetriesPerRequest: 1, lazyConnect: false });
      admin.on('error', () => {});
    }
    return admin;
  };
  return {
    kill: () => server.stop('SIGKILL'),
    restart: () => server.restart(),
    call: (cmd, ...args) => conn().call(String(cmd), ...args.map(String)),
    close: () => admin?.disconnect(),
  };
}

export function faultWorld(
  children: ReadonlyMap<string, ChildProc>,
  redis: RedisControl,
  proxy: TcpProxy,
  cluster?: ClusterControl,
): FaultWorld {
  return {
    ...(cluster ? { cluster } : {}),
    child(name) {
      const c = children.get(name);
      if (!c) throw new Error(`no process ${name}`);
      return c;
    },
    redis,
    proxy,
  };
}

/** The Cluster control faults use: shards by slot, nodes by port, processes by PID. */
export function clusterControl(cluster: LocalCluster): ClusterControl {
  const shardOwners = (shard: number) => cluster.owners(`{${SHARD_SLOT_KEYS[shard]}}`);
  const roleOf = async (port: number) => {
    const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      return /role:(\w+)/.exec(await r.info('replication'))?.[1] ?? '?';
    } catch {
      return 'down';
    } finally {
      r.disconnect();
    }
  };
  const until = async (what: string, cond: () => Promise<boolean>, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return {
    async failover(shard) {
      const { master, replicas } = await shardOwners(shard);
      const replica = replicas[0];
      if (replica === undefined) throw new Error(`shard ${shard} (master ${master}) has no replica`);
      const r = new Redis({ port: replica, maxRetriesPerRequest: 1 });
      r.on('error', () => {});
      try {
        await r.cluster('FAILOVER');
      } finally {
        r.disconnect();
      }
      await until(`${replica} to become master`, async () => (await roleOf(replica)) === 'master');
      return `${master}->${replica}`;
    },
    async killMaster(shard) {
      const { master, replicas } = await shardOwners(shard);
      const server = cluster.server(master);
      await server.stop('SIGKILL');
      return async () => {
        // the replica must have taken over before the old master returns (it then rejoins as a replica)
        if (replicas[0] !== undefined)
          await until(`${replicas[0]} to take over`, async () => (await roleOf(replicas[0]!)) === 'master');
        await server.restart();
      };
    },
  };
}
