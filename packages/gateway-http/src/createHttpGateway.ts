import { createServer as createHttpServer, type Server } from 'node:http';
import {
  createServer as createH2cServer,
  createSecureServer,
  type Http2SecureServer,
  type Http2Server,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigError, type DeadLetterStore, type QEEventBus } from '@qe/core';
import { createTokenVerifier, type JwtConfig, type Permissions } from '@qe/gateway-auth';
import { MemoryTokenBuckets, type TokenBucketStore } from '@qe/reliability';
import { createConnectionGuard } from './connection-guard.js';
import { type AnyRes, createRequestHandler, type HttpGatewayStats, type Req, type Res } from './handler.js';

export type { HttpGatewayStats } from './handler.js';

export interface HttpGatewayOptions {
  bus: QEEventBus;
  /** Default 3000; 0 picks a free port. */
  port?: number;
  /** Default `127.0.0.1`. */
  host?: string;
  /**
   * `false`: open no port of its own; serve requests only through `handle`
   * (mounted on another server, as the broker mounts the dead-letter routes).
   * Default true.
   */
  listen?: boolean;
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
  /**
   * Requests per window per principal (or client address without auth); 429
   * with Retry-After. `store`: where the buckets live; give a
   * `RedisTokenBuckets` (`@qe/reliability`) so that every gateway instance on
   * the same Redis shares one budget per principal. Default: in this process.
   */
  rateLimit?: { windowMs: number; maxRequests: number; store?: TokenBucketStore };
  /** Largest request body, enforced while reading. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Whole-request time limit: a body must arrive within it (slowloris). Default 10,000 ms. */
  requestTimeoutMs?: number;
  /**
   * A connection must complete a request's headers within this time of
   * connecting or of its previous request ending, on every listener (HTTP/1.1,
   * TLS, h2c). Default 5,000 ms.
   */
  headersTimeoutMs?: number;
  /** How long `close()` waits for requests in progress to get their reply. Default 5,000 ms. */
  closeTimeoutMs?: number;
  /**
   * JWT authentication. Without it every client may do everything, the
   * dead-letter routes included: configure it before exposing the gateway.
   */
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

export interface HttpGateway {
  /** The port it listens on; 0 with `listen: false`. */
  readonly port: number;
  /** The h2c port, when `h2cPort` was given. */
  readonly h2cPort?: number;
  /** Its own server; absent with `listen: false`. */
  readonly server?: Server | Http2SecureServer;
  /** The gateway as a request listener, for mounting its routes on another HTTP/1.1 server. */
  handle(req: Req, res: AnyRes): void;
  stats(): HttpGatewayStats;
  /**
   * Stops accepting connections, ends SSE streams, lets requests in progress
   * (a publish already stored, say) get their reply within `closeTimeoutMs`,
   * then closes what is left.
   */
  close(): Promise<void>;
}

const KNOWN_OPTIONS = new Set([
  'bus',
  'port',
  'host',
  'listen',
  'tls',
  'h2cPort',
  'cors',
  'rateLimit',
  'maxBodyBytes',
  'requestTimeoutMs',
  'headersTimeoutMs',
  'closeTimeoutMs',
  'auth',
  'deadLetters',
  'metrics',
  'compression',
  'maxSseBufferedBytes',
]);

function positiveInt(name: string, v: number | undefined, def: number): number {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(name, 'must be a positive integer');
  return n;
}

/** Listens, or rejects with the bind error (a port in use, a bad address): never an unhandled 'error'. */
function listen(
  server: { listen: Server['listen']; once: Server['once']; off: Server['off'] },
  port: number,
  host: string,
) {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * The HTTP gateway: `POST /events` (one or a batch, 202 with the ids),
 * `GET /events` (history), `GET /events/stream` (Server-Sent Events, resumable
 * with `Last-Event-ID`), dead-letter endpoints (admin only), `GET /health`,
 * `GET /metrics`. HTTP/2 with TLS (ALPN, HTTP/1.1 fallback), cleartext
 * HTTP/1.1, and h2c on a port of its own. Plain `node:http`/`node:http2` with a
 * small router: HTTP/2 and SSE stay first-class, and every limit is enforced
 * before a body is buffered. Errors are JSON with the bus's stable `code` and
 * the matching status; every refusal is counted.
 */
export async function createHttpGateway(options: HttpGatewayOptions): Promise<HttpGateway> {
  const o = options;
  if (!o?.bus) throw new ConfigError('bus', 'a QEEventBus is required');
  for (const k of Object.keys(o))
    if (!KNOWN_OPTIONS.has(k))
      throw new ConfigError(k, `unknown option (accepted: ${[...KNOWN_OPTIONS].join(', ')})`);
  const maxBodyBytes = positiveInt('maxBodyBytes', o.maxBodyBytes, 1024 * 1024);
  const maxSseBufferedBytes = positiveInt('maxSseBufferedBytes', o.maxSseBufferedBytes, 1024 * 1024);
  const requestTimeoutMs = positiveInt('requestTimeoutMs', o.requestTimeoutMs, 10_000);
  const headersTimeoutMs = positiveInt('headersTimeoutMs', o.headersTimeoutMs, 5000);
  const closeTimeoutMs = positiveInt('closeTimeoutMs', o.closeTimeoutMs, 5000);
  if (o.cors?.origins.includes('*') && o.cors.credentials)
    throw new ConfigError('cors', 'a wildcard origin cannot be combined with credentials');
  if (o.rateLimit) {
    positiveInt('rateLimit.windowMs', o.rateLimit.windowMs, 0);
    positiveInt('rateLimit.maxRequests', o.rateLimit.maxRequests, 0);
  }
  const stats: HttpGatewayStats = {
    requests: 0,
    refused: {},
    published: 0,
    sseClients: 0,
    sseDropped: 0,
    sseExpired: 0,
    idleClosed: 0,
    internalErrors: 0,
  };
  const streams = new Set<() => void>();
  const handler = createRequestHandler({
    bus: o.bus,
    stats,
    maxBodyBytes,
    maxSseBufferedBytes,
    requestTimeoutMs,
    ...(o.auth ? { verify: createTokenVerifier(o.auth.jwt), auth: o.auth } : {}),
    ...(o.cors ? { cors: o.cors } : {}),
    ...(o.rateLimit ? { rateLimit: o.rateLimit } : {}),
    buckets: o.rateLimit?.store ?? new MemoryTokenBuckets(),
    ...((o.deadLetters ?? o.bus.deadLetters) ? { deadLetters: o.deadLetters ?? o.bus.deadLetters } : {}),
    ...(o.metrics ? { metrics: o.metrics } : {}),
    compression: o.compression === true,
    streams,
  });
  const guard = createConnectionGuard(headersTimeoutMs);
  /** Requests in progress, other than SSE streams: `close()` lets them finish. */
  let inFlight = 0;
  let drained: (() => void) | null = null;
  const handle = (req: Req, anyRes: AnyRes) => {
    const res = anyRes as unknown as Res;
    const done = guard.begin(req.socket);
    const sse = (req.url ?? '').startsWith('/events/stream');
    if (!sse) inFlight++;
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      done();
      if (!sse && --inFlight === 0) drained?.();
    };
    res.on('close', finish);
    handler(req, res).catch(() => {
      // the reply itself failed (the client went away mid-write): reset, count, carry on
      stats.internalErrors++;
      try {
        res.destroy?.();
      } catch {
        // already gone
      }
      finish();
    });
  };

  let server: Server | Http2SecureServer | undefined;
  let h2c: Http2Server | undefined;
  const host = o.host ?? '127.0.0.1';
  const watch = (socket: Socket) => {
    socket.on('error', () => {}); // a reset mid-request is the client's business, never an uncaught error
    guard.track(socket);
  };
  const streamErrors = (s: Http2SecureServer | Http2Server) => {
    s.on('stream', (stream) => stream.on('error', () => {}));
    s.on('sessionError', () => {});
  };
  if (o.listen !== false) {
    if (o.tls) {
      const s = createSecureServer(
        { key: o.tls.key, cert: o.tls.cert, allowHTTP1: true, handshakeTimeout: headersTimeoutMs },
        handle,
      );
      s.on('secureConnection', watch);
      s.on('tlsClientError', () => void (stats.refused.TLS = (stats.refused.TLS ?? 0) + 1));
      streamErrors(s);
      server = s;
    } else {
      const s = createHttpServer(
        {
          headersTimeout: headersTimeoutMs,
          requestTimeout: requestTimeoutMs,
          // how often Node checks those timeouts (its default is 30 s, too slow against slowloris)
          connectionsCheckingInterval: Math.min(1000, headersTimeoutMs),
        },
        handle,
      );
      s.on('connection', watch);
      server = s;
    }
    await listen(server as Server, o.port ?? 3000, host);
    if (o.h2cPort !== undefined) {
      const h = createH2cServer(handle);
      h.on('connection', watch);
      streamErrors(h);
      try {
        await listen(h as unknown as Server, o.h2cPort, host);
      } catch (err) {
        await new Promise<void>((r) => server!.close(() => r()));
        guard.stop();
        throw err;
      }
      h2c = h;
    }
  }
  const port = server ? (server.address() as AddressInfo).port : 0;
  let closing: Promise<void> | null = null;
  return {
    port,
    ...(h2c ? { h2cPort: (h2c.address() as AddressInfo).port } : {}),
    ...(server ? { server } : {}),
    handle,
    stats: () => ({ ...stats, refused: { ...stats.refused }, idleClosed: guard.closedIdle }),
    close() {
      if (closing) return closing;
      closing = (async () => {
        for (const end of [...streams]) end();
        const closed = Promise.all(
          [server, h2c].map((s) => new Promise<void>((r) => (s ? s.close(() => r()) : r()))),
        );
        (server as Server | undefined)?.closeIdleConnections?.();
        if (inFlight > 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((r) => {
            drained = r;
            timer = setTimeout(r, closeTimeoutMs);
          });
          clearTimeout(timer);
        }
        (server as Server | undefined)?.closeAllConnections?.();
        guard.destroyAll();
        guard.stop();
        await closed;
      })();
      return closing;
    },
  };
}
