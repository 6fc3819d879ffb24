import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  EventBusError,
  isEventBusError,
  type Logger,
  MemoryTransport,
  noopLogger,
  QEEventBus,
  type Transport,
  toError,
  ValidationError,
} from '@qe/core';
import { createGrpcGateway, type GrpcGateway } from '@qe/gateway-grpc';
import { createHttpGateway, type HttpGateway } from '@qe/gateway-http';
import { createWebSocketGateway, type WebSocketGateway } from '@qe/gateway-ws';
import { createHealthMonitor, createPrometheusMiddleware } from '@qe/metrics';
import { createRedisTransport } from '@qe/redis-transport';
import { createCircuitBreaker, RedisTokenBuckets, type TokenBucketStore } from '@qe/reliability';
import { Cluster, Redis } from 'ioredis';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type BrokerConfig, isLoopback, redactConfig } from './config.js';
import { BrokerContracts } from './contracts.js';
import { renderDashboardHtml } from './dashboard.js';
import { BrokerMonitor } from './monitor.js';

/** Options for `createBroker` beyond the validated configuration. */
export interface CreateBrokerOptions {
  logger?: Logger;
  /** Use this transport instead of the one the configuration describes (tests, embedding). */
  transport?: Transport;
}

/** How `stop()` ended: everything drained, or the shutdown timeout cut it short. */
export type StopResult = 'clean' | 'timeout';

/** A running reference broker: one bus, one HTTP server. */
export interface Broker {
  readonly config: BrokerConfig;
  readonly bus: QEEventBus;
  readonly monitor: BrokerMonitor;
  /** Contracts and cross-project messaging (`CONTRACTS_SCHEMA_PATH`, `PROJECTS_FILE`). */
  readonly contracts: BrokerContracts;
  /** `http://host:port` once started. */
  readonly url: string;
  readonly port: number;
  /** The HTTP gateway's base URL (its own port), or '' when it is off. */
  readonly httpGatewayUrl: string;
  /** The gRPC gateway's `host:port`, or '' when it is off (`GRPC_GATEWAY_PORT` unset). */
  readonly grpcGatewayAddress: string;
  /** Connects the bus, subscribes the monitor, listens. Rejects (and cleans up) if any step fails. */
  start(): Promise<void>;
  /**
   * Graceful shutdown, at most `shutdownTimeoutMs`: stops accepting requests
   * and connections, stops the monitor, lets the bus drain and ack in-flight
   * handlers, closes the transport, then drops remaining sockets. Idempotent:
   * concurrent calls share one shutdown.
   */
  stop(): Promise<StopResult>;
}

/** Every JSON reply: never sniffed as another type, never cached. */
const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
} as const;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  const e = toError(err);
  if (isEventBusError(e)) {
    const status =
      e.code === 'VALIDATION' || e.code === 'INVALID_PATTERN'
        ? 400
        : e.code === 'NOT_FOUND'
          ? 404
          : e.code === 'PAYLOAD_TOO_LARGE'
            ? 413
            : e.code === 'UNSUPPORTED'
              ? 501
              : e.code === 'CLOSED' || e.code === 'NOT_CONNECTED'
                ? 503
                : 500;
    sendJson(res, status, { error: (e as EventBusError).toJSON() });
    return;
  }
  sendJson(res, 500, { error: { name: 'Error', code: 'INTERNAL', message: e.message } });
}

/** The dashboard page may not be framed by another site (clickjacking). */
const DASHBOARD_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy':
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
} as const;

/** A bind failure as one line that names the listener, the address and the cause. */
function bindError(what: string, host: string, port: string, err: unknown): EventBusError {
  const e = toError(err) as Error & { code?: string };
  return new EventBusError(
    'TRANSPORT',
    `${what}: cannot listen on ${host}:${port} (${e.code ?? e.message})`,
    {
      cause: e,
    },
  );
}

/**
 * One plain Redis client for what the broker keeps besides the bus (shared
 * rate-limit buckets, the contract registry, cross-project messaging), made on
 * first use; null in memory.
 */
