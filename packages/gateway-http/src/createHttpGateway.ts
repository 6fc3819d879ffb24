import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import {
  createServer as createH2cServer,
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import {
  type AgentEvent,
  ConfigError,
  compilePattern,
  type DeadLetterStore,
  EventBusError,
  PayloadTooLargeError,
  type QEEventBus,
  RateLimitedError,
  toError,
  UnauthorizedError,
  ValidationError,
  validatePattern,
} from '@qe/core';
import {
  ALLOW_ALL,
  assertPublish,
  assertSubscribe,
  createTokenVerifier,
  extractToken,
  type JwtConfig,
  type Permissions,
  parseJsonSafe,
  permissionsFromClaims,
} from '@qe/gateway-auth';
import { MemoryTokenBuckets } from '@qe/reliability';

type Req = IncomingMessage | Http2ServerRequest;
/** What the handlers use of an HTTP/1.1 or HTTP/2 (compatibility API) response. */
interface Res {
  readonly headersSent: boolean;
  readonly writableLength?: number;
  writeHead(status: number, headers?: Record<string, string | number>): unknown;
  setHeader(name: string, value: string): unknown;
  write(chunk: string): unknown;
  end(chunk?: string | Buffer): unknown;
  on(event: 'close', listener: () => void): unknown;
}
type AnyRes = ServerResponse | Http2ServerResponse;

export interface HttpGatewayOptions {
  bus: QEEventBus;
  /** Default 3000; 0 picks a free port. */
  port?: number;
  host?: string;
  /** HTTP/2 over TLS with ALPN, falling back to HTTP/1.1. Without it: cleartext HTTP/1.1. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /**
   * Also serve cleartext HTTP/2 with prior knowledge (h2c) on this port (0: any
   * free one). A port of its own: Node's HTTP/2 sessions read the socket
   * natively, so one cleartext port cannot sniff and serve both protocols.
   */
  h2cPort?: number;
  /** CORS allowlist; `*` is never sent together with credentials. */
  cors?: { origins: string[]; credentials?: boolean };
  /** Requests per window per principal (or client address without auth); 429 with Retry-After. */
  rateLimit?: { windowMs: number; maxRequests: number };
  /** Largest request body, enforced while reading. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Whole-request time limit (slowloris). Default 10,000 ms. */
  requestTimeoutMs?: number;
  /** Time to receive the request headers. Default 5,000 ms. */
  headersTimeoutMs?: number;
  auth?: { jwt: JwtConfig; permissionsClaim?: string; defaultPermissions?: Permissions };
  /** Dead-letter endpoints; default the bus's store when it has one. */
  deadLetters?: DeadLetterStore;
  /** `GET /metrics`, e.g. from @qe/metrics: `{ contentType: registry.contentType, render: () => registry.metrics() }`. */
  metrics?: { contentType: string; render(): Promise<string> };
  /** gzip JSON replies of 1 KiB or more to clients that accept it (spec 000 `compression`). Default false. */
  compression?: boolean;
  /** Bytes an SSE client may fall behind before events for it are dropped (counted). Default 1 MiB. */
  maxSseBufferedBytes?: number;
}

export interface HttpGatewayStats {
  requests: number;
  refused: Record<string, number>;
  published: number;
  sseClients: number;
  sseDropped: number;
}

export interface HttpGateway {
  readonly port: number;
  /** The h2c port, when `h2cPort` was given. */
  readonly h2cPort?: number;
  readonly server: Server | Http2SecureServer;
  stats(): HttpGatewayStats;
  close(): Promise<void>;
}

const STATUS: Record<string, number> = {
  VALIDATION: 400,
  INVALID_PATTERN: 400,
  CODEC: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  NOT_CONNECTED: 503,
  CLOSED: 503,
  QUEUE_FULL: 503,
  TRANSPORT: 503,
  UNSUPPORTED: 501,
};

class HttpError extends EventBusError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code as never, message);
  }
}

