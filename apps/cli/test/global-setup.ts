import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The tests run the built `qe` (bin/qe.js → dist/main.js), as an operator would: build it once first. */
export default function setup(): void {
  const cwd = fileURLToPath(new URL('..', import.meta.url));
  const tsup = join(
    dirname(createRequire(import.meta.url).resolve('tsup/package.json')),
    'dist',
    'cli-default.js',
  );
  execFileSync(process.execPath, [tsup], { cwd, stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 });
}
