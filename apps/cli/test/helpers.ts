import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const QE = fileURLToPath(new URL('../bin/qe.js', import.meta.url));
// the broker's sources in this workspace (no package dependency: pnpm would mark its bin executable)
const BROKER_MAIN = fileURLToPath(new URL('../../broker/src/main.ts', import.meta.url));

export interface QeResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The env a child gets: PATH only (plus what the test gives), no colours, no QE_* from the outside. */
function childEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '', NO_COLOR: '1', ...env };
}

/** Runs the built `qe` to completion. */
export function qe(
  args: string[],
  o: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {},
): Promise<QeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [QE, ...args], {
      env: childEnv(o.env ?? {}),
      stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    if (o.input !== undefined) child.stdin!.end(o.input);
    const timeoutMs = o.timeoutMs ?? 40_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `qe ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout:${stdout}\nstderr:${stderr}`,
        ),
      );
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
  });
}

/** A long-running `qe` (tail, stats --json) whose output lines the test awaits. */
export interface QeProcess {
  child: ChildProcess;
  stdoutLines: string[];
  stderr(): string;
  /** Resolves with the first stdout line (from now on or already seen) matching, or rejects after timeoutMs. */
  waitStdout(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  waitStderr(re: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number>;
  /** SIGTERM by PID, then the exit code. */
  stop(): Promise<number>;
}

export function spawnQe(args: string[], env: Record<string, string> = {}): QeProcess {
  const child = spawn(process.execPath, [QE, ...args], {
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdoutLines: string[] = [];
  let err = '';
  let buf = '';
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of waiters) w();
  };
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString();
    let i = buf.indexOf('\n');
    while (i >= 0) {
      stdoutLines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      i = buf.indexOf('\n');
    }
    wake();
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
    wake();
  });
  const exited = new Promise<number>((res) =>
    child.on('exit', (code, signal) => {
      res(code ?? (signal === 'SIGKILL' ? 137 : 128));
      wake();
    }),
  );
  let exitedFlag = false;
  void exited.then(() => (exitedFlag = true));
  const wait = (check: () => boolean, what: string, timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      const w = () => {
        if (check()) {
          done();
          resolve();
        } else if (exitedFlag) {
          done();
          reject(new Error(`qe exited before ${what}; stderr:\n${err}\nstdout:\n${stdoutLines.join('\n')}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out (${timeoutMs} ms) waiting for ${what}; stderr:\n${err}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(w);
      };
      waiters.add(w);
      w();
    });
  return {
    child,
    stdoutLines,
    stderr: () => err,
    async waitStdout(match, timeoutMs = 30_000) {
      let found: string | undefined;
      await wait(
        () => {
          found = stdoutLines.find(match);
          return found !== undefined;
        },
        'a matching stdout line',
        timeoutMs,
      );
      return found!;
    },
    waitStderr: (re, timeoutMs = 30_000) => wait(() => re.test(err), String(re), timeoutMs),
    exited,
    async stop() {
      if (!exitedFlag) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** A broker process from apps/broker/src/main.ts (as apps/broker/test/spawn-broker.ts starts it). */
export interface Broker {
  child: ChildProcess;
  url: string;
  /** The HTTP gateway's URL from the `broker listening` line. */
  gateway: string;
  stop(): Promise<number>;
}

export function startBroker(env: Record<string, string> = {}): Promise<Broker> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@qe/source', '--import', 'tsx', BROKER_MAIN], {
      env: {
        PATH: process.env.PATH ?? '',
        HOST: '127.0.0.1',
        PORT: '0',
        HTTP_GATEWAY_PORT: '0',
        ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let text = '';
    let buf = '';
    let settled = false;
    const exited = new Promise<number>((res) =>
      child.on('exit', (code, signal) => res(code ?? (signal ? 128 : -1))),
    );
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`broker did not start within 45 s; stderr:\n${text}`));
    }, 45_000);
    child.stderr!.on('data', (c: Buffer) => {
      text += c.toString();
      buf += c.toString();
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
        if (settled || !line.startsWith('{')) continue;
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (rec.msg === 'broker listening') {
          settled = true;
          clearTimeout(timer);
          resolve({
            child,
            url: rec.url as string,
            gateway: rec.httpGateway as string,
            stop: async () => {
              child.kill('SIGTERM');
              const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
              const code = await exited;
              clearTimeout(t);
              return code;
            },
          });
        }
      }
    });
    void exited.then((code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code} before listening; stderr:\n${text}`));
    });
  });
}

export function randomPrefix(): string {
  return `qe-test:cli:${randomBytes(4).toString('hex')}`;
}

/** Deletes every key under the prefix. */
export async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT as the broker accepts it (`exp` required, permissions in the `qe` claim). */
export function signToken(secret: string, qeClaim: Record<string, unknown>, ttlSeconds = 3600): string {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub: 'cli-test', exp: Math.floor(Date.now() / 1000) + ttlSeconds, qe: qeClaim });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Polls `check` (a condition on the system, not a fixed sleep) until it holds or `timeoutMs` passes. */
export async function until<T>(
  check: () => Promise<T | undefined | false>,
  what: string,
  timeoutMs = 30_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
