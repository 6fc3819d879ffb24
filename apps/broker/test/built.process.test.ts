/**
 * The broker as it ships: `node dist/main.js`, the built JavaScript, with no
 * TypeScript loader (scripts/test.sh builds it before the tests; so does
 * scripts/start.sh before it starts the broker).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

describe('the built broker program', () => {
  it('starts from dist/main.js with plain node, serves /health, and exits 0 on SIGTERM', async () => {
    expect(existsSync(MAIN), `${MAIN} is missing: run \`turbo run build --filter=@qe/broker...\``).toBe(true);
    const child = spawn(process.execPath, [MAIN], {
      env: { PATH: process.env.PATH ?? '', PORT: '0', HTTP_GATEWAY_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let buf = '';
        child.stderr!.on('data', (c: Buffer) => {
          buf += c.toString();
          const lines = buf.split('\n');
          buf = lines.pop() ?? ''; // a line still being written waits for its end
          for (const line of lines) {
            if (!line.startsWith('{')) continue;
            const rec = JSON.parse(line) as { msg?: string; url?: string };
            if (rec.msg === 'broker listening' && rec.url) resolve(rec.url);
          }
        });
        child.on('exit', (code) => reject(new Error(`exited with ${code} before listening (${buf})`)));
      });
      const health = await fetch(`${url}/health`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { status: string }).status).toBe('healthy');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 30_000);
});
