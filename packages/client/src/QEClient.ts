/**
 * A small typed client for the QE Event Bus WebSocket gateway, for Node (22+)
 * and browsers: no Node-only imports, the global `WebSocket` unless another
 * implementation is passed.
 */

/** An error the gateway reported, with its stable `code` (`FORBIDDEN`, `VALIDATION`, ...). */
export class ClientError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface ClientEvent<T = unknown> {
  id: string;
  type: string;
  agentId: string;
  swarmId?: string;
  timestamp: number;
  priority: 0 | 1 | 2 | 3 | 4;
  data: T;
  metadata?: Record<string, unknown>;
}

export interface EventToPublish<T = unknown> {
  type: string;
  agentId: string;
  data: T;
  id?: string;
  swarmId?: string;
  priority?: 0 | 1 | 2 | 3 | 4;
  metadata?: Record<string, unknown>;
}

type WebSocketLike = {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
};
type WebSocketCtor = new (url: string) => WebSocketLike;

export interface QEClientOptions {
  /** `ws://host:port/events`. */
  url: string;
  /** A bearer token (sent as `?token=`, which browsers can do). A function is called on every (re)connect. */
  token?: string | (() => string | Promise<string>);
  /** A WebSocket implementation; default the global one. */
  WebSocket?: WebSocketCtor;
  /** Reconnect backoff with jitter. Default 250 ms doubling to 10 s. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number; enabled?: boolean };
  /** How long a request waits for its reply. Default 10,000 ms. */
  requestTimeoutMs?: number;
}

interface Sub {
  patterns: string[];
  group?: string;
  minPriority?: number;
  handler: (event: ClientEvent) => unknown;
  serverId?: string;
}

export interface ClientSubscription {
  unsubscribe(): Promise<void>;
}

/**
 * Connects, reconnects with backoff and jitter, resubscribes after a
 * reconnect, acks group deliveries after the handler resolved (nacks when it
 * throws, so the bus retries), and turns gateway errors into `ClientError`s.
 */
export class QEClient {
  private ws: WebSocketLike | null = null;
  private seq = 0;
  /** Requests waiting for their reply, by sequence number (see PendingRequests). */
  private readonly pending = new PendingRequests();
  private readonly subs = new Set<Sub>();
  private readonly byServerId = new Map<string, Sub>();
  private closed = false;
  private attempt = 0;
  private opening: Promise<void> | null = null;
  private listeners: { [K in 'open' | 'close' | 'error']: ((arg?: unknown) => void)[] } = {
    open: [],
    close: [],
    error: [],
  };
  /** Times the connection was re-established. */
  reconnects = 0;

  constructor(private readonly options: QEClientOptions) {
    if (!options?.url) throw new ClientError('CONFIG', 'url is required');
  }

  on(event: 'open' | 'close' | 'error', listener: (arg?: unknown) => void): this {
    this.listeners[event].push(listener);
    return this;
  }

  private emit(event: 'open' | 'close' | 'error', arg?: unknown) {
    for (const l of this.listeners[event]) l(arg);
  }

  /** Opens the connection (and keeps it open until `close()`). */
  connect(): Promise<void> {
    this.closed = false;
    this.opening ??= this.open();
    return this.opening;
  }

