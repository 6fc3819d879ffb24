import type { ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { epochNow } from '@qe/core';
import { type RedisProcess, startFixture, type TcpProxy } from '@qe/test-utils';
import { Redis } from 'ioredis';
import type { UnexpectedExit } from './classify.js';
import type { ChildCommand, ChildControl, FaultWorld, RedisControl } from './faults/index.js';

const CHILD = new URL('./child.ts', import.meta.url);

/** What every child of a run shares. */
export interface ChildEnv {
  dir: string;
  redisUrl: string;
  keyPrefix: string;
  rate: number;
  claimIdleMs: number;
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
    readonly role: 'producer' | 'group' | 'broadcast',
    private readonly env: ChildEnv,
    private readonly onExit: (e: UnexpectedExit) => void,
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
    const proc = startFixture(CHILD, [this.role, this.name, String(this.inc)], {
      stdin: 'pipe',
      env: {
        CHAOS_DIR: this.env.dir,
        CHAOS_REDIS_URL: this.env.redisUrl,
        CHAOS_PREFIX: this.env.keyPrefix,
        CHAOS_RATE: String(this.env.rate),
        CHAOS_CLAIM_IDLE_MS: String(this.env.claimIdleMs),
        NODE_OPTIONS: '--max-old-space-size=256',
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
): FaultWorld {
  return {
    child(name) {
      const c = children.get(name);
      if (!c) throw new Error(`no process ${name}`);
      return c;
    },
    redis,
    proxy,
  };
}
