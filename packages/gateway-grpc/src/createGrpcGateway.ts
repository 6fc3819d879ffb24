import { type Metadata, Server, ServerCredentials } from '@grpc/grpc-js';
import {
  assertKnownKeys,
  ConfigError,
  checkIntSetting,
  type QEEventBus,
  RateLimitedError,
  UnauthorizedError,
  type ValidationError,
} from '@qe/core';
import {
  ALLOW_ALL,
  checkMessageRateLimit,
  createTokenVerifier,
  extractToken,
  type JwtConfig,
  type Permissions,
  permissionsFromClaims,
} from '@qe/gateway-auth';
import { MemoryTokenBuckets, type TokenBucketStore } from '@qe/reliability';
import { emptyStats, type GatewayContext, type GrpcGatewayStats, type Principal } from './context.js';
import { createHealthService } from './health.js';
import { EVENT_BUS_SERVICE, guardedService, HEALTH_SERVICE } from './proto.js';
import { publishMethods } from './publish.js';
import { subscribeStream } from './subscribe.js';

export type { GrpcGatewayStats } from './context.js';

export interface GrpcGatewayOptions {
  /** The bus it serves. */
  bus: QEEventBus;
  /** Default 50051; 0 picks a free port. */
  port?: number;
  /** Default `127.0.0.1`: this machine only. */
  host?: string;
  /** Serve over TLS; without it, cleartext HTTP/2. `ca` + `requireClientCert`: mutual TLS. */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; requireClientCert?: boolean };
  /** JWT authentication (`authorization: Bearer <token>` metadata); without it every caller may do everything (development). */
  auth?: { jwt: JwtConfig; permissionsClaim?: string; defaultPermissions?: Permissions };
  /**
   * Messages per window per client connection and per principal (token
   * buckets). Every call is one message, and so is every event of a publish
   * stream; acks are not counted. `store` holds the per-principal buckets: a
   * `RedisTokenBuckets` (`@qe/reliability`) shares one budget per principal
   * across every gateway on the same Redis; default in this process.
   */
  rateLimit?: {
    windowMs: number;
    maxMessages: number;
    perPrincipal?: { windowMs: number; maxMessages: number };
    store?: TokenBucketStore;
  };
  /** Largest message a client may send, bytes; grpc-js refuses a larger one (RESOURCE_EXHAUSTED) before buffering it. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Subscribe streams open at once, across all clients. Default 1000. */
  maxSubscriptions?: number;
  /** Subscribe streams one principal may hold open. Default 100. */
  maxSubscriptionsPerPrincipal?: number;
  /** Bytes of events a subscriber may leave unread before `slowClientPolicy` applies. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** `drop`: skip events for it (counted, and it gets a `dropped` message once it catches up); `disconnect`: end its stream with RESOURCE_EXHAUSTED. Default `drop`. */
  slowClientPolicy?: 'drop' | 'disconnect';
  /** How long a group delivery waits for the client's ack before the bus retries it. Default 30,000 ms. */
  ackTimeoutMs?: number;
  /** A Subscribe stream must send its start message within this time. Default 10,000 ms. */
  startTimeoutMs?: number;
  /** How many recent events a resume looks through for its event id. Default 10,000. */
  resumeScanLimit?: number;
  /** HTTP/2 keepalive pings: a client that does not answer within 20 s is disconnected. Default 30,000 ms. */
  heartbeatIntervalMs?: number;
  /** How often `Health.Watch` streams see the bus's health re-read. Default 5,000 ms. */
  healthIntervalMs?: number;
  /** How long `close()` lets calls in progress finish before cutting them. Default 5,000 ms. */
  closeTimeoutMs?: number;
}

const OPTION_KEYS = [
  'bus',
  'port',
  'host',
  'tls',
  'auth',
  'rateLimit',
  'maxMessageBytes',
  'maxSubscriptions',
  'maxSubscriptionsPerPrincipal',
  'maxBufferedBytes',
  'slowClientPolicy',
  'ackTimeoutMs',
  'startTimeoutMs',
  'resumeScanLimit',
  'heartbeatIntervalMs',
  'healthIntervalMs',
  'closeTimeoutMs',
] as const;

/** Events a publish stream reads ahead of its replies; past that it stops reading (HTTP/2 flow control holds the client). */
const MAX_STREAM_IN_FLIGHT = 256;

