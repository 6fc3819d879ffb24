import {
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientDuplexStream,
  credentials as grpcCredentials,
  loadPackageDefinition,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { type AgentEvent, type ErrorCode, EventBusError, type EventInput, type HistoryQuery } from '@qe/core';
import { packageDefinition } from './proto.js';
import { ERROR_CODE_KEY, ERROR_DETAILS_KEY } from './status.js';
import { eventFromWire, toWireEvent, type WireError, type WireEvent } from './wire.js';

export interface GrpcClientOptions {
  /** `host:port` or `grpc://host:port` (cleartext), `grpcs://host:port` (TLS). */
  url: string;
  /** A JWT, or a function returning one (called for every call, so a refreshed token is used). */
  token?: string | (() => string | Promise<string>);
  /** TLS settings for `grpcs://`: `ca` to trust a private CA (default: the system roots); `key`+`cert` for mutual TLS. */
  tls?: { ca?: string | Buffer; key?: string | Buffer; cert?: string | Buffer };
  /** Deadline of each unary call. Default 10,000 ms. */
  deadlineMs?: number;
  /** grpc-js channel options (`grpc.max_receive_message_length`, keepalive, ...). */
  channelOptions?: ChannelOptions;
}

/** A refusal from the gateway (or the channel): `code` is the bus's stable code, `grpcCode` the status. */
export class GrpcClientError extends EventBusError {
  constructor(
    code: ErrorCode,
    readonly grpcCode: status,
    message: string,
    details?: Record<string, unknown>,
  ) {
    super(code, message, details === undefined ? {} : { details });
  }
}

/** The bus code a status stands for when the gateway did not say (the channel's own errors). */
const CODE_OF_STATUS: Partial<Record<status, ErrorCode>> = {
  [status.INVALID_ARGUMENT]: 'VALIDATION',
  [status.UNAUTHENTICATED]: 'UNAUTHORIZED',
  [status.PERMISSION_DENIED]: 'FORBIDDEN',
  [status.NOT_FOUND]: 'NOT_FOUND',
  [status.DEADLINE_EXCEEDED]: 'TIMEOUT',
  [status.RESOURCE_EXHAUSTED]: 'PAYLOAD_TOO_LARGE',
  [status.UNAVAILABLE]: 'NOT_CONNECTED',
  [status.CANCELLED]: 'CLOSED',
  [status.UNIMPLEMENTED]: 'UNSUPPORTED',
};

function parseDetails(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === 'object' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** A grpc-js error as a `GrpcClientError`, reading the bus's code and details from the trailers. */
export function fromServiceError(err: ServiceError): GrpcClientError {
  const md = err.metadata;
  const code = md?.get(ERROR_CODE_KEY)[0];
  const details = md?.get(ERROR_DETAILS_KEY)[0];
  return new GrpcClientError(
    (typeof code === 'string' ? code : (CODE_OF_STATUS[err.code] ?? 'TRANSPORT')) as ErrorCode,
    err.code,
    err.details || err.message,
    parseDetails(typeof details === 'string' ? details : undefined),
  );
}

function fromWireError(e: WireError): GrpcClientError {
  return new GrpcClientError(e.code as ErrorCode, status.OK, e.message, parseDetails(e.detailsJson));
}

export interface SubscribeOptions {
  /** Compete with the group's other members; each event is acked after `handler` resolves, nacked if it throws. */
  group?: string;
  minPriority?: number;
  /** Start with the events published after this one (broadcast only), then live ones. */
  resumeAfterId?: string;
  /** Called when the gateway reports events dropped because this subscriber read too slowly. */
  onDropped?: (count: number) => void;
  /** Called with a non-fatal error the gateway reported on the stream (an ack it did not know, say). */
  onError?: (err: GrpcClientError) => void;
}

export interface GrpcSubscription {
  /** Resolves with the subscription id once it is active; rejects if the gateway refused it. */
  readonly ready: Promise<string>;
  /** Settles when the stream ends: resolves after `close()`, rejects with the gateway's reason otherwise. */
  readonly done: Promise<void>;
  /** Ends the subscription; unacked group deliveries go back to the bus. */
  close(): void;
}

export interface GrpcPublishStream {
  /** Sends one event; resolves with its id or rejects with the gateway's typed error for it. */
  publish(event: EventInput): Promise<string>;
  /** Half-closes the stream once every reply is in. */
  end(): Promise<void>;
}

export interface GrpcClient {
  publish(event: EventInput, options?: { deadlineMs?: number }): Promise<string>;
  publishBatch(events: readonly EventInput[], options?: { deadlineMs?: number }): Promise<string[]>;
  publishStream(): GrpcPublishStream;
  subscribe(
    patterns: string | readonly string[],
    handler: (event: AgentEvent, info: { replayed: boolean }) => void | Promise<void>,
    options?: SubscribeOptions,
  ): GrpcSubscription;
  history(query?: HistoryQuery, options?: { deadlineMs?: number }): Promise<AgentEvent[]>;
  /** The standard health check: `SERVING`, `NOT_SERVING`, ... */
  health(service?: string): Promise<string>;
  /** Closes the channel; open streams are cancelled. */
  close(): void;
}

type Unary = (
  req: unknown,
  md: Metadata,
  opts: { deadline: number },
  cb: (err: ServiceError | null, res: unknown) => void,
) => void;
type Duplex = (md: Metadata) => ClientDuplexStream<unknown, unknown>;

function parseUrl(url: string): { target: string; secure: boolean } {
  const m = /^(grpcs?):\/\/(.+)$/.exec(url);
  if (!m) return { target: url, secure: false };
  return { target: m[2]!.replace(/\/+$/, ''), secure: m[1] === 'grpcs' };
}

/**
 * A small Node client for the gRPC gateway: publish (one, a batch, a stream
 * with per-event acks), subscribe (group deliveries acked after the handler
 * resolves), history and health. Every refusal is a `GrpcClientError` with the
 * bus's code.
 */
export function createGrpcClient(options: GrpcClientOptions): GrpcClient {
  const { target, secure } = parseUrl(options.url);
  const creds: ChannelCredentials =
    secure || options.tls
      ? grpcCredentials.createSsl(
          options.tls?.ca === undefined ? null : Buffer.from(options.tls.ca),
          options.tls?.key === undefined ? null : Buffer.from(options.tls.key),
          options.tls?.cert === undefined ? null : Buffer.from(options.tls.cert),
        )
      : grpcCredentials.createInsecure();
  const pkg = loadPackageDefinition(packageDefinition()) as unknown as {
    qe: { v1: { EventBus: new (t: string, c: ChannelCredentials, o?: ChannelOptions) => Client } };
    grpc: {
      health: { v1: { Health: new (t: string, c: ChannelCredentials, o?: ChannelOptions) => Client } };
    };
  };
  const rpc = new pkg.qe.v1.EventBus(target, creds, options.channelOptions) as unknown as Record<
    string,
    Unary & Duplex
  >;
  const healthRpc = new pkg.grpc.health.v1.Health(target, creds, options.channelOptions) as unknown as Record<
    string,
    Unary
  >;
  const deadlineMs = options.deadlineMs ?? 10_000;

  const metadata = async (): Promise<Metadata> => {
    const md = new Metadata();
    const t = typeof options.token === 'function' ? await options.token() : options.token;
    if (t) md.set('authorization', `Bearer ${t}`);
    return md;
  };
  const call = async <T>(fn: Unary, req: unknown, ms = deadlineMs): Promise<T> => {
    const md = await metadata();
    return new Promise<T>((resolve, reject) =>
      fn.call(rpc, req, md, { deadline: Date.now() + ms }, (err, res) =>
        err ? reject(fromServiceError(err)) : resolve(res as T),
      ),
    );
  };
  const toWire = (e: EventInput) => toWireEvent(e as AgentEvent);

  return {
    async publish(event, o) {
      const r = await call<{ ids?: string[] }>(rpc.Publish!, { event: toWire(event) }, o?.deadlineMs);
      return r.ids?.[0] ?? '';
    },
    async publishBatch(events, o) {
      const r = await call<{ ids?: string[] }>(
        rpc.PublishBatch!,
        { events: events.map(toWire) },
        o?.deadlineMs,
      );
      return r.ids ?? [];
    },
    publishStream() {
      const waiting = new Map<string, { resolve: (id: string) => void; reject: (e: Error) => void }>();
      const inFlight = new Set<Promise<string>>();
      let seq = 0;
      let failure: Error | null = null;
      const stream = metadata().then((md) => {
        const s = rpc.PublishStream!.call(rpc, md);
        s.on('data', (r: { ref?: string; id?: string; error?: WireError }) => {
          const w = waiting.get(r.ref ?? '');
          if (!w) return;
          waiting.delete(r.ref ?? '');
          if (r.error) w.reject(fromWireError(r.error));
          else w.resolve(r.id ?? '');
        });
        const fail = (e: Error) => {
          failure ??= e;
          for (const w of waiting.values()) w.reject(e);
          waiting.clear();
        };
        s.on('error', (err: ServiceError) => fail(fromServiceError(err)));
        s.on('end', () => fail(new GrpcClientError('CLOSED', status.OK, 'the publish stream ended')));
        return s;
      });
      return {
        async publish(event) {
          const s = await stream;
          if (failure) throw failure;
          const ref = `p${++seq}`;
          const p = new Promise<string>((resolve, reject) => {
            waiting.set(ref, { resolve, reject });
            s.write({ ref, event: toWire(event) });
          });
          inFlight.add(p);
          const forget = () => inFlight.delete(p);
          p.then(forget, forget);
          return p;
        },
        async end() {
          const s = await stream;
          await Promise.allSettled([...inFlight]);
          s.end();
        },
      };
    },
    subscribe(patterns, handler, o = {}) {
      let closedByUs = false;
      let resolveReady!: (id: string) => void;
      let rejectReady!: (e: Error) => void;
      const ready = new Promise<string>((res, rej) => {
        resolveReady = res;
        rejectReady = rej;
      });
      ready.catch(() => {});
      let stream: ClientDuplexStream<unknown, unknown> | null = null;
      const done = metadata().then(
        (md) =>
          new Promise<void>((resolve, reject) => {
            const s = rpc.Subscribe!.call(rpc, md);
            stream = s;
            if (closedByUs) s.cancel();
            s.write({
              start: {
                patterns: typeof patterns === 'string' ? [patterns] : [...patterns],
                ...(o.group === undefined ? {} : { group: o.group }),
                ...(o.minPriority === undefined ? {} : { minPriority: o.minPriority }),
                ...(o.resumeAfterId === undefined ? {} : { resumeAfterId: o.resumeAfterId }),
              },
            });
            s.on('data', (m: SubscribeReplyWire) => {
              if (m.subscribed !== undefined) resolveReady(m.subscribed);
              else if (m.dropped) o.onDropped?.(Number(m.dropped.count ?? 0));
              else if (m.error) o.onError?.(fromWireError(m.error));
              else if (m.event?.event) {
                const delivery = m.event.delivery;
                const event = eventFromWire(m.event.event);
                Promise.resolve()
                  .then(() => handler(event, { replayed: m.event?.replayed === true }))
                  .then(
                    () => delivery !== undefined && s.write({ ack: delivery }),
                    () => delivery !== undefined && s.write({ nack: delivery }),
                  );
              }
            });
            s.on('error', (err: ServiceError) => {
              if (closedByUs && err.code === status.CANCELLED) return resolve();
              const e = fromServiceError(err);
              rejectReady(e);
              reject(e);
            });
            s.on('end', () => resolve());
          }),
      );
      done.catch(() => {});
      return {
        ready,
        done,
        close() {
          closedByUs = true;
          stream?.cancel();
          rejectReady(
            new GrpcClientError('CLOSED', status.CANCELLED, 'closed before the subscription was ready'),
          );
        },
      };
    },
    async history(query = {}, o) {
      const r = await call<{ events?: WireEvent[] }>(rpc.History!, query, o?.deadlineMs);
      return (r.events ?? []).map(eventFromWire);
    },
    async health(service = '') {
      const r = await call<{ status?: string }>(healthRpc.Check!.bind(healthRpc) as Unary, { service });
      return r.status ?? 'UNKNOWN';
    },
    close() {
      (rpc as unknown as Client).close();
      (healthRpc as unknown as Client).close();
    },
  };
}

interface SubscribeReplyWire {
  subscribed?: string;
  event?: { event?: WireEvent; delivery?: string; replayed?: boolean };
  error?: WireError;
  dropped?: { count?: number };
}