function redisClients(config: BrokerConfig): { get(): Redis | null; close(): void } {
  let client: Redis | Cluster | null = null;
  return {
    get() {
      const r = config.redis;
      if (r === null) return null;
      if (!client) {
        const common = {
          maxRetriesPerRequest: 1,
          ...(r.password === undefined ? {} : { password: r.password }),
          ...(r.tls ? { tls: {} } : {}),
        };
        client =
          r.mode === 'cluster'
            ? new Cluster(r.nodes, { redisOptions: common })
            : new Redis({ ...common, host: r.host, port: r.port, db: r.db });
        client.on('error', () => {}); // the transport reports Redis trouble; a refused command fails its request
      }
      return client as unknown as Redis;
    },
    close() {
      client?.disconnect();
      client = null;
    },
  };
}

/** Per-principal buckets shared by every broker on the same Redis, or null in memory. */
function sharedBuckets(config: BrokerConfig, redis: () => Redis | null): TokenBucketStore | null {
  const client = redis();
  return client ? new RedisTokenBuckets(client, `${config.keyPrefix}:ratelimit`) : null;
}

/** The transport the configuration describes: memory by default, Redis Streams (single or cluster) when configured. */
export function createTransport(config: BrokerConfig): Transport {
  const r = config.redis;
  if (r === null) return new MemoryTransport();
  const common = {
    keyPrefix: config.keyPrefix,
    readCount: config.batchSize,
    blockMs: config.batchTimeoutMs,
    claimIdleMs: config.claimIdleMs,
  };
  if (r.mode === 'cluster')
    return createRedisTransport({
      ...common,
      cluster: { nodes: r.nodes },
      ...(r.password === undefined ? {} : { password: r.password }),
      ...(r.tls ? { tls: {} } : {}),
    });
  return createRedisTransport({
    ...common,
    host: r.host,
    port: r.port,
    db: r.db,
    ...(r.password === undefined ? {} : { password: r.password }),
    ...(r.tls ? { tls: { servername: r.host } } : {}),
  });
}

/**
 * Builds the broker from a validated configuration. Nothing listens or
 * connects until `start()`.
 */
