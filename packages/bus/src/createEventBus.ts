import {
  type AnyEventMap,
  ConfigError,
  createJsonLogger,
  type EventMap,
  type Logger,
  type LogLevel,
  MemoryTransport,
  type Middleware,
  QEEventBus,
  type Transport,
} from '@qe/core';

/** Spec 000's Redis settings, plus a URL, Cluster nodes (spec 003) and TLS. */
export interface RedisConfig {
  host?: string;
  port?: number;
  db?: number;
  password?: string;
  username?: string;
  url?: string;
  keyPrefix?: string;
  /** Seconds events are kept in history (stream retention). */
  ttl?: number;
  serialization?: 'json' | 'msgpack' | 'compressed';
  /** Redis Cluster (spec 003): `{ nodes: [{ host, port }, ...] }`. */
  cluster?: { nodes: { host: string; port: number }[] };
  /** `true`, or ioredis TLS options. */
  tls?: boolean | Record<string, unknown>;
}

export interface LoadBalancerConfig {
  strategy: 'round_robin' | 'least_connections' | 'weighted' | 'hash_based';
  weights?: Map<string, number> | Record<string, number>;
}

export interface ProtocolConfig {
  websocket?: {
    enabled?: boolean;
    port?: number;
    path?: string;
    compression?: boolean;
    maxConnections?: number;
  };
  /** Spec 000's `http` (HTTP/1.1; HTTP/2 with `tls`). `http2` is accepted as the same thing. */
  http?: HttpProtocolConfig;
  http2?: HttpProtocolConfig;
}

export interface HttpProtocolConfig {
  enabled?: boolean;
  port?: number;
  /** Allowed origins. Spec 000's `cors: true` is refused: say which origins. */
  cors?: { origins: string[]; credentials?: boolean };
  /** Requests per second per client (principal, or address without authentication). */
  rateLimit?: number;
  compression?: boolean;
  tls?: { key: string | Buffer; cert: string | Buffer };
}

/**
 * Spec 000's configuration, as `createEventBus` takes it. Every key either
 * does what the spec says or is refused with a `CONFIG` error naming it.
 */
export interface EventBusConfig {
  nodeId: string;
  /** Absent: the embedded in-memory transport. */
  redis?: RedisConfig;
  loadBalancer?: LoadBalancerConfig;
  protocols?: ProtocolConfig;
  circuitBreaker?: {
    enabled?: boolean;
    failureThreshold?: number;
    recoveryTimeout?: number;
    monitoringPeriod?: number;
  };
  rateLimiting?: { enabled?: boolean; windowMs: number; maxEvents: number; skipSuccessfulRequests?: boolean };
  validation?: { enabled?: boolean; strict?: boolean; schemaPath?: string };
  authentication?: { enabled?: boolean; type?: 'jwt'; secret: string; algorithm?: string };
  /** Prometheus metrics on a prom-client registry (`bus.metrics.registry`). */
  metrics?: { enabled?: boolean; prefix?: string };
  /** Spec 003's name for the same. */
  monitoring?: { metrics?: { enabled?: boolean; prefix?: string } };
  /** `batchSize` and `batchTimeout` (ms) of the Redis reads. */
  performance?: { batchSize?: number; batchTimeout?: number };
  logging?: { level?: LogLevel };
}

export interface CreateEventBusOptions {
  /** A logger instead of the JSON lines of `logging`. */
  logger?: Logger;
  /**
   * How a plugin package is loaded (default: `import(name)`). For embedding in
   * bundlers that need static imports.
   */
  load?: (name: string) => Promise<unknown>;
}

/** Which package provides each optional part, for the error that says what to install. */
export const PLUGIN_PACKAGES = {
  redis: '@qe/redis-transport',
  loadBalancer: '@qe/router',
  circuitBreaker: '@qe/reliability',
  rateLimiting: '@qe/reliability',
  metrics: '@qe/metrics',
  'protocols.websocket': '@qe/gateway-ws',
  'protocols.http': '@qe/gateway-http',
  validation: '@qe/contracts',
} as const;

const TOP_KEYS = [
  'nodeId',
  'redis',
  'loadBalancer',
  'protocols',
  'circuitBreaker',
  'rateLimiting',
  'validation',
  'authentication',
  'metrics',
  'monitoring',
  'performance',
  'logging',
] as const;

