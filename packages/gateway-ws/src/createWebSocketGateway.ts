import type { IncomingMessage, Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  type AgentEvent,
  ConfigError,
  EventBusError,
  type EventPriority,
  ForbiddenError,
  type QEEventBus,
  RateLimitedError,
  TimeoutError,
  toError,
  UnauthorizedError,
  ValidationError,
} from '@qe/core';
import {
  ALLOW_ALL,
  assertPublish,
  assertSubscribe,
  checkMessageRateLimit,
  createTokenVerifier,
  extractToken,
  type JwtConfig,
  type Permissions,
  parseJsonSafe,
  permissionsFromClaims,
  scheduleExpiry,
} from '@qe/gateway-auth';
import { MemoryTokenBuckets, type TokenBucketStore } from '@qe/reliability';
import { type WebSocket, WebSocketServer } from 'ws';
import { CLIENT_OPS } from './protocol.js';

export interface WebSocketGatewayOptions {
  /** The bus events come from and go to (any transport). */
  bus: QEEventBus;
  /** Mount on an existing HTTP server (upgrade requests on `path`)... */
  server?: Server;
  /** ...or listen on this port (0: any free port). Default 8080. */
  port?: number;
  host?: string;
  /** Upgrade path (spec 000). Default `/events`. */
  path?: string;
  /** permessage-deflate (spec 000). Default off. */
  compression?: boolean;
  /** Open connections at most (spec 000). Default 1000. */
  maxConnections?: number;
  /** Largest frame accepted, bytes; larger frames close the connection (1009) before buffering. Default 1 MiB. */
  maxPayload?: number;
  /**
   * Messages per window per connection and per principal (token bucket).
   * `store` holds the per-principal buckets: a `RedisTokenBuckets`
   * (`@qe/reliability`) shares one budget per principal across every gateway on
   * the same Redis; default in this process. Per-connection buckets stay local.
   */
  rateLimit?: {
    windowMs: number;
    maxMessages: number;
    perPrincipal?: { windowMs: number; maxMessages: number };
    store?: TokenBucketStore;
  };
  /** Ping interval; a client that misses a pong is closed. Default 30,000 ms. */
  heartbeatIntervalMs?: number;
  /** A connection that sends nothing for this long is closed. Default 300,000 ms. */
  idleTimeoutMs?: number;
  /** Bytes buffered for a slow client before `slowClientPolicy` applies. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** `drop`: skip events for it (counted); `disconnect`: close it (1013). Default `drop`. */
  slowClientPolicy?: 'drop' | 'disconnect';
  /** JWT authentication; without it every connection may do everything (development). */
  auth?: { jwt: JwtConfig; permissionsClaim?: string; defaultPermissions?: Permissions };
  /** `Origin` values accepted; absent: any (set it for browsers). */
  allowedOrigins?: string[];
  /** How long a group delivery waits for the client's ack before the bus retries it. Default 30,000 ms. */
  ackTimeoutMs?: number;
}

export interface WebSocketGatewayStats {
  connections: number;
  accepted: number;
  refused: { unauthorized: number; origin: number; maxConnections: number; path: number };
  errors: {
    malformed: number;
    unknownOp: number;
    validation: number;
    forbidden: number;
    rateLimited: number;
    tooLarge: number;
    other: number;
  };
  published: number;
  delivered: number;
  dropped: number;
  slowDisconnects: number;
}

export interface WebSocketGateway {
  /** The port it listens on (its own server or the mounted one). */
  readonly port: number;
  readonly server: Server;
  stats(): WebSocketGatewayStats;
  /** Closes every connection (1001), unsubscribes, and stops its own server. */
  close(): Promise<void>;
}

