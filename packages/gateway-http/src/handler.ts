import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { gzipSync } from 'node:zlib';
import {
  type AgentEvent,
  compilePattern,
  type DeadLetter,
  type DeadLetterStore,
  EventBusError,
  PayloadTooLargeError,
  type QEEventBus,
  RateLimitedError,
  TimeoutError,
  toError,
  UnauthorizedError,
  ValidationError,
  validatePattern,
} from '@qe/core';
import {
  ALLOW_ALL,
  assertAdmin,
  assertPublish,
  assertSubscribe,
  canSubscribe,
  extractToken,
  type JwtConfig,
  type Permissions,
  parseJsonSafe,
  permissionsFromClaims,
  scheduleExpiry,
  type VerifiedToken,
} from '@qe/gateway-auth';
import type { TokenBucketStore } from '@qe/reliability';

export type Req = IncomingMessage | Http2ServerRequest;
export type AnyRes = ServerResponse | Http2ServerResponse;
/** What the handlers use of an HTTP/1.1 or HTTP/2 (compatibility API) response. */
export interface Res {
  readonly headersSent: boolean;
  readonly writableLength?: number;
  writeHead(status: number, headers?: Record<string, string | number>): unknown;
  setHeader(name: string, value: string): unknown;
  write(chunk: string): unknown;
  end(chunk?: string | Buffer): unknown;
  on(event: 'close', listener: () => void): unknown;
  destroy?(): unknown;
}

export interface HttpGatewayStats {
  requests: number;
  refused: Record<string, number>;
  published: number;
  sseClients: number;
  sseDropped: number;
  /** SSE streams ended because the token behind them expired. */
  sseExpired: number;
  /** Connections closed because they sent no complete request in time (slowloris). */
  idleClosed: number;
  /** Requests whose handling failed past the point of replying (the connection was reset). */
  internalErrors: number;
}

/** What the request handler needs from the gateway that owns it. */
export interface HandlerContext {
  bus: QEEventBus;
  stats: HttpGatewayStats;
  maxBodyBytes: number;
  maxSseBufferedBytes: number;
  /** Deadline for reading a request body, from the start of the request. */
  requestTimeoutMs: number;
  verify?: (token: string) => Promise<VerifiedToken>;
  auth?: { jwt: JwtConfig; permissionsClaim?: string; defaultPermissions?: Permissions };
  cors?: { origins: string[]; credentials?: boolean };
  rateLimit?: { windowMs: number; maxRequests: number };
  buckets: TokenBucketStore;
  deadLetters?: DeadLetterStore;
  metrics?: { contentType: string; render(): Promise<string> };
  compression: boolean;
  /** SSE streams open now: each entry ends its stream. */
  streams: Set<() => void>;
}

const STATUS: Record<string, number> = {
  VALIDATION: 400,
  INVALID_PATTERN: 400,
  CODEC: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  TIMEOUT: 408,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  NOT_CONNECTED: 503,
  CLOSED: 503,
  QUEUE_FULL: 503,
  TRANSPORT: 503,
  UNSUPPORTED: 501,
};

/** Sent with every JSON reply: never sniffed as another type, never cached. */
export const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
} as const;

export class HttpError extends EventBusError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code as never, message);
  }
}

interface Principal {
  readonly id: string;
  readonly permissions: Permissions;
  /** Epoch ms; 0 when there is no token. */
  readonly expiresAt: number;
}

/**
 * The gateway's routes as one request listener. Every byte of the request is
 * read under a guard: a target that is not a URL, a bad header, a bad body or a
 * failure while replying ends in an error reply (or a reset connection, counted),
 * never in an exception that leaves the handler.
 */
