import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** The shared test Redis: `REDIS_URL`, or 127.0.0.1:6379. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A key prefix no other test or run uses: `qe-test:<tag>:<time><random>`.
 * Give each test its own and remove its keys afterwards with `deletePrefix`.
 */
export function uniquePrefix(tag = 't'): string {
  return `qe-test:${tag}:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);

/**
 * Removes every key that starts with `prefix` (the key `prefix` itself,
 * `prefix:…` and anything else beginning with it) with SCAN + UNLINK, never
 * KEYS or DEL, so a big test database is neither blocked nor scanned at once.
 * Returns how many keys it removed.
 */
export async function deletePrefix(prefix: string, url: string = REDIS_URL): Promise<number> {
  if (prefix.length === 0) throw new Error('deletePrefix: refusing an empty prefix');
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
  r.on('error', () => {});
  let removed = 0;
  try {
    await r.connect();
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${globEscape(prefix)}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) removed += await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return removed;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`; throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A redis-server process a test owns. It is stopped by its PID, never by name. */
export interface RedisProcess {
  port: number;
  /** Its data directory (AOF/RDB files and redis.log). */
  dir: string;
  /** The current process (replaced by `restart()`). */
  proc: ChildProcess;
  /** SIGKILL (a crash, the default) or SIGTERM (a clean shutdown, AOF flushed); resolves on exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and data directory; resolves once the port is open. */
  restart(): Promise<void>;
  /** Removes the data directory (after the last stop) unless the caller passed its own `dir`. */
  cleanup(): void;
}

/**
 * Starts `redis-server` on 127.0.0.1:`port` with no RDB snapshots and its log
 * in `dir` (a new temp directory unless given), plus `extraArgs` (e.g.
 * `['--appendonly', 'yes']`). Resolves once the port accepts connections.
 *
 * Each package uses its own port range so parallel test runs never meet:
 * redis-transport 7100-7199, broker 7300-7349, router 7600-7609,
 * test-utils 7700-7709.
 */
export async function startRedis(
  port: number,
  extraArgs: string[] = [],
  dir?: string,
): Promise<RedisProcess> {
  const dataDir = dir ?? mkdtempSync(join(tmpdir(), `qe-redis-${port}-`));
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dataDir,
    '--save',
    '',
    '--logfile',
    join(dataDir, 'redis.log'),
    ...extraArgs,
  ];
  const launch = () => spawn('redis-server', args, { stdio: 'ignore' });
  let proc = launch();
  const handle: RedisProcess = {
    port,
    dir: dataDir,
    proc,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill(signal);
      // a process frozen with SIGSTOP only acts on SIGTERM once it runs again
      if (signal !== 'SIGKILL') proc.kill('SIGCONT');
      await exited;
    },
    async restart() {
      proc = launch();
      handle.proc = proc;
      await waitForPort(port);
    },
    cleanup() {
      if (dir === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await waitForPort(port);
  } catch (err) {
    await handle.stop();
    handle.cleanup();
    throw err;
  }
  return handle;
}

/** A TCP proxy a test or the chaos suite controls (see `startProxy`). */
export interface TcpProxy {
  /** The local port clients connect to. */
  port: number;
  /** Destroys every connection through it: both sides see a reset, as a flaky network would. */
  cut(): void;
  /**
   * Stops forwarding bytes in both directions without closing anything (a
   * network stall: a black-holed route, a full buffer): connections stay open,
   * new ones are accepted, and what is sent waits in the proxy until `resume()`.
   */
  stall(): void;
  /** Ends a stall: forwards everything held back, in order, and carries on. */
  resume(): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy the test controls, in front of a server on `targetPort`: `cut()`
 * destroys every connection through it (both sides see a reset), as a flaky
 * network would; `stall()`/`resume()` hold bytes back without closing
 * anything. For fault tests between a client and Redis (or any server).
 */
export async function startProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let stalled = false;
  // bytes held back during a stall, per direction, flushed in order by resume()
  const held: { to: net.Socket; chunk: Buffer }[] = [];
  const forward = (from: net.Socket, to: net.Socket) =>
    from.on('data', (chunk: Buffer) => {
      if (stalled) held.push({ to, chunk });
      else if (!to.destroyed) to.write(chunk);
    });
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    forward(client, upstream);
    forward(upstream, client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      held.length = 0;
    },
    stall() {
      stalled = true;
    },
    resume() {
      stalled = false;
      for (const { to, chunk } of held.splice(0)) if (!to.destroyed) to.write(chunk);
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