export interface GrpcGateway {
  /** The port it listens on. */
  readonly port: number;
  /** The grpc-js server (to add services of your own before clients arrive). */
  readonly server: Server;
  stats(): GrpcGatewayStats;
  /**
   * Ends every stream (UNAVAILABLE; unacked group deliveries go back to the
   * bus), lets unary calls in progress finish within `closeTimeoutMs`, then
   * stops the server. Idempotent. The bus is the caller's to stop.
   */
  close(): Promise<void>;
}

function validate(bus: QEEventBus, o: GrpcGatewayOptions): void {
  if (bus === null || typeof bus !== 'object' || typeof (bus as QEEventBus).publish !== 'function')
    throw new ConfigError('bus', 'a QEEventBus is required');
  assertKnownKeys(o, OPTION_KEYS);
  checkIntSetting('port', o.port, 0, 65535);
  if (o.host !== undefined && (typeof o.host !== 'string' || o.host === ''))
    throw new ConfigError('host', 'must be a host name or IP address');
  for (const k of [
    'maxMessageBytes',
    'maxSubscriptions',
    'maxSubscriptionsPerPrincipal',
    'maxBufferedBytes',
    'ackTimeoutMs',
    'startTimeoutMs',
    'resumeScanLimit',
    'heartbeatIntervalMs',
    'healthIntervalMs',
    'closeTimeoutMs',
  ] as const)
    checkIntSetting(k, o[k], 1, 2_147_483_647);
  if (
    o.slowClientPolicy !== undefined &&
    o.slowClientPolicy !== 'drop' &&
    o.slowClientPolicy !== 'disconnect'
  )
    throw new ConfigError('slowClientPolicy', "must be 'drop' or 'disconnect'");
  if (o.tls !== undefined) {
    assertKnownKeys(o.tls, ['key', 'cert', 'ca', 'requireClientCert'], 'tls.');
    if (!o.tls.key || !o.tls.cert) throw new ConfigError('tls', 'needs key and cert (PEM)');
    if (o.tls.requireClientCert && !o.tls.ca)
      throw new ConfigError('tls.ca', 'required to check client certificates');
  }
  if (o.auth !== undefined)
    assertKnownKeys(o.auth, ['jwt', 'permissionsClaim', 'defaultPermissions'], 'auth.');
  if (o.rateLimit !== undefined) {
    const rl = o.rateLimit;
    assertKnownKeys(rl, ['windowMs', 'maxMessages', 'perPrincipal', 'store'], 'rateLimit.');
    checkMessageRateLimit(rl);
    if (rl.perPrincipal)
      assertKnownKeys(rl.perPrincipal, ['windowMs', 'maxMessages'], 'rateLimit.perPrincipal.');
  }
}

/**
 * A gRPC gateway on a bus (`qe.v1.EventBus` from the shipped
 * `proto/qe/v1/event_bus.proto`, and `grpc.health.v1.Health`): unary and batch
 * publish, a publish stream with one ack or error per event, Subscribe
 * (broadcast or group with acks so at-least-once holds through it, resumable
 * from an event id), History. The same JWT principals, permissions, rate
 * limits and error codes as the WebSocket and HTTP gateways, mapped to gRPC
 * status codes; every request decoded under a guard, so bad bytes get
 * INVALID_ARGUMENT and never reach other clients. Rejects with `CONFIG` for
 * an unknown or bad option and with the bind error when the port is taken.
 */
