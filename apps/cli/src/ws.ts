import type { AgentEvent } from '@qe/core';
import WebSocket from 'ws';
import { type Context, unreachable } from './context.js';
import { CliError } from './errors.js';
import { httpError } from './http.js';

interface Reply {
  op: string;
  id?: number;
  ids?: string[];
  subscription?: string;
  event?: AgentEvent;
  delivery?: string;
  error?: { code?: string; message?: string };
}

/** A connection to the broker's WebSocket gateway (`/events`), with request/reply by id. */
export class GatewaySocket {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Set<(event: AgentEvent) => void>();
  /** Resolves when the connection ends (code, reason). */
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(
    private readonly ws: WebSocket,
    readonly url: string,
  ) {
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        for (const p of this.pending.values())
          p.reject(new CliError(`the broker closed the connection (${code} ${reason.toString()})`));
        this.pending.clear();
        resolve({ code, reason: reason.toString() });
      }),
    );
    ws.on('message', (data) => {
      let m: Reply;
      try {
        m = JSON.parse(data.toString()) as Reply;
      } catch {
        return;
      }
      if (m.op === 'event' && m.event) {
        for (const l of this.listeners) l(m.event);
        if (m.delivery) ws.send(JSON.stringify({ op: 'ack', delivery: m.delivery }));
        return;
      }
      if (m.id !== undefined && this.pending.has(m.id)) {
        const p = this.pending.get(m.id)!;
        this.pending.delete(m.id);
        if (m.op === 'error') {
          const code = m.error?.code ?? 'ERROR';
          const hint =
            code === 'FORBIDDEN'
              ? "the token's qe claim does not allow this (pub/sub allow and deny rules)"
              : code === 'VALIDATION'
                ? 'check the event: type like task.create (lowercase segments), agentId, data'
                : undefined;
          p.reject(new CliError(`${code}: ${m.error?.message ?? 'refused'}`, hint));
        } else p.resolve(m);
      }
    });
  }

  static async connect(ctx: Context): Promise<GatewaySocket> {
    const url = `${ctx.broker.replace(/^http/, 'ws')}/events`;
    const ws = new WebSocket(url, {
      headers: ctx.token ? { authorization: `Bearer ${ctx.token}` } : {},
      handshakeTimeout: ctx.timeoutMs,
    });
    await new Promise<void>((resolve, reject) => {
      let refused = false;
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        refused = true; // the HTTP status says why; the socket error that follows does not
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // keep text
          }
          reject(httpError(res.statusCode ?? 0, url, body, ctx));
          ws.terminate();
        });
      });
      ws.on('error', (err) => {
        if (!refused) reject(unreachable('broker', ctx.broker, err));
      });
    });
    ws.on('error', () => {}); // reported through `closed`
    return new GatewaySocket(ws, url);
  }

  private request(msg: Record<string, unknown>): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...msg, id }), (err) => {
        if (err) {
          this.pending.delete(id);
          reject(new CliError(`sending to ${this.url} failed: ${err.message}`));
        }
      });
    });
  }

  async publish(events: readonly Record<string, unknown>[]): Promise<string[]> {
    const r = await this.request({ op: 'publish', events });
    return r.ids ?? [];
  }

  async subscribe(pattern: string, onEvent: (e: AgentEvent) => void, minPriority?: number): Promise<string> {
    this.listeners.add(onEvent);
    const r = await this.request({
      op: 'subscribe',
      patterns: [pattern],
      ...(minPriority === undefined ? {} : { minPriority }),
    });
    return r.subscription ?? '';
  }

  close(): Promise<unknown> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    this.ws.close(1000, 'bye');
    return this.closed;
  }
}