/** Refuses keys nobody reads, naming the key and what is accepted. */
function known(
  obj: unknown,
  where: string,
  keys: readonly string[],
  reasons: Record<string, string> = {},
): void {
  if (obj === undefined) return;
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
    throw new ConfigError(where || 'config', 'must be an object');
  for (const k of Object.keys(obj)) {
    if (keys.includes(k)) continue;
    const at = where ? `${where}.${k}` : k;
    throw new ConfigError(at, reasons[k] ?? `unknown setting (accepted here: ${keys.join(', ')})`);
  }
}

function positive(where: string, v: unknown, integer = true): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))
    throw new ConfigError(where, `must be a positive ${integer ? 'integer' : 'number'}, got ${String(v)}`);
}

/** A bus composed from spec 000's configuration: the gateways start and stop with it. */
export class ComposedEventBus<M extends EventMap = AnyEventMap> extends QEEventBus<M> {
  /** The contract registry (`@qe/contracts`), when `validation` is on: register contracts here. */
  contracts?: import('@qe/contracts').ContractRegistry;
  /** The prom-client registry, when `metrics` is on. */
  metricsRegistry?: { contentType: string; metrics(): Promise<string> };
  /** The gateways `protocols` asked for, once started: their ports and stats. */
  readonly gateways: {
    websocket?: { port: number; close(): Promise<void> };
    http?: { port: number; close(): Promise<void> };
  } = {};
  /** Set by `createEventBus`: opens the gateways after the bus started. */
  openGateways: (() => Promise<void>) | null = null;
  /** Set by `createEventBus`: what else to release on stop (a Redis client of the router). */
  readonly extraClose: (() => void)[] = [];

  override async start(): Promise<void> {
    await super.start();
    try {
      await this.openGateways?.();
    } catch (err) {
      await this.closeGateways();
      await super.stop();
      throw err;
    }
  }

  override async stop(options?: Parameters<QEEventBus['stop']>[0]): Promise<void> {
    await this.closeGateways();
    try {
      await super.stop(options);
    } finally {
      for (const c of this.extraClose.splice(0)) c();
    }
  }

  private async closeGateways(): Promise<void> {
    const { websocket, http } = this.gateways;
    delete this.gateways.websocket;
    delete this.gateways.http;
    await Promise.all([websocket?.close(), http?.close()]);
  }
}

/**
 * A bus from spec 000's configuration in one call. `redis` gives the Redis
 * Streams transport (single node, URL, TLS or Cluster), else the embedded
 * in-memory one; `loadBalancer` the group strategy (`@qe/router` over Redis);
 * `circuitBreaker`, `rateLimiting` the `@qe/reliability` middleware;
 * `metrics` Prometheus (`@qe/metrics`); `protocols` the WebSocket and HTTP
 * gateways, started and stopped with the bus; `authentication` their JWT.
 * A plugin package that is not installed is a `CONFIG` error naming it; an
 * unknown or unsupported key is a `CONFIG` error naming the key.
 */