export async function createGrpcGateway(options: GrpcGatewayOptions): Promise<GrpcGateway> {
  if (options === null || typeof options !== 'object') throw new ConfigError('options', 'must be an object');
  const o = options;
  const bus = o.bus;
  validate(bus, o);
  const verify = o.auth ? createTokenVerifier(o.auth.jwt) : undefined;
  const stats = emptyStats();
  const connBuckets = new MemoryTokenBuckets();
  const principalBuckets = o.rateLimit?.store ?? connBuckets;
  let closing = false;

  const authenticate = async (metadata: Metadata): Promise<Principal> => {
    if (!verify) return { id: 'anonymous', permissions: ALLOW_ALL, expiresAt: 0 };
    const values = metadata.get('authorization');
    const header = typeof values[0] === 'string' ? values[0] : undefined;
    const token = header === undefined ? undefined : extractToken({ authorization: header });
    if (!token)
      throw new UnauthorizedError('a bearer token is required (metadata authorization: Bearer <token>)');
    const v = await verify(token);
    let permissions: Permissions;
    try {
      permissions = permissionsFromClaims(
        v.claims,
        o.auth?.permissionsClaim ?? 'qe',
        o.auth?.defaultPermissions,
      );
    } catch (err) {
      throw new UnauthorizedError(`invalid permissions claim: ${(err as Error).message}`);
    }
    return { id: v.subject, permissions, expiresAt: v.expiresAt };
  };

  const rateCheck = async (peer: string, who: Principal): Promise<void> => {
    const rl = o.rateLimit;
    if (!rl) return;
    const a = await connBuckets.take(`conn:${peer}`, rl.maxMessages, rl.maxMessages / rl.windowMs, 1);
    if (!a.allowed) throw new RateLimitedError('message rate limit exceeded', a.retryAfterMs);
    if (rl.perPrincipal) {
      const pp = rl.perPrincipal;
      const b = await principalBuckets.take(
        `principal:${who.id}`,
        pp.maxMessages,
        pp.maxMessages / pp.windowMs,
        1,
      );
      if (!b.allowed) throw new RateLimitedError('principal rate limit exceeded', b.retryAfterMs);
    }
  };

  const count = (err: unknown) => {
    const code = (err as { code?: unknown })?.code;
    const e = stats.errors;
    if (code === 'UNAUTHORIZED') stats.refused.unauthenticated++;
    else if (code === 'VALIDATION' && isMalformed(err as ValidationError)) e.malformed++;
    else if (code === 'VALIDATION' || code === 'INVALID_PATTERN') e.validation++;
    else if (code === 'FORBIDDEN') e.forbidden++;
    else if (code === 'RATE_LIMITED') e.rateLimited++;
    else if (code === 'TIMEOUT') e.deadline++;
    else if (code !== 'QUEUE_FULL') e.other++; // QUEUE_FULL is counted where it is raised
  };

  const streams = new Set<() => void>();
  const ctx: GatewayContext = {
    bus,
    stats,
    authenticate,
    rateCheck,
    count,
    limits: {
      maxSubscriptions: o.maxSubscriptions ?? 1000,
      maxSubscriptionsPerPrincipal: o.maxSubscriptionsPerPrincipal ?? 100,
      maxBufferedBytes: o.maxBufferedBytes ?? 1024 * 1024,
      slowClientPolicy: o.slowClientPolicy ?? 'drop',
      ackTimeoutMs: o.ackTimeoutMs ?? 30_000,
      startTimeoutMs: o.startTimeoutMs ?? 10_000,
      resumeScanLimit: o.resumeScanLimit ?? 10_000,
      maxStreamInFlight: MAX_STREAM_IN_FLIGHT,
    },
    subscriptionsOf: new Map(),
    streams,
    isClosing: () => closing,
  };

  const server = new Server({
    'grpc.max_receive_message_length': o.maxMessageBytes ?? 1024 * 1024,
    'grpc.keepalive_time_ms': o.heartbeatIntervalMs ?? 30_000,
    'grpc.keepalive_timeout_ms': 20_000,
  });
  server.addService(guardedService(EVENT_BUS_SERVICE), {
    ...publishMethods(ctx),
    Subscribe: (call: Parameters<typeof subscribeStream>[1]) => subscribeStream(ctx, call),
  });
  const health = createHealthService(bus, o.healthIntervalMs ?? 5000, () => closing);
  server.addService(guardedService(HEALTH_SERVICE), health.implementation);

  const credentials = o.tls
    ? ServerCredentials.createSsl(
        o.tls.ca === undefined ? null : Buffer.from(o.tls.ca),
        [{ private_key: Buffer.from(o.tls.key), cert_chain: Buffer.from(o.tls.cert) }],
        o.tls.requireClientCert === true,
      )
    : ServerCredentials.createInsecure();
  const host = o.host ?? '127.0.0.1';
  const address = `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${o.port ?? 50051}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, credentials, (err, p) => (err ? reject(err) : resolve(p))),
  ).catch((err: Error) => {
    server.forceShutdown();
    throw Object.assign(err, { code: /in use|EADDRINUSE/i.test(err.message) ? 'EADDRINUSE' : 'BIND' });
  });

  let closed: Promise<void> | null = null;
  return {
    port,
    server,
    stats: () => ({
      ...stats,
      refused: { ...stats.refused },
      errors: { ...stats.errors },
    }),
    close() {
      closed ??= (async () => {
        closing = true;
        health.close();
        for (const end of [...streams]) end();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, o.closeTimeoutMs ?? 5000);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      })();
      return closed;
    },
  };
}

/** Bytes that did not decode, or JSON text that did not parse: malformed input rather than an invalid event. */
function isMalformed(err: ValidationError): boolean {
  return err.field === 'request' || err.field === 'kind' || /Json$/.test(err.field);
}
