import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

/**
 * How long one broker process may take to start (or to run to its exit): it loads the workspace from
 * TypeScript through tsx, about 3 s on an idle machine and up to ~20 s on a loaded two-core one.
 */
export const BROKER_START_TIMEOUT_MS = 60_000;
/** The budget of a test that starts broker processes (several, one after another, in some tests). */
export const PROCESS_TEST_TIMEOUT_MS = 120_000;

/** A broker child process started from `src/main.ts`, as a supervisor would run it. */
export interface SpawnedBroker {
  child: ChildProcess;
  url: string;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with the exit code (signals map to 128+n). */
  exited: Promise<number>;
}

/** Runs `main.ts` with the given environment and arguments and waits for its exit, collecting output. */
export function runBroker(
  env: Record<string, string>,
  args: string[] = [],
  timeoutMs = BROKER_START_TIMEOUT_MS,
): Promise<{ code: number; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@qe/source', '--import', 'tsx', MAIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', HTTP_GATEWAY_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`broker did not exit within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stderr, stdout });
    });
  });
}

/** Starts the broker and resolves once it logged `broker listening`. */
export function startBroker(env: Record<string, string> = {}, args: string[] = []): Promise<SpawnedBroker> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=@qe/source', '--import', 'tsx', MAIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', HTTP_GATEWAY_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logs: Record<string, unknown>[] = [];
    let text = '';
    let buf = '';
    let settled = false;
    const exited = new Promise<number>((res) =>
      child.on('exit', (code, signal) => res(code ?? (signal === 'SIGKILL' ? 137 : 128))),
    );
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`broker did not start within ${BROKER_START_TIMEOUT_MS} ms; stderr:\n${text}`));
    }, BROKER_START_TIMEOUT_MS);
    child.stderr!.on('data', (c: Buffer) => {
      text += c.toString();
      buf += c.toString();
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (!settled && rec.msg === 'broker listening') {
          settled = true;
          clearTimeout(timer);
          resolve({ child, url: rec.url as string, logs, stderr: () => text, exited });
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