/**
 * The HTTP gateway: `POST /events` (one or a batch, 202 with the ids),
 * `GET /events` (history), `GET /events/stream` (Server-Sent Events, resumable
 * with `Last-Event-ID`), dead-letter endpoints, `GET /health`, `GET /metrics`.
 * HTTP/2 with TLS (ALPN, HTTP/1.1 fallback) or cleartext HTTP/1.1. Plain
 * `node:http`/`node:http2` with a small router: HTTP/2 and SSE stay
 * first-class, and every limit is enforced before a body is buffered. Errors
 * are JSON with the bus's stable `code` and the matching status; every refusal
 * is counted.
 */
export async function createHttpGateway(options: HttpGatewayOptions): Promise<HttpGateway> {
  const o = options;
  if (!o?.bus) throw new ConfigError('bus', 'a QEEventBus is required');
  const maxBody = o.maxBodyBytes ?? 1024 * 1024;
  const maxSse = o.maxSseBufferedBytes ?? 1024 * 1024;
  if (!Number.isInteger(maxBody) || maxBody < 1)
    throw new ConfigError('maxBodyBytes', 'must be a positive integer');
  if (o.cors?.origins.includes('*') && o.cors.credentials)
    throw new ConfigError('cors', 'a wildcard origin cannot be combined with credentials');
  const verify = o.auth ? createTokenVerifier(o.auth.jwt) : undefined;
  const buckets = new MemoryTokenBuckets();
  const dlq = o.deadLetters ?? o.bus.deadLetters;
  const stats: HttpGatewayStats = { requests: 0, refused: {}, published: 0, sseClients: 0, sseDropped: 0 };
  const refuse = (code: string) => (stats.refused[code] = (stats.refused[code] ?? 0) + 1);
  const streams = new Set<() => void>();

  /** JSON reply; gzip when configured, accepted by the client and worth it (1 KiB or more). */
  const send = (res: Res, status: number, body: unknown, headers: Record<string, string> = {}, req?: Req) => {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    const gzip =
      o.compression === true &&
      text.length >= 1024 &&
      /\bgzip\b/.test(String(req?.headers['accept-encoding'] ?? ''));
    const payload = gzip ? gzipSync(text) : text;
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
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
    send(res, status, { error: e.toJSON() }, headers);
    if (req && status === 413) req.socket?.destroy?.(); // stop reading a body we refused
  };

  const readJson = (req: Req): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const type = String(req.headers['content-type'] ?? '');
      if (!/^application\/json\b/i.test(type))
        return reject(new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'content-type must be application/json'));
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > maxBody) return reject(new PayloadTooLargeError(declared, maxBody));
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBody) {
          reject(new PayloadTooLargeError(size, maxBody));
          req.removeAllListeners('data');
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => {
        try {
          resolve(parseJsonSafe(Buffer.concat(chunks).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
      req.on('error', reject);
    });

  const principalOf = async (req: Req): Promise<{ id: string; permissions: Permissions }> => {
    if (!verify) return { id: `ip:${req.socket?.remoteAddress ?? 'unknown'}`, permissions: ALLOW_ALL };
    const token = extractToken(req.headers as Record<string, string>, req.url ?? '');
    if (!token) throw new UnauthorizedError('a bearer token is required');
    const v = await verify(token);
    return {
      id: `sub:${v.subject}`,
      permissions: permissionsFromClaims(
        v.claims,
        o.auth?.permissionsClaim ?? 'qe',
        o.auth?.defaultPermissions,
      ),
    };
  };

  const cors = (req: Req, res: Res): boolean => {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || !o.cors) return true;
    if (!o.cors.origins.includes(origin) && !o.cors.origins.includes('*')) {
      refuse('CORS');
      return false;
    }
    res.setHeader(
      'access-control-allow-origin',
      o.cors.credentials ? origin : o.cors.origins.includes('*') ? '*' : origin,
    );
    res.setHeader('vary', 'Origin');
    if (o.cors.credentials) res.setHeader('access-control-allow-credentials', 'true');
    return true;
  };

  const handle = async (req: Req, res: Res) => {
    stats.requests++;
    const url = new URL(req.url ?? '/', 'http://gateway');
    const route = `${req.method} ${url.pathname}`;
    try {
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
        const h = await o.bus.healthCheck();
        return send(res, h.status === 'unhealthy' ? 503 : 200, h);
      }
      if (route === 'GET /metrics') {
        if (!o.metrics) throw new HttpError(404, 'NOT_FOUND', 'no metrics registry configured');
        const text = await o.metrics.render();
        res.writeHead(200, { 'content-type': o.metrics.contentType });
        return void res.end(text);
      }
      const who = await principalOf(req);
      if (o.rateLimit) {
        const r = await buckets.take(
          who.id,
          o.rateLimit.maxRequests,
          o.rateLimit.maxRequests / o.rateLimit.windowMs,
          1,
        );
        if (!r.allowed) throw new RateLimitedError('request rate limit exceeded', r.retryAfterMs);
      }
      if (!o.bus.isConnected()) throw new EventBusError('NOT_CONNECTED', 'the bus is not connected');
      switch (route) {
        case 'POST /events': {
          const body = await readJson(req);
          const batch = Array.isArray(body);
          const events = (batch ? body : [body]) as { type?: unknown }[];
          for (const [i, e] of events.entries()) {
            if (e === null || typeof e !== 'object')
              throw new ValidationError(batch ? `events[${i}]` : 'event', 'must be an object');
            if (typeof e.type === 'string') assertPublish(who.permissions, e.type);
          }
          const out = batch
            ? await o.bus.publishBatch(events as unknown as Parameters<QEEventBus['publishBatch']>[0])
            : [await o.bus.publish(events[0] as unknown as Parameters<QEEventBus['publish']>[0])];
          stats.published += out.length;
          return send(res, 202, { ids: out.map((e) => e.id) });
        }
        case 'GET /events': {
          const pattern = url.searchParams.get('pattern') ?? '**';
          assertSubscribe(who.permissions, pattern);
          const limit = url.searchParams.has('limit') ? Number(url.searchParams.get('limit')) : 100;
          if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
            throw new ValidationError('limit', 'must be an integer from 1 to 10,000');
          const since = url.searchParams.has('since') ? Number(url.searchParams.get('since')) : undefined;
          if (since !== undefined && !Number.isFinite(since))
            throw new ValidationError('since', 'must be epoch milliseconds');
          return send(
            res,
            200,
            {
              events: await o.bus.getRecentEvents({
                pattern,
                limit,
                ...(since === undefined ? {} : { since }),
              }),
            },
            {},
            req,
          );
        }
        case 'GET /events/stream':
          return await stream(req, res, url, who.permissions);
        case 'GET /dead-letters': {
          if (!dlq) throw new HttpError(404, 'NOT_FOUND', 'this bus keeps no dead letters');
          const pattern = url.searchParams.get('pattern') ?? undefined;
          if (pattern) validatePattern(pattern);
          const limit = Number(url.searchParams.get('limit') ?? 100);
          return send(res, 200, {
            count: await dlq.count(),
            deadLetters: await dlq.list({ limit, ...(pattern ? { pattern } : {}) }),
          });
        }
        case 'POST /dead-letters/redrive':
        case 'DELETE /dead-letters': {
          if (!dlq) throw new HttpError(404, 'NOT_FOUND', 'this bus keeps no dead letters');
          const body = (
            route.startsWith('POST') ? await readJson(req) : Object.fromEntries(url.searchParams)
          ) as Record<string, unknown>;
          const sel: { ids?: string[]; pattern?: string } = {};
          if (body.ids !== undefined) {
            const ids = typeof body.ids === 'string' ? body.ids.split(',') : body.ids;
            if (!Array.isArray(ids) || ids.some((i) => typeof i !== 'string'))
              throw new ValidationError('ids', 'must be a list of ids');
            sel.ids = ids as string[];
          }
          if (typeof body.pattern === 'string') {
            validatePattern(body.pattern);
            sel.pattern = body.pattern;
          }
          const n = route.startsWith('POST') ? await dlq.redrive(sel) : await dlq.purge(sel);
          return send(res, 200, { [route.startsWith('POST') ? 'redriven' : 'purged']: n });
        }
        default:
          throw new HttpError(404, 'NOT_FOUND', `no route ${route}`);
      }
    } catch (err) {
      fail(res, err, req);
    }
  };

  const stream = async (req: Req, res: Res, url: URL, permissions: Permissions) => {
    const patterns = url.searchParams.getAll('pattern');
    if (patterns.length === 0) patterns.push('**');
    for (const p of patterns) assertSubscribe(permissions, p);
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    const write = (e: AgentEvent) => {
      if ((res.writableLength ?? 0) > maxSse) {
        stats.sseDropped++;
        return;
      }
      res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    const lastId = req.headers['last-event-id'];
    const seen = new Set<string>();
    const unsubscribe = o.bus.subscribe(patterns, (e) => {
      if (!seen.has(e.id)) write(e);
    });
    await unsubscribe.ready;
    if (typeof lastId === 'string' && o.bus.transport.capabilities.replay) {
      // resume: what was published after the last event the client saw, then live
      const recent = await o.bus.getRecentEvents({ limit: 10_000 });
      const at = recent.findIndex((e) => e.id === lastId);
      if (at >= 0)
        for (const e of recent.slice(at + 1)) {
          if (patterns.some((p) => compilePattern(p).matches(e.type))) {
            seen.add(e.id);
            write(e);
          }
        }
    }
    res.write(': connected\n\n');
    stats.sseClients++;
    const heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
    heartbeat.unref();
    const end = () => {
      clearInterval(heartbeat);
      if (unsubscribe()) stats.sseClients--;
      streams.delete(end);
    };
    streams.add(end);
    req.on('close', end);
    res.on('close', end);
  };

  let server: Server | Http2SecureServer;
  const sockets = new Set<{ destroy(): void }>();
  if (o.tls) {
    const s = createSecureServer(
      { key: o.tls.key, cert: o.tls.cert, allowHTTP1: true },
      (req, res) => void handle(req, res as AnyRes as unknown as Res),
    );
    s.setTimeout(o.requestTimeoutMs ?? 10_000);
    s.on('secureConnection', (sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    server = s;
  } else {
    server = createHttpServer(
      {
        headersTimeout: o.headersTimeoutMs ?? 5000,
        requestTimeout: o.requestTimeoutMs ?? 10_000,
        // how often Node checks those timeouts (its default is 30 s, too slow against slowloris)
        connectionsCheckingInterval: Math.min(1000, o.headersTimeoutMs ?? 5000),
      },
      (req, res) => void handle(req, res as AnyRes as unknown as Res),
    );
  }
  await new Promise<void>((resolve) => server.listen(o.port ?? 3000, o.host ?? '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let h2c: ReturnType<typeof createH2cServer> | undefined;
  if (o.h2cPort !== undefined) {
    const h = createH2cServer((req, res) => void handle(req, res as AnyRes as unknown as Res));
    h.setTimeout(o.requestTimeoutMs ?? 10_000);
    h.on('session', (session) => {
      sockets.add(session);
      session.on('close', () => sockets.delete(session));
    });
    await new Promise<void>((resolve) => h.listen(o.h2cPort, o.host ?? '127.0.0.1', resolve));
    h2c = h;
  }
  return {
    port,
    ...(h2c ? { h2cPort: (h2c.address() as AddressInfo).port } : {}),
    server,
    stats: () => ({ ...stats, refused: { ...stats.refused } }),
    async close() {
      for (const end of [...streams]) end();
      await new Promise<void>((r) => {
        server.close(() => r());
        (server as Server).closeAllConnections?.();
        for (const sock of sockets) sock.destroy();
      });
      if (h2c) await new Promise<void>((r) => h2c.close(() => r()));
    },
  };
}