  private async open(): Promise<void> {
    const Impl = this.options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Impl) throw new ClientError('CONFIG', 'no WebSocket implementation: pass options.WebSocket');
    const t = this.options.token;
    const token = typeof t === 'function' ? await t() : t;
    const url = token
      ? `${this.options.url}${this.options.url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`
      : this.options.url;
    await new Promise<void>((resolve, reject) => {
      const ws = new Impl(url);
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.attempt = 0;
        resolve();
        this.emit('open');
      };
      ws.onmessage = (ev) => this.onMessage(String(ev.data));
      ws.onerror = (ev) => {
        this.emit('error', ev);
        if (!opened) reject(new ClientError('TRANSPORT', 'cannot connect to the gateway'));
      };
      ws.onclose = (ev) => {
        if (!opened)
          return reject(
            new ClientError(
              ev.code === 1008 ? 'UNAUTHORIZED' : 'TRANSPORT',
              `connection refused (${ev.code})`,
            ),
          );
        this.ws = null;
        this.opening = null;
        for (const p of this.pending.takeAll()) {
          clearTimeout(p.timer);
          p.reject(new ClientError('CLOSED', `connection closed (${ev.code} ${ev.reason})`));
        }
        this.byServerId.clear();
        this.emit('close', ev);
        if (!this.closed && this.options.reconnect?.enabled !== false) void this.reconnectLater();
      };
    });
    // after a reconnect: the gateway forgot our subscriptions, make them again
    for (const s of this.subs) await this.sendSubscribe(s);
  }

  private async reconnectLater(): Promise<void> {
    const min = this.options.reconnect?.minDelayMs ?? 250;
    const max = this.options.reconnect?.maxDelayMs ?? 10_000;
    while (!this.closed) {
      const ceiling = Math.min(max, min * 2 ** this.attempt++);
      await new Promise((r) => setTimeout(r, ceiling / 2 + Math.random() * (ceiling / 2)));
      if (this.closed) return;
      try {
        this.opening = this.open();
        await this.opening;
        this.reconnects++;
        return;
      } catch {
        this.opening = null;
      }
    }
  }

  private onMessage(text: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (m.op === 'event') {
      const sub = this.byServerId.get(String(m.subscription));
      const delivery = typeof m.delivery === 'string' ? m.delivery : undefined;
      if (!sub) return;
      void (async () => {
        try {
          await sub.handler(m.event as ClientEvent);
          if (delivery) this.raw({ op: 'ack', delivery });
        } catch (err) {
          if (delivery) this.raw({ op: 'nack', delivery });
          this.emit('error', err);
        }
      })();
      return;
    }
    const p = m.id === undefined ? undefined : this.pending.take(String(m.id));
    if (!p) {
      if (m.op === 'error') this.emit('error', toClientError(m.error));
      return;
    }
    clearTimeout(p.timer);
    if (m.op === 'error') p.reject(toClientError(m.error));
    else p.resolve(m);
  }

  private raw(msg: Record<string, unknown>): void {
    if (!this.ws || this.ws.readyState !== 1) throw new ClientError('NOT_CONNECTED', 'not connected');
    this.ws.send(JSON.stringify(msg));
  }

  private request(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = new PendingRequest(++this.seq, String(msg.op));
    const ms = this.options.requestTimeoutMs ?? 10_000;
    p.timer = setTimeout(timeOut, ms, this.pending, p, ms);
    this.pending.add(p);
    try {
      this.raw({ ...msg, id: p.id });
    } catch (err) {
      clearTimeout(p.timer);
      this.pending.take(p.id);
      p.reject(err as Error);
    }
    return p.promise;
  }

  /** Publishes one event; resolves with its id once the bus accepted it. */
  async publish<T>(event: EventToPublish<T>): Promise<string> {
    const r = await this.request({ op: 'publish', event });
    return (r.ids as string[])[0]!;
  }

  /** Publishes a batch, all or nothing. */
  async publishBatch(events: EventToPublish[]): Promise<string[]> {
    return (await this.request({ op: 'publish', events })).ids as string[];
  }

  /** Subscribes; kept across reconnects until `unsubscribe()`. */
  async subscribe<T = unknown>(
    patterns: string | string[],
    handler: (event: ClientEvent<T>) => unknown,
    options: { group?: string; minPriority?: number } = {},
  ): Promise<ClientSubscription> {
    const sub: Sub = {
      patterns: typeof patterns === 'string' ? [patterns] : patterns,
      handler: handler as Sub['handler'],
      ...options,
    };
    await this.sendSubscribe(sub);
    this.subs.add(sub);
    return {
      unsubscribe: async () => {
        this.subs.delete(sub);
        if (sub.serverId) {
          this.byServerId.delete(sub.serverId);
          await this.request({ op: 'unsubscribe', subscription: sub.serverId }).catch(() => {});
        }
      },
    };
  }

  private async sendSubscribe(sub: Sub): Promise<void> {
    const r = await this.request({
      op: 'subscribe',
      patterns: sub.patterns,
      ...(sub.group === undefined ? {} : { group: sub.group }),
      ...(sub.minPriority === undefined ? {} : { minPriority: sub.minPriority }),
    });
    sub.serverId = String(r.subscription);
    this.byServerId.set(sub.serverId, sub);
  }

  async ping(): Promise<void> {
    await this.request({ op: 'ping' });
  }

  close(): void {
    this.closed = true;
    this.ws?.close(1000, 'client closing');
    this.ws = null;
  }
}

