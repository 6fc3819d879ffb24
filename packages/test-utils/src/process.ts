import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface FixtureOptions {
  /** Extra environment variables (added to this process's environment). */
  env?: Record<string, string | undefined>;
  /** Called with each line the child prints on stdout (without the newline). */
  onLine?: (line: string) => void;
  /** `'pipe'` to write to the child's stdin (`child.stdin`); ignored by default. */
  stdin?: 'pipe' | 'ignore';
}

/**
 * Starts a TypeScript fixture in a child Node process:
 * `node --conditions=@qe/source --import tsx <file> ...args`, so workspace
 * packages load from source. stdout is split into lines for `onLine`; stderr
 * goes to the test's stderr. Returns the child: stop it by its PID
 * (`child.kill(...)`), never by process name.
 */
export function startFixture(
  file: string | URL,
  args: string[] = [],
  options: FixtureOptions = {},
): ChildProcess {
  const path = typeof file === 'string' ? file : fileURLToPath(file);
  const child = spawn(process.execPath, ['--conditions=@qe/source', '--import', 'tsx', path, ...args], {
    env: { ...process.env, ...options.env },
    stdio: [options.stdin ?? 'ignore', 'pipe', 'inherit'],
  });
  let buf = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      options.onLine?.(line);
    }
  });
  child.stdout!.on('end', () => {
    if (buf.length > 0) options.onLine?.(buf);
    buf = '';
  });
  return child;
}

/** Resolves when `child` has exited (at once if it already has), with its code and signal. */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
