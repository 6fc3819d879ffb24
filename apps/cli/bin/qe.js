#!/usr/bin/env node
// The `qe` launcher: runs the built CLI (dist/main.js, `pnpm --filter @qe/cli build`).
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    'qe: not built yet (no apps/cli/dist/main.js)\nhint: run `pnpm --filter @qe/cli build`, or `pnpm --filter @qe/cli dev -- <command>` to run the sources\n',
  );
  process.exit(1);
}
await import(main.href);