export function createBroker(config: BrokerConfig, options: CreateBrokerOptions = {}): Broker {
  const logger = options.logger ?? noopLogger;
  const transport = options.transport ?? createTransport(config);
  const cb = config.circuitBreaker;
  const breaker = cb.enabled
    ? createCircuitBreaker({
        failureThreshold: cb.failureThreshold,
        recoveryTimeout: cb.recoveryTimeoutMs,
        monitoringPeriod: cb.monitoringPeriodMs,
        onStateChange: (key, state) => logger.warn('circuit state changed', { circuit: key, state }),
      })
    : null;
  // one registry per broker: tests and embedders may run several in one process
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const prometheus = createPrometheusMiddleware({
    registry,
    prefix: config.metricsPrefix,
    ...(breaker ? { circuits: [breaker] } : {}),
  });
  const redis = redisClients(config);
  const contracts = new BrokerContracts(config, logger, () => redis.get());
  const bus = new QEEventBus({
    nodeId: config.nodeId,
    transport,
    logger,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    // metrics outermost, so they count what validation refuses and the circuit breaker postpones too
    middleware: [prometheus, ...contracts.busMiddleware(), ...(breaker ? [breaker] : [])],
  });
  const a = config.alerts;
  const healthMonitor = createHealthMonitor(bus, {
    intervalMs: config.healthCheckIntervalMs,
    thresholds: {
      maxErrorRate: a.maxErrorRatePercent,
      maxLatency: a.maxLatencyMs,
      maxQueueDepth: a.maxQueueDepth,
      maxMemoryBytes: a.maxMemoryBytes,
    },
    publish: config.monitoringEnabled,
  });
  /** The bus's own health, degraded by any spec 003 alert threshold the health monitor last saw crossed. */
  const health = async () => {
    const h = await bus.healthCheck();
    const alerts = healthMonitor.report?.alerts ?? [];
    const reasons = [
      ...h.reasons,
      ...alerts.map((x) => `${x.name} crossed: ${Math.round(x.value * 100) / 100} > ${x.threshold}`),
    ];
    const status = alerts.length > 0 && h.status === 'healthy' ? 'degraded' : h.status;
    return { ...h, status, reasons, alerts };
  };
  bus.on('error', (err: Error) =>
    logger.error(err.message, { code: (err as { code?: string }).code, component: 'bus' }),
  );
  bus.on('deadLetter', (rec: { event: { id: string; type: string }; reason: string }) =>
    logger.warn('event dead-lettered', { eventId: rec.event.id, type: rec.event.type, reason: rec.reason }),
  );
  const monitor = new BrokerMonitor(bus, {
    serviceName: config.serviceName,
    intervalMs: config.metricsIntervalMs,
    healthIntervalMs: config.healthCheckIntervalMs,
    enabled: config.monitoringEnabled,
    health,
    logger,
    contracts: () => contracts.view(),
  });

  if (breaker) {
    monitor.addSource({
      name: 'circuit-breaker',
      circuits: () => {
        const subs = new Map(bus.getSubscriberStats().subscribers.map((s) => [s.id, s.patterns.join(', ')]));
        return breaker.stats().map((s) => ({
          name: subs.has(s.key) ? `${subs.get(s.key)} (${s.key})` : s.key,
          state: s.state,
          failures: s.failures,
        }));
      },
    });
  }

  let stopping = false;
  let stopPromise: Promise<StopResult> | null = null;
  let port = 0;
  let url = '';
  const html = renderDashboardHtml(config.serviceName);

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    let u: URL;
    try {
      u = new URL(req.url ?? '/', 'http://broker');
    } catch {
      throw new ValidationError('target', 'the request target is not a valid path');
    }
    const path = u.pathname;
    const method = req.method ?? 'GET';
    if (stopping) {
      res.setHeader('connection', 'close');
      sendJson(res, 503, { error: { code: 'CLOSED', message: 'the broker is shutting down' } });
      return;
    }
    if (method === 'GET' && (path === '/' || path === '/index.html')) {
      res.writeHead(200, DASHBOARD_HEADERS);
      res.end(html);
      return;
    }
    if (method === 'GET' && path === '/api/dashboard') {
      sendJson(res, 200, monitor.snapshot());
      return;
    }
    if (method === 'GET' && path === '/api/config') {
      sendJson(res, 200, redactConfig(config));
      return;
    }
    if (method === 'GET' && (path === '/health' || path === '/healthz')) {
      const h = await health();
      sendJson(res, h.status === 'unhealthy' ? 503 : 200, { service: config.serviceName, ...h });
      return;
    }
    if (method === 'GET' && path === '/metrics') {
      const text = await registry.metrics();
      res.writeHead(200, {
        'content-type': registry.contentType,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      res.end(text);
      return;
    }
    if (path === '/audit' && contracts.serveAudit(req, res)) return;
    if (path === '/dead-letters' || path.startsWith('/dead-letters/')) {
      // one dead-letter API: the HTTP gateway's (admin permission, filtered by subscribe rules)
      if (!httpGateway) throw new EventBusError('NOT_CONNECTED', 'the broker is not started');
      httpGateway.handle(req, res);
      return;
    }
    sendJson(res, 404, { error: { code: 'NOT_FOUND', message: `no route for ${method} ${path}` } });
  };

  const server: Server = createServer((req, res) => {
    route(req, res).catch((err) => {
      if (!res.headersSent) sendError(res, err);
      else res.destroy();
      const e = toError(err);
      if (!isEventBusError(e) || (e as EventBusError).code === 'TRANSPORT')
        logger.error('request failed', { method: req.method, url: req.url, error: e.message });
    });
  });
  server.keepAliveTimeout = 5000;
  let wsGateway: WebSocketGateway | null = null;
  let buckets: TokenBucketStore | null = null;
  let httpGateway: HttpGateway | null = null;
  let httpGatewayUrl = '';
  let grpcGateway: GrpcGateway | null = null;
  let grpcGatewayAddress = '';
  monitor.addSource({ name: 'http-gateway (SSE)', connections: () => httpGateway?.stats().sseClients ?? 0 });
  monitor.addSource({
    name: 'websocket',
    connections: () => wsGateway?.stats().connections ?? 0,
  });
  monitor.addSource({ name: 'http', connections: () => openSockets.size });
  monitor.addSource({
    name: 'grpc (subscriptions)',
    connections: () => grpcGateway?.stats().subscriptions ?? 0,
  });
  const openSockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    openSockets.add(s);
    s.on('close', () => openSockets.delete(s));
  });

  const broker: Broker = {
    config,
    bus,
    monitor,
    contracts,
    get url() {
      return url;
    },
    get port() {
      return port;
    },
    get httpGatewayUrl() {
      return httpGatewayUrl;
    },
    get grpcGatewayAddress() {
      return grpcGatewayAddress;
    },
    async start() {
      await contracts.startRegistry(); // contracts loaded before the bus takes events
      await bus.start();
      try {
        await contracts.startMessaging(bus);
        await monitor.start();
        healthMonitor.start();
        const auth =
          config.ws.jwtSecret === undefined
            ? undefined
            : { jwt: { algorithms: ['HS256'], secret: config.ws.jwtSecret } };
        const rl = config.rateLimit;
        if (rl.httpMaxRequests > 0 || rl.wsMaxMessagesPerPrincipal > 0)
          buckets = sharedBuckets(config, () => redis.get());
        // messages per window per connection and per principal: the WebSocket and gRPC gateways share the settings
        const messageRateLimit =
          rl.wsMaxMessages > 0
            ? {
                windowMs: rl.windowMs,
                maxMessages: rl.wsMaxMessages,
                ...(rl.wsMaxMessagesPerPrincipal > 0
                  ? { perPrincipal: { windowMs: rl.windowMs, maxMessages: rl.wsMaxMessagesPerPrincipal } }
                  : {}),
                ...(buckets ? { store: buckets } : {}),
              }
            : undefined;
        if (config.ws.enabled)
          wsGateway = await createWebSocketGateway({
            bus,
            server,
            path: config.ws.path,
            maxConnections: config.ws.maxConnections,
            maxPayload: config.ws.maxPayloadBytes,
            ackTimeoutMs: config.ws.ackTimeoutMs,
            ...(config.ws.allowedOrigins.length > 0 ? { allowedOrigins: config.ws.allowedOrigins } : {}),
            ...(auth ? { auth } : {}),
            ...(messageRateLimit ? { rateLimit: messageRateLimit } : {}),
          });
        const grpc = config.grpcGateway;
        if (grpc)
          grpcGateway = await createGrpcGateway({
            bus,
            host: config.host,
            port: grpc.port,
            maxMessageBytes: config.ws.maxPayloadBytes,
            closeTimeoutMs: Math.max(1, Math.min(config.shutdownTimeoutMs, 5000)),
            ...(auth ? { auth } : {}),
            ...(messageRateLimit ? { rateLimit: messageRateLimit } : {}),
          }).catch((err) => {
            throw bindError('gRPC gateway', config.host, String(grpc.port), err);
          });
        // always built: the broker mounts its dead-letter routes; it listens only when enabled
        const g = config.httpGateway;
        httpGateway = await createHttpGateway({
          bus,
          listen: g.enabled,
          port: g.port,
          ...(g.h2cPort === undefined ? {} : { h2cPort: g.h2cPort }),
          host: config.host,
          closeTimeoutMs: Math.max(1, Math.min(config.shutdownTimeoutMs, 5000)),
          metrics: { contentType: registry.contentType, render: () => registry.metrics() },
          ...(g.tlsKeyFile && g.tlsCertFile
            ? { tls: { key: readFileSync(g.tlsKeyFile), cert: readFileSync(g.tlsCertFile) } }
            : {}),
          ...(auth ? { auth } : {}),
          ...(rl.httpMaxRequests > 0
            ? {
                rateLimit: {
                  windowMs: rl.windowMs,
                  maxRequests: rl.httpMaxRequests,
                  ...(buckets ? { store: buckets } : {}),
                },
              }
            : {}),
        }).catch((err) => {
          throw bindError(
            'HTTP gateway',
            config.host,
            `${g.port}${g.h2cPort === undefined ? '' : ` or h2c ${g.h2cPort}`}`,
            err,
          );
        });
        await new Promise<void>((resolve, reject) => {
          const onError = (err: Error) => reject(bindError('broker', config.host, String(config.port), err));
          server.once('error', onError);
          server.listen(config.port, config.host, () => {
            server.off('error', onError);
            resolve();
          });
        });
      } catch (err) {
        monitor.stop();
        healthMonitor.stop();
        await wsGateway?.close().catch(() => {});
        await grpcGateway?.close().catch(() => {});
        await httpGateway?.close().catch(() => {});
        await bus.stop().catch(() => {});
        await contracts.close();
        redis.close();
        throw err;
      }
      port = (server.address() as AddressInfo).port;
      const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
      url = `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`;
      if (grpcGateway)
        grpcGatewayAddress = `${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${grpcGateway.port}`;
      if (httpGateway && config.httpGateway.enabled) {
        const scheme = config.httpGateway.tlsKeyFile ? 'https' : 'http';
        httpGatewayUrl = `${scheme}://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${httpGateway.port}`;
      }
      if (!isLoopback(config.host) && config.ws.jwtSecret === undefined)
        logger.warn('listening beyond this machine WITHOUT authentication (ALLOW_INSECURE_REMOTE=true)', {
          host: config.host,
          hint: 'anyone who can reach this address may publish, subscribe and manage dead letters; set JWT_SECRET',
        });
      logger.info('broker listening', {
        url,
        ...(wsGateway ? { websocket: `${url.replace(/^http/, 'ws')}${config.ws.path}` } : {}),
        ...(httpGatewayUrl ? { httpGateway: httpGatewayUrl } : {}),
        ...(grpcGatewayAddress ? { grpcGateway: grpcGatewayAddress } : {}),
        ...(httpGateway?.h2cPort === undefined
          ? {}
          : {
              h2c: `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${httpGateway.h2cPort}`,
            }),
        host: config.host,
        port,
        transport: bus.transport.name,
        service: config.serviceName,
        nodeId: config.nodeId,
      });
    },
    stop() {
      if (stopPromise) return stopPromise;
      stopping = true;
      stopPromise = (async (): Promise<StopResult> => {
        const started = Date.now();
        server.close();
        server.closeIdleConnections();
        // clients get a 1001 close; their subscriptions end before the bus drains
        await wsGateway
          ?.close()
          .catch((e) => logger.warn('websocket gateway close failed', { error: toError(e).message }));
        await grpcGateway
          ?.close()
          .catch((e) => logger.warn('grpc gateway close failed', { error: toError(e).message }));
        await httpGateway
          ?.close()
          .catch((e) => logger.warn('http gateway close failed', { error: toError(e).message }));
        monitor.stop();
        healthMonitor.stop();
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), config.shutdownTimeoutMs + 1000);
        });
        let result: StopResult = await Promise.race([bus.stop().then(() => 'clean' as const), timedOut]);
        clearTimeout(timer);
        // bus.stop() gives up on handlers still running at the deadline and leaves them unacked
        if (result === 'clean' && bus.getMetrics().queueSize > 0) result = 'timeout';
        server.closeAllConnections();
        await contracts.close();
        redis.close();
        logger.info('broker stopped', { result, ms: Date.now() - started });
        return result;
      })();
      return stopPromise;
    },
  };
  return broker;
}
