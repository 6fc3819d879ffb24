import type { ChildProcess } from 'node:child_process';
import { deletePrefix as removePrefix, startFixture as start } from '@qe/test-utils';

export { REDIS_URL, uniquePrefix } from '@qe/test-utils';

/** Deletes every key under `prefix` (SCAN + UNLINK). */
export async function deletePrefix(prefix: string, url?: string): Promise<void> {
  await removePrefix(prefix, url);
}

/**
 * Starts `test/fixtures/<name>` in a child Node process (TypeScript sources
 * through tsx) and calls `onLine` with each line it prints.
 */
export function startFixture(name: string, args: string[], onLine: (line: string) => void): ChildProcess {
  return start(new URL(`./fixtures/${name}`, import.meta.url), args, { onLine });
}
