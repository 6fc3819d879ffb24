import { CliError, errorMessage, UsageError } from './errors.js';
import { Output, useColor } from './io.js';

/** The options every command shares (`qe --help`). */
export interface GlobalOptions {
  broker?: string;
  gateway?: string;
  token?: string;
  redis?: string;
  prefix: string;
  json?: boolean;
  color?: boolean;
  timeout: string;
}

export const DEFAULT_BROKER = 'http://127.0.0.1:3000';

export interface Context {
  readonly out: Output;
  readonly json: boolean;
  /** `redis` when `--redis` (or QE_REDIS) is given, otherwise a broker. */
  readonly mode: 'broker' | 'redis';
  readonly broker: string;
  readonly gateway?: string;
  readonly token?: string;
  readonly redis?: string;
  readonly prefix: string;
  readonly timeoutMs: number;
}

function checkUrl(value: string, flag: string, schemes: string[]): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new UsageError(
      `${flag} ${JSON.stringify(value)}: not a URL`,
      `e.g. ${flag} ${schemes[0]}//127.0.0.1`,
    );
  }
  if (!schemes.includes(u.protocol))
    throw new UsageError(`${flag} ${JSON.stringify(value)}: expected a ${schemes.join(' or ')} URL`);
  return value.replace(/\/+$/, '');
}

export function makeContext(o: GlobalOptions): Context {
  const timeoutMs = Number(o.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1)
    throw new UsageError(`--timeout ${JSON.stringify(o.timeout)}: expected milliseconds (an integer >= 1)`);
  const redis = o.redis ?? process.env.QE_REDIS;
  const token = o.token ?? process.env.QE_TOKEN;
  const gateway = o.gateway ?? process.env.QE_GATEWAY;
  return {
    out: new Output(o.json === true, useColor(o.color)),
    json: o.json === true,
    mode: redis ? 'redis' : 'broker',
    broker: checkUrl(o.broker ?? process.env.QE_BROKER ?? DEFAULT_BROKER, '--broker', ['http:', 'https:']),
    ...(gateway ? { gateway: checkUrl(gateway, '--gateway', ['http:', 'https:']) } : {}),
    ...(token ? { token } : {}),
    ...(redis ? { redis: checkUrl(redis, '--redis', ['redis:', 'rediss:']) } : {}),
    prefix: o.prefix,
    timeoutMs,
  };
}

export function unreachable(what: string, url: string, err: unknown): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const why = cause?.code ?? cause?.message ?? errorMessage(err);
  return new CliError(
    `cannot reach the ${what} at ${url} (${why})`,
    what === 'broker'
      ? `start one with \`pnpm --filter @qe/broker start\` (or ./scripts/start.sh), or point qe at yours with --broker <url> / QE_BROKER`
      : `the broker logs the HTTP gateway's URL in its "broker listening" line (httpGateway); pass it with --gateway <url> / QE_GATEWAY`,
  );
}
