import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A unique key prefix per test, so runs never collide. */
export function uniquePrefix(tag = 't'): string {
  return `qe-test:redis:${tag}:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

/** Deletes every key under `prefix` (SCAN, never KEYS). */
export async function deletePrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const r = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/**
 * Starts `test/fixtures/<name>` in a child Node process (TypeScript sources
 * through tsx) and calls `onLine` with each line it prints.
 */
export function startFixture(name: string, args: string[], onLine: (line: string) => void): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@qe/source',
      '--import',
      'tsx',
      fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)),
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let buf = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  });
  return child;
}