export function createRequestHandler(ctx: HandlerContext): (req: Req, res: Res) => Promise<void> {
  const { stats } = ctx;
  const refuse = (code: string) => (stats.refused[code] = (stats.refused[code] ?? 0) + 1);

  /** A short JSON text as it is (never worth gzip): the common reply, a publish's 202, in one header literal. */
  const sendJson = (res: Res, status: number, text: string) => {
    if (res.headersSent) return;
    res.writeHead(status, {
      'content-type': JSON_HEADERS['content-type'],
      'x-content-type-options': JSON_HEADERS['x-content-type-options'],
      'cache-control': JSON_HEADERS['cache-control'],
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };
  /** JSON reply; gzip when configured, accepted by the client and worth it (1 KiB or more). */
  const send = (res: Res, status: number, body: unknown, headers?: Record<string, string>, req?: Req) => {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    const gzip =
      ctx.compression &&
      text.length >= 1024 &&
      /\bgzip\b/.test(String(req?.headers['accept-encoding'] ?? ''));
    if (!gzip && headers === undefined) return sendJson(res, status, text);
    const payload = gzip ? gzipSync(text) : text;
    res.writeHead(status, {
      ...JSON_HEADERS,
      'content-length': Buffer.byteLength(payload),
      ...(gzip ? { 'content-encoding': 'gzip', vary: 'Accept-Encoding' } : {}),
      ...headers,
    });
    res.end(payload);
  };
  const fail = (res: Res, err: unknown, req?: Req) => {
    const e = err instanceof EventBusError ? err : new EventBusError('HANDLER', toError(err).message);
    const status = err instanceof HttpError ? err.status : (STATUS[e.code] ?? 500);
    if (status < 500) refuse(e.code);
    const headers: Record<string, string> = {};
    if (e instanceof RateLimitedError)
      headers['retry-after'] = String(Math.max(1, Math.ceil(e.retryAfterMs / 1000)));
    if (status === 413 || status === 408) headers.connection = 'close';
    send(res, status, { error: e.toJSON() }, headers);
    if (req && (status === 413 || status === 408)) req.socket?.destroy?.(); // stop reading a body we refused
  };

  const readJson = (req: Req, startedAt: number): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const type = String(req.headers['content-type'] ?? '');
      if (!/^application\/json\b/i.test(type))
        return reject(new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'content-type must be application/json'));
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > ctx.maxBodyBytes) return reject(new PayloadTooLargeError(declared, ctx.maxBodyBytes));
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        fn();
      };
      // the body's deadline runs from the start of the request, on every listener (TLS and h2c too);
      // an HTTP/1.x body that the parser already holds whole (most small ones) cannot be late
      if (!(req.httpVersionMajor === 1 && (req as IncomingMessage).complete)) {
        timer = setTimeout(
          () => {
            req.removeAllListeners('data');
            settle(() =>
              reject(new TimeoutError(`the request body did not arrive within ${ctx.requestTimeoutMs} ms`)),
            );
          },
          Math.max(0, ctx.requestTimeoutMs - (Date.now() - startedAt)),
        );
        timer.unref();
      }
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > ctx.maxBodyBytes) {
          req.removeAllListeners('data');
          settle(() => reject(new PayloadTooLargeError(size, ctx.maxBodyBytes)));
          return;
        }
        chunks.push(c);
      });
      req.on('end', () =>
        settle(() => {
          try {
            const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
            resolve(parseJsonSafe(body.toString('utf8')));
          } catch (err) {
            reject(err);
          }
        }),
      );
      req.on('error', (err) => settle(() => reject(err)));
    });

  // the verifier hands back the same object for a token it remembers: its principal is worked out once
  const principals = new WeakMap<VerifiedToken, Principal>();
  const principalOf = async (req: Req, url: URL): Promise<Principal> => {
    if (!ctx.verify)
      return { id: `ip:${req.socket?.remoteAddress ?? 'unknown'}`, permissions: ALLOW_ALL, expiresAt: 0 };
    const token = extractToken(req.headers as Record<string, string>, url.search);
    if (!token) throw new UnauthorizedError('a bearer token is required');
    const v = await ctx.verify(token);
    let who = principals.get(v);
    if (who === undefined) {
      who = {
        id: `sub:${v.subject}`,
        permissions: permissionsFromClaims(
          v.claims,
          ctx.auth?.permissionsClaim ?? 'qe',
          ctx.auth?.defaultPermissions,
        ),
        expiresAt: v.expiresAt,
      };
      principals.set(v, who);
    }
    return who;
  };

  const cors = (req: Req, res: Res): boolean => {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || !ctx.cors) return true;
    if (!ctx.cors.origins.includes(origin) && !ctx.cors.origins.includes('*')) {
      refuse('CORS');
      return false;
    }
    res.setHeader(
      'access-control-allow-origin',
      ctx.cors.credentials ? origin : ctx.cors.origins.includes('*') ? '*' : origin,
    );
    res.setHeader('vary', 'Origin');
    if (ctx.cors.credentials) res.setHeader('access-control-allow-credentials', 'true');
    return true;
  };

  /** Integer query parameter in [min, max], or `def` when absent. */
  const intParam = (url: URL, name: string, def: number, min: number, max: number): number => {
    const raw = url.searchParams.get(name);
    if (raw === null) return def;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max)
      throw new ValidationError(name, `must be an integer from ${min} to ${max}`);
    return n;
  };

  const handle = async (req: Req, res: Res): Promise<void> => {
    stats.requests++;
    const startedAt = Date.now();
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://gateway');
      } catch {
        throw new ValidationError('target', 'the request target is not a valid path');
      }
      const route = `${req.method} ${url.pathname}`;
      if (!cors(req, res)) throw new HttpError(403, 'FORBIDDEN', 'origin not allowed');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'access-control-allow-methods': 'GET, POST, DELETE, OPTIONS',
          'access-control-allow-headers': 'authorization, content-type, last-event-id',
          'access-control-max-age': '600',
        });
        return void res.end();
      }
      if (route === 'GET /health') {
        const h = await ctx.bus.healthCheck();
        return send(res, h.status === 'unhealthy' ? 503 : 200, h);
      }
      if (route === 'GET /metrics') {
        if (!ctx.metrics) throw new HttpError(404, 'NOT_FOUND', 'no metrics registry configured');
        const text = await ctx.metrics.render();
        res.writeHead(200, {
          'content-type': ctx.metrics.contentType,
          'x-content-type-options': 'nosniff',
          'cache-control': 'no-store',
        });
        return void res.end(text);
      }
      const who = await principalOf(req, url);
      if (ctx.rateLimit) {
        const r = await ctx.buckets.take(
          who.id,
          ctx.rateLimit.maxRequests,
          ctx.rateLimit.maxRequests / ctx.rateLimit.windowMs,
          1,
        );
        if (!r.allowed) throw new RateLimitedError('request rate limit exceeded', r.retryAfterMs);
      }
      if (url.pathname === '/dead-letters' || url.pathname.startsWith('/dead-letters/'))
        return await deadLetterRoute(req, res, url, who, startedAt);
      if (!ctx.bus.isConnected()) throw new EventBusError('NOT_CONNECTED', 'the bus is not connected');
      switch (route) {
        case 'POST /events': {
          const body = (await readJson(req, startedAt)) as { type?: unknown } | null;
          if (!Array.isArray(body)) {
            // one event: the common case, without the batch's arrays
            if (body === null || typeof body !== 'object')
              throw new ValidationError('event', 'must be an object');
            if (typeof body.type === 'string') assertPublish(who.permissions, body.type);
            const out = await ctx.bus.publish(body as unknown as Parameters<QEEventBus['publish']>[0]);
            stats.published++;
            return sendJson(res, 202, `{"ids":[${JSON.stringify(out.id)}]}`);
          }
          const events = body as { type?: unknown }[];
          for (let i = 0; i < events.length; i++) {
            const e = events[i];
            if (e === null || typeof e !== 'object')
              throw new ValidationError(`events[${i}]`, 'must be an object');
            if (typeof e.type === 'string') assertPublish(who.permissions, e.type);
          }
          const out = await ctx.bus.publishBatch(
            events as unknown as Parameters<QEEventBus['publishBatch']>[0],
          );
          stats.published += out.length;
          return send(res, 202, { ids: out.map((e) => e.id) });
        }
        case 'GET /events': {
          const pattern = url.searchParams.get('pattern') ?? '**';
          validatePattern(pattern);
          assertSubscribe(who.permissions, pattern);
          const limit = intParam(url, 'limit', 100, 1, 10_000);
          const since = url.searchParams.has('since') ? Number(url.searchParams.get('since')) : undefined;
          if (since !== undefined && !Number.isFinite(since))
            throw new ValidationError('since', 'must be epoch milliseconds');
          const events = await ctx.bus.getRecentEvents({
            pattern,
            limit,
            ...(since === undefined ? {} : { since }),
          });
          return send(res, 200, { events }, undefined, req);
        }
        case 'GET /events/stream':
          return await stream(req, res, url, who);
        default:
          throw new HttpError(404, 'NOT_FOUND', `no route ${route}`);
      }
    } catch (err) {
      fail(res, err, req);
    }
  };

  /** The principal may see this dead letter only if it may subscribe to its event's type. */
  const visible = (who: Principal, dl: DeadLetter) => canSubscribe(who.permissions, dl.event.type);

  const deadLetterRoute = async (req: Req, res: Res, url: URL, who: Principal, startedAt: number) => {
    assertAdmin(who.permissions);
    const dlq = ctx.deadLetters;
    if (!dlq) throw new HttpError(404, 'NOT_FOUND', 'this bus keeps no dead letters');
    const method = req.method;
    if (url.pathname === '/dead-letters' && method === 'GET') {
      const pattern = url.searchParams.get('pattern') ?? undefined;
      if (pattern !== undefined) validatePattern(pattern);
      const limit = intParam(url, 'limit', 100, 1, 10_000);
      const after = url.searchParams.get('after') ?? undefined;
      const unrestricted = canSubscribe(who.permissions, '**');
      const items = await dlq.list({
        limit,
        ...(pattern === undefined ? {} : { pattern }),
        ...(after === undefined ? {} : { after }),
      });
      const shown = unrestricted ? items : items.filter((d) => visible(who, d));
      // the store-wide count would tell a restricted principal about subjects it may not see
      return send(res, 200, { count: unrestricted ? await dlq.count() : shown.length, deadLetters: shown });
    }
    if (
      (url.pathname === '/dead-letters' && method === 'DELETE') ||
      url.pathname === '/dead-letters/redrive'
    ) {
      const redrive = url.pathname === '/dead-letters/redrive';
      if (redrive && method !== 'POST')
        throw new HttpError(404, 'NOT_FOUND', `no route ${method} ${url.pathname}`);
      const body = redrive
        ? await readJson(req, startedAt)
        : Object.fromEntries(
            [...url.searchParams].filter(([k]) => k === 'ids' || k === 'pattern' || k === 'all'),
          );
      const sel = await selection(dlq, who, body);
      const n = redrive ? await dlq.redrive(sel) : await dlq.purge(sel);
      return send(res, 200, { [redrive ? 'redriven' : 'purged']: n });
    }
    const one = /^\/dead-letters\/([^/]+)$/.exec(url.pathname);
    if (one && method === 'GET') {
      let id: string;
      try {
        id = decodeURIComponent(one[1]!);
      } catch {
        throw new ValidationError('id', 'is not a valid URL-encoded id');
      }
      const dl = await dlq.get(id);
      // a dead letter the principal may not see answers as if it did not exist
      if (!dl || !visible(who, dl))
        throw new HttpError(404, 'NOT_FOUND', `no dead letter ${JSON.stringify(id)}`);
      return send(res, 200, dl);
    }
    throw new HttpError(404, 'NOT_FOUND', `no route ${method} ${url.pathname}`);
  };

  /**
   * What a redrive or purge acts on: `{ ids }`, `{ pattern }` or `{ all: true }`,
   * each only within the principal's subscribe rules. Nothing selected is an
   * error, never "everything".
   */
  const selection = async (
    dlq: DeadLetterStore,
    who: Principal,
    body: unknown,
  ): Promise<{ ids?: string[]; pattern?: string }> => {
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw new ValidationError(
        'body',
        'must be an object: {"ids": [...]}, {"pattern": "..."} or {"all": true}',
      );
    const b = body as Record<string, unknown>;
    if (b.ids !== undefined) {
      const ids = typeof b.ids === 'string' ? b.ids.split(',') : b.ids;
      if (!Array.isArray(ids) || ids.length === 0 || ids.some((i) => typeof i !== 'string' || i === ''))
        throw new ValidationError('ids', 'must be a non-empty list of dead-letter ids');
      for (const id of ids as string[]) {
        const dl = await dlq.get(id);
        if (!dl || !visible(who, dl))
          throw new HttpError(404, 'NOT_FOUND', `no dead letter ${JSON.stringify(id)}`);
      }
      return { ids: ids as string[] };
    }
    if (b.pattern !== undefined) {
      if (typeof b.pattern !== 'string') throw new ValidationError('pattern', 'must be a pattern string');
      validatePattern(b.pattern);
      assertSubscribe(who.permissions, b.pattern);
      return { pattern: b.pattern };
    }
    if (b.all === true || b.all === 'true') {
      assertSubscribe(who.permissions, '**');
      return {};
    }
    throw new ValidationError(
      'selector',
      'name what to act on: {"ids": [...]}, {"pattern": "..."} or {"all": true}',
    );
  };

  const stream = async (req: Req, res: Res, url: URL, who: Principal) => {
    const patterns = url.searchParams.getAll('pattern');
    if (patterns.length === 0) patterns.push('**');
    for (const p of patterns) {
      validatePattern(p);
      assertSubscribe(who.permissions, p);
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-accel-buffering': 'no',
    });
    const write = (e: AgentEvent) => {
      if ((res.writableLength ?? 0) > ctx.maxSseBufferedBytes) {
        stats.sseDropped++;
        return;
      }
      res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    const lastId = req.headers['last-event-id'];
    const seen = new Set<string>();
    const unsubscribe = ctx.bus.subscribe(patterns, (e) => {
      if (!seen.has(e.id)) write(e);
    });
    let ended = false;
    let cancelExpiry = () => {};
    let heartbeat: NodeJS.Timeout | undefined;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      cancelExpiry();
      if (unsubscribe()) stats.sseClients--;
      ctx.streams.delete(end);
      res.end();
    };
    stats.sseClients++;
    ctx.streams.add(end);
    req.on('close', end);
    res.on('close', end);
    if (who.expiresAt > 0)
      cancelExpiry = scheduleExpiry(who.expiresAt, () => {
        stats.sseExpired++;
        if (!ended) res.write('event: error\ndata: {"code":"UNAUTHORIZED","message":"token expired"}\n\n');
        end();
      });
    await unsubscribe.ready;
    if (ended) return;
    if (typeof lastId === 'string' && ctx.bus.transport.capabilities.replay) {
      // resume: what was published after the last event the client saw, then live
      const recent = await ctx.bus.getRecentEvents({ limit: 10_000 });
      const at = recent.findIndex((e) => e.id === lastId);
      if (at >= 0)
        for (const e of recent.slice(at + 1)) {
          if (patterns.some((p) => compilePattern(p).matches(e.type))) {
            seen.add(e.id);
            write(e);
          }
        }
    }
    if (ended) return;
    res.write(': connected\n\n');
    heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
    heartbeat.unref();
  };

  return handle;
}
