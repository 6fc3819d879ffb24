import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A redis-server process this test owns (port range 7100-7199). Stopped by PID. */
export interface RedisProcess {
  port: number;
  dir: string;
  proc: ChildProcess;
  /** SIGKILL (a crash) or SIGTERM (a clean shutdown, AOF flushed). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and data directory. */
  restart(): Promise<void>;
  /** Removes the data directory after the last stop. */
  cleanup(): void;
}

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
  const launch = () => {
    const p = spawn('redis-server', args, { stdio: 'ignore' });
    return p;
  };
  let proc = launch();
  const handle: RedisProcess = {
    port,
    dir: dataDir,
    proc,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill(signal);
      await exited;
    },
    async restart() {
      proc = launch();
      handle.proc = proc;
      await waitForPort(port);
    },
    cleanup() {
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await waitForPort(port);
  return handle;
}

/**
 * A TCP proxy the test controls: `cut()` destroys every connection through it
 * (both sides see a reset), as a flaky network would.
 */
export async function startProxy(
  targetPort: number,
): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
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
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
