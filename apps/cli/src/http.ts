import { type Context, unreachable } from './context.js';
import { CliError } from './errors.js';

export interface ApiError {
  code?: string;
  message?: string;
}

/** The error for a refused request, with what to do about it. */
export function httpError(status: number, url: string, body: unknown, ctx: Context, admin = false): CliError {
  const e = ((body as { error?: ApiError })?.error ?? {}) as ApiError;
  const what = `${e.code ?? `HTTP ${status}`}${e.message ? `: ${e.message}` : ''}`;
  if (status === 401)
    return new CliError(
      `${url}: 401 ${what}`,
      ctx.token
        ? 'the broker did not accept the token (expired, or signed with another secret): pass a valid one with --token <jwt> or QE_TOKEN'
        : 'the broker needs a token (JWT_SECRET is set): pass --token <jwt> or set QE_TOKEN',
    );
  if (status === 403)
    return new CliError(
      `${url}: 403 ${what}`,
      admin
        ? 'dead letters are administration: the token needs "admin": true in its qe claim (and sub permission for these event types)'
        : "the token's qe claim does not allow this (pub/sub allow and deny rules)",
    );
  if (status === 404) return new CliError(`${url}: 404 ${what}`);
  if (status === 429) return new CliError(`${url}: 429 ${what}`, 'rate limited: wait and try again');
  return new CliError(`${url}: ${status} ${what}`);
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Administration (dead letters): a 403 says the token needs admin. */
  admin?: boolean;
  /** Statuses to return instead of throwing (e.g. 503 from /health). */
  accept?: number[];
  /** Which server: the broker (default) or the HTTP gateway. */
  server?: 'broker' | 'gateway';
}

/** A JSON request to the broker (or its HTTP gateway) with the token; errors say what to do. */
export async function requestJson<T>(
  ctx: Context,
  base: string,
  path: string,
  o: RequestOptions = {},
): Promise<{ status: number; body: T }> {
  const url = `${base}${path}`;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (ctx.token) headers.authorization = `Bearer ${ctx.token}`;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(url, {
      method: o.method ?? 'GET',
      headers,
      ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
      signal: AbortSignal.timeout(ctx.timeoutMs),
    });
  } catch (err) {
    if ((err as Error).name === 'TimeoutError')
      throw new CliError(
        `${url}: no answer within ${ctx.timeoutMs} ms`,
        'is the broker overloaded? raise --timeout',
      );
    throw unreachable(o.server === 'gateway' ? 'HTTP gateway' : 'broker', base, err);
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  if (!res.ok && !o.accept?.includes(res.status)) throw httpError(res.status, url, body, ctx, o.admin);
  return { status: res.status, body: body as T };
}

/**
 * The HTTP gateway's base URL: `--gateway`/QE_GATEWAY, else asked from the
 * broker's `/api/config` (its configured port on the broker's host; a broker
 * started with HTTP_GATEWAY_PORT=0 cannot say which port it got, so give
 * --gateway then).
 */
export async function gatewayUrl(ctx: Context): Promise<string> {
  if (ctx.gateway) return ctx.gateway;
  const { body } = await requestJson<{
    httpGateway?: { enabled?: boolean; port?: number; tlsKeyFile?: string };
  }>(ctx, ctx.broker, '/api/config');
  const g = body.httpGateway;
  if (!g || g.enabled === false)
    throw new CliError(
      `the broker at ${ctx.broker} runs without its HTTP gateway (HTTP_GATEWAY_ENABLED=false)`,
      'enable it, or use --redis <url> to read history straight from Redis',
    );
  if (!g.port)
    throw new CliError(
      `the broker at ${ctx.broker} picked its HTTP gateway's port at random (HTTP_GATEWAY_PORT=0)`,
      'pass the httpGateway URL from its "broker listening" log line with --gateway <url> / QE_GATEWAY',
    );
  const u = new URL(ctx.broker);
  u.protocol = g.tlsKeyFile ? 'https:' : 'http:';
  u.port = String(g.port);
  return u.origin;
}