interface Conn {
  ws: WebSocket;
  principal: string;
  permissions: Permissions;
  subs: Map<string, () => boolean>;
  pending: Map<string, { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>;
  alive: boolean;
  lastSeen: number;
  /** Cancels the token-expiry close. */
  expiry: (() => void) | null;
  seq: number;
  /** The upgraded TCP (or TLS) socket: corked while a burst of deliveries is written. */
  socket: Socket;
  corked: boolean;
}

function errorBody(err: unknown): { code: string; message: string; details?: Record<string, unknown> } {
  if (err instanceof EventBusError) return err.toJSON();
  return { code: 'HANDLER', message: toError(err).message };
}

/**
 * A WebSocket gateway on a bus: publish, subscribe (broadcast or group, with
 * acks so at-least-once holds through it), unsubscribe, ping. Authenticated
 * before the upgrade completes, closed (1008) when the token expires;
 * permissions per principal from the token; every refusal gets an error reply
 * (or an HTTP status before the upgrade) and is counted; a slow client never
 * grows the gateway's memory without bound; bad input never affects other
 * clients.
 */
export async function createWebSocketGateway(options: WebSocketGatewayOptions): Promise<WebSocketGateway> {
  const o = options;
  if (!o?.bus) throw new ConfigError('bus', 'a QEEventBus is required');
  const path = o.path ?? '/events';
  const maxConnections = o.maxConnections ?? 1000;
  const maxPayload = o.maxPayload ?? 1024 * 1024;
  const maxBuffered = o.maxBufferedBytes ?? 1024 * 1024;
  const slowPolicy = o.slowClientPolicy ?? 'drop';
  const ackTimeoutMs = o.ackTimeoutMs ?? 30_000;
  const idleTimeoutMs = o.idleTimeoutMs ?? 300_000;
  for (const [k, v] of Object.entries({
    maxConnections,
    maxPayload,
    maxBufferedBytes: maxBuffered,
    ackTimeoutMs,
    idleTimeoutMs,
  }))
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(k, 'must be a positive integer');
  if (slowPolicy !== 'drop' && slowPolicy !== 'disconnect')
    throw new ConfigError('slowClientPolicy', "must be 'drop' or 'disconnect'");
  const verify = o.auth ? createTokenVerifier(o.auth.jwt) : undefined;
  const buckets = new MemoryTokenBuckets();
  const principalBuckets = o.rateLimit?.store ?? buckets;
  if (o.rateLimit) {
    const rl = o.rateLimit;
    checkMessageRateLimit(rl);
  }
  const stats: WebSocketGatewayStats = {
    connections: 0,
    accepted: 0,
    refused: { unauthorized: 0, origin: 0, maxConnections: 0, path: 0 },
    errors: {
      malformed: 0,
      unknownOp: 0,
      validation: 0,
      forbidden: 0,
      rateLimited: 0,
      tooLarge: 0,
      other: 0,
    },
    published: 0,
    delivered: 0,
    dropped: 0,
    slowDisconnects: 0,
  };
  const conns = new Set<Conn>();
  const own = !o.server;
  const server =
    o.server ??
    createServer((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('WebSocket only\n'));
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: o.compression ?? false });