function toClientError(e: unknown): ClientError {
  const o = (e ?? {}) as { code?: string; message?: string; details?: Record<string, unknown> };
  return new ClientError(o.code ?? 'UNKNOWN', o.message ?? 'gateway error', o.details);
}

/** Publish-only use over the HTTP gateway (`POST /events`). */
export async function publishHttp(
  baseUrl: string,
  events: EventToPublish | EventToPublish[],
  options: { token?: string; fetch?: typeof fetch } = {},
): Promise<string[]> {
  const f = options.fetch ?? fetch;
  const res = await f(`${baseUrl.replace(/\/$/, '')}/events`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    },
    body: JSON.stringify(events),
  });
  const body = (await res.json()) as { ids?: string[]; error?: unknown };
  if (!res.ok) throw toClientError(body.error);
  return body.ids ?? [];
}

function storeResolvers(
  this: PendingRequest,
  resolve: (m: Record<string, unknown>) => void,
  reject: (e: Error) => void,
) {
  this.resolve = resolve;
  this.reject = reject;
}

/**
 * A request waiting for its reply. Its resolvers are stored by a shared
 * function, not captured by closures made per request inside the promise
 * executor: replies resolved through such closures were seen to outlive young
 * GCs (measured on ioredis's commands; see @qe/redis-transport's README).
 */
class PendingRequest {
  readonly id: string;
  readonly promise: Promise<Record<string, unknown>>;
  resolve!: (m: Record<string, unknown>) => void;
  reject!: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  constructor(
    readonly seq: number,
    readonly op: string,
  ) {
    this.id = `c${seq}`;
    this.promise = new Promise(storeResolvers.bind(this));
  }
}

function timeOut(pending: PendingRequests, p: PendingRequest, ms: number) {
  if (pending.take(p.id) === p) p.reject(new ClientError('TIMEOUT', `no reply to ${p.op} within ${ms} ms`));
}

/**
 * Requests in flight, in sequence order: an array window, not a Map that gains
 * and loses a key per request (after a burst, such a Map's old tables keep
 * later entries alive through young GCs). Replies may come in any order: a
 * settled slot is cleared, and the window's head moves past settled slots.
 */
class PendingRequests {
  private slots: (PendingRequest | undefined)[] = [];
  private head = 0;
  /** Sequence number of slots[0]. */
  private base = 0;
  private count = 0;

  add(p: PendingRequest): void {
    if (this.count === 0) {
      this.slots = [];
      this.head = 0;
      this.base = p.seq;
    }
    // sequence numbers only grow, so a new request lands at the end
    this.slots[p.seq - this.base] = p;
    this.count++;
  }

  /** Removes and returns the waiting request with this id, if there is one. */
  take(id: string): PendingRequest | undefined {
    if (id.charCodeAt(0) !== 99 /* c */) return undefined;
    const i = Number(id.slice(1)) - this.base;
    if (!Number.isInteger(i) || i < this.head || i >= this.slots.length) return undefined;
    const p = this.slots[i];
    if (!p) return undefined;
    this.slots[i] = undefined;
    this.count--;
    while (this.head < this.slots.length && this.slots[this.head] === undefined) this.head++;
    if (this.head > 1024 && this.head * 2 > this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.base += this.head;
      this.head = 0;
    }
    return p;
  }

  /** Removes and returns every waiting request (the connection closed). */
  takeAll(): PendingRequest[] {
    const all = this.slots.filter((p): p is PendingRequest => p !== undefined);
    this.slots = [];
    this.head = 0;
    this.count = 0;
    return all;
  }
}
