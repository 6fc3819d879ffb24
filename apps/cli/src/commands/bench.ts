import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';

/** This package's directory (from src/commands/ or a dist/ chunk alike). */
function packageDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === '@qe/cli')
      return dir;
    dir = dirname(dir);
  }
  throw new CliError('cannot find the @qe/cli package directory');
}

/**
 * Where `qe-loadgen`'s CLI is (`QE_LOADGEN`, else apps/loadgen beside this app
 * in the workspace), and the `tsx` loader to run its TypeScript.
 */
function loadgen(): { cli: string; tsx: string } {
  const cli = process.env.QE_LOADGEN ?? join(packageDir(), '..', 'loadgen', 'src', 'cli.ts');
  if (!existsSync(cli))
    throw new CliError(
      `the load generator is not at ${cli}`,
      'run qe bench from the QE Event Bus workspace (apps/loadgen), or set QE_LOADGEN to its src/cli.ts',
    );
  return { cli, tsx: createRequire(import.meta.url).resolve('tsx') };
}

/**
 * `qe bench <scenario> [loadgen options]`: runs `qe-loadgen` with these
 * arguments, filling in `--broker-url` / `--redis-url` from qe's own
 * `--broker` / `--redis` when the run needs them. Its exit code is qe's.
 */
export async function bench(ctx: Context, args: string[], brokerGiven: boolean): Promise<number> {
  const { cli, tsx } = loadgen();
  const extra: string[] = [];
  const target = args[args.indexOf('--target') + 1];
  if (
    args.includes('--target') &&
    (target === 'ws' || target === 'http') &&
    !args.includes('--broker-url') &&
    brokerGiven
  )
    extra.push('--broker-url', ctx.broker);
  if (ctx.redis && !args.includes('--redis-url')) extra.push('--redis-url', ctx.redis);
  const argv = ['--conditions=@qe/source', '--import', tsx, cli, ...args, ...extra];
  const child = spawn(process.execPath, argv, { stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  return new Promise((resolve, reject) => {
    child.on('error', (err) => reject(new CliError(`cannot run the load generator: ${err.message}`)));
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 2 : 1)));
  });
}