export async function createEventBus<M extends EventMap = AnyEventMap>(
  config: EventBusConfig,
  options: CreateEventBusOptions = {},
): Promise<ComposedEventBus<M>> {
  const c = config;
  known(c, '', TOP_KEYS);
  if (typeof c.nodeId !== 'string' || c.nodeId === '')
    throw new ConfigError('nodeId', 'is required (a unique node id)');
  const load = options.load ?? ((name: string) => import(name));
  const plugin = async <T>(key: keyof typeof PLUGIN_PACKAGES): Promise<T> => {
    const name = PLUGIN_PACKAGES[key];
    try {
      return (await load(name)) as T;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND')
        throw new ConfigError(key, `needs the package ${name}, which is not installed: pnpm add ${name}`, {
          cause: err,
        });
      throw err;
    }
  };

  // ----- logging and performance
  known(c.logging, 'logging', ['level']);
  if (c.logging?.level !== undefined && !['debug', 'info', 'warn', 'error'].includes(c.logging.level))
    throw new ConfigError('logging.level', 'must be one of debug, info, warn, error');
  const logger =
    options.logger ?? createJsonLogger({ level: c.logging?.level ?? 'info', bindings: { nodeId: c.nodeId } });
  known(c.performance, 'performance', ['batchSize', 'batchTimeout'], {
    connectionPoolSize:
      'not used: each transport keeps one command connection (auto-pipelined) and one for blocking reads',
  });
  positive('performance.batchSize', c.performance?.batchSize);
  positive('performance.batchTimeout', c.performance?.batchTimeout);
  if (c.performance && !c.redis)
    throw new ConfigError(
      'performance',
      'tunes the Redis reads: it needs redis (the in-memory transport has no batches)',
    );

  // ----- transport
  let transport: Transport;
  let ioredis: unknown;
  const closers: (() => void)[] = [];
  let redisClient: (() => unknown) | undefined;
  if (c.redis !== undefined) {
    const r = c.redis;
    known(r, 'redis', [
      'host',
      'port',
      'db',
      'password',
      'username',
      'url',
      'keyPrefix',
      'ttl',
      'serialization',
      'cluster',
      'tls',
    ]);
    const { createRedisTransport } = await plugin<typeof import('@qe/redis-transport')>('redis');
    const tls = r.tls === true ? {} : r.tls === false ? undefined : r.tls;
    transport = createRedisTransport({
      ...(r.url === undefined ? {} : { url: r.url }),
      ...(r.host === undefined || r.cluster ? {} : { host: r.host }),
      ...(r.port === undefined || r.cluster ? {} : { port: r.port }),
      ...(r.db === undefined ? {} : { db: r.db }),
      ...(r.username === undefined ? {} : { username: r.username }),
      ...(r.password === undefined ? {} : { password: r.password }),
      ...(r.keyPrefix === undefined ? {} : { keyPrefix: r.keyPrefix }),
      ...(r.ttl === undefined ? {} : { ttl: r.ttl }),
      ...(r.serialization === undefined ? {} : { serialization: r.serialization }),
      ...(r.cluster === undefined ? {} : { cluster: { nodes: r.cluster.nodes } }),
      ...(tls === undefined ? {} : { tls }),
      ...(c.performance?.batchSize === undefined ? {} : { readCount: c.performance.batchSize }),
      ...(c.performance?.batchTimeout === undefined ? {} : { blockMs: c.performance.batchTimeout }),
    } as Parameters<typeof createRedisTransport>[0]);
    redisClient = () => {
      // a plain client for the router's membership and inboxes, on the same server(s)
      // biome-ignore lint/suspicious/noExplicitAny: ioredis is an optional peer, loaded on demand
      const { Redis, Cluster } = ioredis as any;
      const common = {
        ...(r.password === undefined ? {} : { password: r.password }),
        ...(tls === undefined ? {} : { tls }),
      };
      if (r.cluster) return new Cluster(r.cluster.nodes, { redisOptions: common });
      if (r.url) return new Redis(r.url, common);
      return new Redis({ host: r.host ?? '127.0.0.1', port: r.port ?? 6379, db: r.db ?? 0, ...common });
    };
  } else transport = new MemoryTransport();

  // ----- load balancing
  if (c.loadBalancer !== undefined) {
    known(c.loadBalancer, 'loadBalancer', ['strategy', 'weights'], {
      healthCheckInterval:
        "not used: members are tracked by heartbeats (the router's heartbeatMs and memberTtlMs)",
      maxConnections: 'not used: a member takes as many events as its subscriptions can run (maxConcurrency)',
    });
    const router = await plugin<typeof import('@qe/router')>('loadBalancer');
    const lb = c.loadBalancer;
    // spec 000 gives a Map; a plain object (JSON config) is accepted too
    const weights =
      lb.weights === undefined || lb.weights instanceof Map
        ? lb.weights
        : new Map(Object.entries(lb.weights));
    const strategy = router.strategyFromConfig({
      strategy: lb.strategy,
      ...(weights ? { weights } : {}),
    } as never);
    if (redisClient) {
      try {
        ioredis ??= await load('ioredis');
      } catch (err) {
        throw new ConfigError('loadBalancer', 'needs the package ioredis with redis: pnpm add ioredis', {
          cause: err,
        });
      }
      const client = redisClient() as { disconnect(): void };
      closers.push(() => client.disconnect());
      transport = new router.RoutedTransport({
        inner: transport,
        redis: client as never,
        prefix: `${c.redis?.keyPrefix ?? 'qe'}:router`,
        strategy,
      });
    } else transport = new MemoryTransport({ balancer: strategy });
  }

  // ----- middleware
  const middleware: Middleware[] = [];
  let registry: { contentType: string; metrics(): Promise<string> } | undefined;
  known(c.monitoring, 'monitoring', ['metrics'], {
    alerting: 'use @qe/metrics createHealthMonitor(bus, { thresholds }) (the broker reads ALERT_* settings)',
  });
  const metricsCfg = c.metrics ?? c.monitoring?.metrics;
  known(metricsCfg, c.metrics ? 'metrics' : 'monitoring.metrics', ['enabled', 'prefix'], {
    collectionInterval: 'not used: Prometheus collects when it scrapes',
  });
  let breakerStats: unknown;
  if (c.circuitBreaker !== undefined && c.circuitBreaker.enabled !== false) {
    known(c.circuitBreaker, 'circuitBreaker', [
      'enabled',
      'failureThreshold',
      'recoveryTimeout',
      'monitoringPeriod',
    ]);
    const { createCircuitBreaker } = await plugin<typeof import('@qe/reliability')>('circuitBreaker');
    const cb = c.circuitBreaker;
    const breaker = createCircuitBreaker({
      ...(cb.failureThreshold === undefined ? {} : { failureThreshold: cb.failureThreshold }),
      ...(cb.recoveryTimeout === undefined ? {} : { recoveryTimeout: cb.recoveryTimeout }),
      ...(cb.monitoringPeriod === undefined ? {} : { monitoringPeriod: cb.monitoringPeriod }),
    });
    breakerStats = breaker;
    middleware.push(breaker);
  } else
    known(c.circuitBreaker, 'circuitBreaker', [
      'enabled',
      'failureThreshold',
      'recoveryTimeout',
      'monitoringPeriod',
    ]);
  if (c.rateLimiting !== undefined && c.rateLimiting.enabled !== false) {
    known(c.rateLimiting, 'rateLimiting', ['enabled', 'windowMs', 'maxEvents', 'skipSuccessfulRequests']);
    if (c.rateLimiting.skipSuccessfulRequests === true)
      throw new ConfigError(
        'rateLimiting.skipSuccessfulRequests',
        'not supported: every event costs one token when it is published (or consumed), whatever its outcome',
      );
    const { createRateLimiter } = await plugin<typeof import('@qe/reliability')>('rateLimiting');
    // over the limit a publish fails with RATE_LIMITED (spec 000: it "prevents abuse"), per agentId
    middleware.push(
      createRateLimiter({
        windowMs: c.rateLimiting.windowMs,
        maxEvents: c.rateLimiting.maxEvents,
        mode: 'fail',
      }),
    );
  } else
    known(c.rateLimiting, 'rateLimiting', ['enabled', 'windowMs', 'maxEvents', 'skipSuccessfulRequests']);
  if (metricsCfg !== undefined && metricsCfg.enabled !== false) {
    const { createPrometheusMiddleware } = await plugin<typeof import('@qe/metrics')>('metrics');
    // a registry of its own: two buses in one process must not register the same metrics twice
    let promClient: typeof import('prom-client');
    try {
      promClient = (await load('prom-client')) as typeof import('prom-client');
    } catch (err) {
      throw new ConfigError('metrics', 'needs the package prom-client: pnpm add prom-client', { cause: err });
    }
    const prom = createPrometheusMiddleware({
      registry: new promClient.Registry(),
      ...(metricsCfg.prefix === undefined ? {} : { prefix: metricsCfg.prefix }),
      ...(breakerStats ? { circuits: [breakerStats as never] } : {}),
    });
    registry = prom.registry;
    // metrics outermost, so they count what the other middleware refuses or postpones
    middleware.unshift(prom);
  }
  let contracts: import('@qe/contracts').ContractRegistry | undefined;
  known(c.validation, 'validation', ['enabled', 'strict', 'schemaPath']);
  if (c.validation !== undefined && c.validation.enabled !== false) {
    const v = c.validation;
    if (v.strict !== undefined && typeof v.strict !== 'boolean')
      throw new ConfigError('validation.strict', 'must be true or false');
    const mod = await plugin<typeof import('@qe/contracts')>('validation');
    // on Redis every process shares the contracts and their versions; in memory they are local
    let client: { disconnect(): void } | undefined;
    if (redisClient) {
      ioredis ??= await load('ioredis');
      client = redisClient() as { disconnect(): void };
      closers.push(() => client!.disconnect());
    }
    contracts = new mod.ContractRegistry({
      ...(client ? { redis: client as never, keyPrefix: `${c.redis?.keyPrefix ?? 'qe'}:contracts` } : {}),
      logger,
    });
    await contracts.start();
    const registry = contracts;
    closers.unshift(() => void registry.close().catch(() => {}));
    if (v.schemaPath !== undefined) await contracts.loadDirectory(v.schemaPath);
    middleware.push(mod.contractValidation({ registry: contracts, strict: v.strict ?? true, logger }));
  }

  // ----- authentication and gateways
  known(c.authentication, 'authentication', ['enabled', 'type', 'secret', 'algorithm']);
  const a = c.authentication;
  const auth =
    a && a.enabled !== false
      ? (() => {
          if (a.type !== undefined && a.type !== 'jwt')
            throw new ConfigError('authentication.type', "only 'jwt' is supported");
          return { jwt: { algorithms: [a.algorithm ?? 'HS256'], secret: a.secret } };
        })()
      : undefined;
  known(c.protocols, 'protocols', ['websocket', 'http', 'http2'], {
    grpc: 'no gRPC gateway yet',
  });
  const ws = c.protocols?.websocket;
  known(ws, 'protocols.websocket', ['enabled', 'port', 'path', 'compression', 'maxConnections']);
  const httpKey = c.protocols?.http ? 'http' : 'http2';
  const http = c.protocols?.http ?? c.protocols?.http2;
  if (c.protocols?.http && c.protocols.http2)
    throw new ConfigError(
      'protocols.http2',
      'give one of protocols.http and protocols.http2 (the same gateway)',
    );
  known(http, `protocols.${httpKey}`, ['enabled', 'port', 'cors', 'rateLimit', 'compression', 'tls']);
  if (http && typeof http.cors === 'boolean')
    throw new ConfigError(
      `protocols.${httpKey}.cors`,
      'name the allowed origins: { origins: ["https://app.example"] }',
    );
  positive(`protocols.${httpKey}.rateLimit`, http?.rateLimit);
  const wsGateway =
    ws && ws.enabled !== false
      ? await plugin<typeof import('@qe/gateway-ws')>('protocols.websocket')
      : undefined;
  const httpGateway =
    http && http.enabled !== false
      ? await plugin<typeof import('@qe/gateway-http')>('protocols.http')
      : undefined;
  if (auth === undefined && (wsGateway || httpGateway))
    logger.warn('gateways without authentication: every client may do everything (set authentication)', {
      nodeId: c.nodeId,
    });

  const bus = new ComposedEventBus<M>({ nodeId: c.nodeId, transport, logger, middleware });
  bus.extraClose.push(...closers);
  if (registry) bus.metricsRegistry = registry;
  if (contracts) bus.contracts = contracts;
  bus.openGateways = async () => {
    if (wsGateway && ws) {
      bus.gateways.websocket = await wsGateway.createWebSocketGateway({
        bus: bus as unknown as QEEventBus,
        ...(ws.port === undefined ? {} : { port: ws.port }),
        ...(ws.path === undefined ? {} : { path: ws.path }),
        ...(ws.compression === undefined ? {} : { compression: ws.compression }),
        ...(ws.maxConnections === undefined ? {} : { maxConnections: ws.maxConnections }),
        ...(auth ? { auth } : {}),
      });
    }
    if (httpGateway && http) {
      bus.gateways.http = await httpGateway.createHttpGateway({
        bus: bus as unknown as QEEventBus,
        ...(http.port === undefined ? {} : { port: http.port }),
        ...(http.cors === undefined ? {} : { cors: http.cors }),
        ...(http.rateLimit === undefined
          ? {}
          : { rateLimit: { windowMs: 1000, maxRequests: http.rateLimit } }),
        ...(http.compression === undefined ? {} : { compression: http.compression }),
        ...(http.tls === undefined ? {} : { tls: http.tls }),
        ...(registry
          ? { metrics: { contentType: registry.contentType, render: () => registry.metrics() } }
          : {}),
        ...(auth ? { auth } : {}),
      });
    }
  };
  return bus;
}
