import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Makes sure Debian's Chromium is there for the dashboard test (a fresh CI machine lacks it). */
export default function setup(): void {
  if (existsSync('/usr/bin/chromium')) return;
  const script = fileURLToPath(new URL('../scripts/install-chromium.sh', import.meta.url));
  execFileSync('bash', [script], { stdio: 'inherit', timeout: 600_000 });
}