  const refuse = (socket: Socket, status: number, text: string) => {
    socket.write(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\n\r\n${text}`,
    );
    socket.destroy();
  };

  const onUpgrade = async (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    const url = req.url ?? '/';
    if (url.split('?')[0] !== path) {
      if (own) {
        stats.refused.path++;
        refuse(socket, 404, 'Not Found');
      }
      return; // a mounted server may have other upgrade handlers
    }
    if (o.allowedOrigins && !o.allowedOrigins.includes(String(req.headers.origin ?? ''))) {
      stats.refused.origin++;
      return refuse(socket, 403, 'Forbidden origin');
    }
    if (conns.size >= maxConnections) {
      stats.refused.maxConnections++;
      return refuse(socket, 503, 'Too many connections');
    }
    let principal = 'anonymous';
    let permissions: Permissions = ALLOW_ALL;
    let expiresAt = 0;
    if (verify) {
      try {
        const token = extractToken(req.headers, url);
        if (!token) throw new UnauthorizedError('a bearer token is required');
        const v = await verify(token);
        principal = v.subject;
        expiresAt = v.expiresAt;
        permissions = permissionsFromClaims(
          v.claims,
          o.auth?.permissionsClaim ?? 'qe',
          o.auth?.defaultPermissions,
        );
      } catch {
        stats.refused.unauthorized++;
        return refuse(socket, 401, 'Unauthorized');
      }
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c: Conn = {
        ws,
        principal,
        permissions,
        subs: new Map(),
        pending: new Map(),
        alive: true,
        lastSeen: Date.now(),
        expiry: null,
        seq: 0,
        socket,
        corked: false,
      };
      // any valid exp, also past Node's ~24.8-day timer range
      if (expiresAt > 0) c.expiry = scheduleExpiry(expiresAt, () => ws.close(1008, 'token expired'));
      accept(c);
    });
  };
  server.on('upgrade', (req, socket, head) =>
    onUpgrade(req, socket as Socket, head).catch(() => {
      stats.errors.other++;
      (socket as Socket).destroy();
    }),
  );

  const accept = (c: Conn) => {
    conns.add(c);
    stats.accepted++;
    stats.connections = conns.size;
    c.ws.on('pong', () => {
      c.alive = true;
    });
    c.ws.on('message', (data, isBinary) => {
      c.lastSeen = Date.now();
      onMessage(c, data as Buffer, isBinary).catch(() => {
        stats.errors.other++; // a reply that could not be written: the connection is going away
      });
    });
    c.ws.on('error', (err) => {
      if (/max payload/i.test(err.message)) stats.errors.tooLarge++;
    });
    c.ws.on('close', () => drop(c));
  };

  const drop = (c: Conn) => {
    if (!conns.delete(c)) return;
    stats.connections = conns.size;
    c.expiry?.();
    for (const u of c.subs.values()) u();
    c.subs.clear();
    for (const p of c.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new EventBusError('CLOSED', 'client disconnected before acking'));
    }
    c.pending.clear();
  };

  let connSeq = 0;
  const connKey = new WeakMap<Conn, string>();
  const rateCheck = async (c: Conn): Promise<number> => {
    const rl = o.rateLimit;
    if (!rl) return 0;
    let key = connKey.get(c);
    if (!key) connKey.set(c, (key = `conn:${++connSeq}`));
    const a = await buckets.take(key, rl.maxMessages, rl.maxMessages / rl.windowMs, 1);
    if (!a.allowed) return a.retryAfterMs;
    if (rl.perPrincipal) {
      const b = await principalBuckets.take(
        `principal:${c.principal}`,
        rl.perPrincipal.maxMessages,
        rl.perPrincipal.maxMessages / rl.perPrincipal.windowMs,
        1,
      );
      if (!b.allowed) return b.retryAfterMs;
    }
    return 0;
  };

  const count = (err: unknown) => {
    const code = (err as { code?: string }).code;
    if (code === 'VALIDATION' || code === 'INVALID_PATTERN') stats.errors.validation++;
    else if (code === 'FORBIDDEN') stats.errors.forbidden++;
    else if (code === 'RATE_LIMITED') stats.errors.rateLimited++;
    else stats.errors.other++;
  };

  const onMessage = async (c: Conn, data: Buffer, isBinary: boolean) => {
    let msg: Record<string, unknown>;
    try {
      if (isBinary) throw new ValidationError('frame', 'send JSON text frames');
      const parsed = parseJsonSafe(data.toString('utf8'));
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
        throw new ValidationError('message', 'must be a JSON object');
      msg = parsed as Record<string, unknown>;
    } catch (err) {
      stats.errors.malformed++;
      return reply(c, { op: 'error', error: errorBody(err) });
    }
    const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? msg.id : undefined;
    try {
      if (!CLIENT_OPS.includes(msg.op as (typeof CLIENT_OPS)[number])) {
        stats.errors.unknownOp++;
        throw new ValidationError(
          'op',
          `unknown message kind ${JSON.stringify(msg.op)}; expected one of ${CLIENT_OPS.join(', ')}`,
        );
      }
      if (msg.op === 'ack' || msg.op === 'nack') {
        const p = typeof msg.delivery === 'string' ? c.pending.get(msg.delivery) : undefined;
        if (!p) throw new ValidationError('delivery', 'unknown or already settled delivery');
        c.pending.delete(msg.delivery as string);
        clearTimeout(p.timer);
        if (msg.op === 'ack') p.resolve();
        else p.reject(new EventBusError('HANDLER', 'the client nacked the delivery'));
        return;
      }
      if (id === undefined) throw new ValidationError('id', 'a request id (string or number) is required');
      // no promise to wait on when there is no limit: most gateways run without one
      const wait = o.rateLimit ? await rateCheck(c) : 0;
      if (wait > 0) throw new RateLimitedError('message rate limit exceeded', wait);
      switch (msg.op) {
        case 'ping':
          return reply(c, { op: 'pong', id });
        case 'publish': {
          if (!Array.isArray(msg.events)) {
            // one event: the common case, without the batch's arrays
            const e = msg.event as { type?: unknown } | null | undefined;
            if (e === undefined || e === null) throw new ValidationError('event', 'is required');
            if (typeof e !== 'object') throw new ValidationError('event', 'must be an object');
            if (typeof e.type === 'string') assertPublish(c.permissions, e.type);
            const out = await o.bus.publish(e as Parameters<QEEventBus['publish']>[0]);
            stats.published++;
            return sendReply(c, `{"op":"ack","id":${JSON.stringify(id)},"ids":[${JSON.stringify(out.id)}]}`);
          }
          const events = msg.events as { type?: unknown }[];
          for (let i = 0; i < events.length; i++) {
            const e = events[i];
            if (e === null || typeof e !== 'object')
              throw new ValidationError(`events[${i}]`, 'must be an object');
            if (typeof e.type === 'string') assertPublish(c.permissions, e.type);
          }
          const out = await o.bus.publishBatch(
            events as unknown as Parameters<QEEventBus['publishBatch']>[0],
          );
          stats.published += out.length;
          return reply(c, { op: 'ack', id, ids: out.map((e) => e.id) });
        }
        case 'subscribe': {
          const patterns = typeof msg.patterns === 'string' ? [msg.patterns] : msg.patterns;
          if (
            !Array.isArray(patterns) ||
            patterns.length === 0 ||
            patterns.some((p) => typeof p !== 'string')
          )
            throw new ValidationError('patterns', 'a pattern or a non-empty array of patterns');
          for (const p of patterns as string[]) assertSubscribe(c.permissions, p);
          const group = msg.group === undefined ? undefined : String(msg.group);
          let subId = '';
          const u: (() => boolean) & { id: string; ready: Promise<void> } = o.bus.subscribe(
            patterns as string[],
            (event): void | Promise<void> => deliver(c, subId, event, group !== undefined),
            {
              ...(group === undefined ? {} : { group }),
              ...(msg.minPriority === undefined ? {} : { minPriority: msg.minPriority as EventPriority }),
              maxConcurrency: group === undefined ? 1 : 16,
              retryAttempts: group === undefined ? 0 : 5,
            },
          );
          subId = u.id;
          c.subs.set(subId, u);
          await u.ready;
          return reply(c, { op: 'ack', id, subscription: subId });
        }
        case 'unsubscribe': {
          const u = typeof msg.subscription === 'string' ? c.subs.get(msg.subscription) : undefined;
          if (!u) throw new ValidationError('subscription', 'not a subscription of this connection');
          u();
          c.subs.delete(msg.subscription as string);
          return reply(c, { op: 'ack', id });
        }
      }
    } catch (err) {
      if (!(err instanceof ValidationError && (err as ValidationError).field === 'op')) count(err);
      reply(c, { op: 'error', ...(id === undefined ? {} : { id }), error: errorBody(err) });
    }
  };

  // Deliveries of one tick to one client go out in one write: the socket is corked at the first
  // and uncorked once the tick's work is done (each ws.send alone is a syscall; under load that
  // was the broker's largest cost).
  const corked: Conn[] = [];
  const uncorkAll = () => {
    for (const c of corked) {
      c.corked = false;
      c.socket.uncork();
    }
    corked.length = 0;
  };
  const sendFrame = (c: Conn, frame: string) => {
    if (!c.corked) {
      c.corked = true;
      c.socket.cork();
      if (corked.push(c) === 1) process.nextTick(uncorkAll);
    }
    c.ws.send(frame);
  };
  const reply = (c: Conn, msg: unknown) => sendReply(c, JSON.stringify(msg));
  const sendReply = (c: Conn, frame: string) => {
    if (c.ws.readyState === c.ws.OPEN) sendFrame(c, frame);
  };
  // an event delivered to several clients in a row is serialised once
  let lastEvent: AgentEvent | undefined;
  let lastEventJson = '';
  const eventJson = (event: AgentEvent) => {
    if (event !== lastEvent) {
      lastEventJson = JSON.stringify(event);
      lastEvent = event;
    }
    return lastEventJson;
  };

  // the start of an event frame, the same for every event of one subscription
  let lastSubscription = '';
  let lastPrefix = '';
  const framePrefix = (subscription: string) => {
    if (subscription !== lastSubscription) {
      lastPrefix = `{"op":"event","subscription":${JSON.stringify(subscription)},"event":`;
      lastSubscription = subscription;
    }
    return lastPrefix;
  };

  let deliverySeq = 0;
  const deliver = (
    c: Conn,
    subscription: string,
    event: AgentEvent,
    needsAck: boolean,
  ): void | Promise<void> => {
    if (c.ws.readyState !== c.ws.OPEN) throw new EventBusError('CLOSED', 'client gone');
    if (c.ws.bufferedAmount > maxBuffered) {
      if (slowPolicy === 'disconnect') {
        stats.slowDisconnects++;
        c.ws.close(1013, 'too slow');
      } else stats.dropped++;
      // a group event goes back to the bus to be retried (another member, or later); a broadcast one is dropped for this client
      if (needsAck) throw new EventBusError('QUEUE_FULL', 'client too slow');
      return;
    }
    stats.delivered++;
    if (!needsAck) {
      sendFrame(c, `${framePrefix(subscription)}${eventJson(event)}}`);
      return;
    }
    const delivery = `d${++deliverySeq}`;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        c.pending.delete(delivery);
        reject(new TimeoutError(`client did not ack ${delivery} within ${ackTimeoutMs} ms`));
      }, ackTimeoutMs);
      c.pending.set(delivery, { resolve, reject, timer });
      sendFrame(c, `${framePrefix(subscription)}${eventJson(event)},"delivery":"${delivery}"}`);
    });
  };

  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const c of conns) {
      if (!c.alive || now - c.lastSeen > idleTimeoutMs) {
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }, o.heartbeatIntervalMs ?? 30_000);
  heartbeat.unref();

  if (own)
    // a bind failure (port in use, bad address) rejects: never an unhandled 'error' event
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err) => {
      clearInterval(heartbeat);
      wss.close();
      throw err;
    });
  const port = (server.address() as AddressInfo | null)?.port ?? 0;

  return {
    port,
    server,
    stats: () => ({
      ...stats,
      refused: { ...stats.refused },
      errors: { ...stats.errors },
      connections: conns.size,
    }),
    async close() {
      clearInterval(heartbeat);
      for (const c of [...conns]) {
        c.ws.close(1001, 'gateway closing');
        drop(c);
      }
      wss.close();
      if (own) await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export { ForbiddenError };
