import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';

/** Where `@qe/loadgen`'s CLI is, and the `tsx` loader to run its TypeScript. */
function loadgen(): { cli: string; tsx: string } {
  const require = createRequire(import.meta.url);
  try {
    const pkg = require.resolve('@qe/loadgen/package.json');
    return { cli: join(dirname(pkg), 'src', 'cli.ts'), tsx: require.resolve('tsx') };
  } catch (err) {
    throw new CliError(
      `the load generator (@qe/loadgen) is not installed next to qe (${(err as Error).message})`,
      'run qe bench from the QE Event Bus workspace after pnpm install, or use pnpm --filter @qe/loadgen start',
    );
  }
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
