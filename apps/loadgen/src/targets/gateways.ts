import {
  asPayload,
  busEventFor,
  type LoadConsumer,
  type LoadProducer,
  type Target,
  type TargetContext,
} from './target.js';

function baseUrl(ctx: TargetContext, target: string): URL {
  if (!ctx.brokerUrl) throw new Error(`--target ${target} needs --broker-url`);
  return new URL(ctx.brokerUrl);
}

/** `http://host:port` (the broker) or `ws://host:port/path` → the WebSocket gateway URL. */
function wsUrl(ctx: TargetContext): string {
  const u = baseUrl(ctx, 'ws');
  if (u.protocol === 'http:' || u.protocol === 'https:') {
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/events';
  }
  return u.toString();
}

interface GatewayReply {
  op: string;
  id?: number;
  error?: { code: string; message: string };
  event?: { data: unknown };
}

async function open(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
  return ws;
}

/**
 * Through the WebSocket gateway of a running broker (`--broker-url
 * http://host:port`, path `/events`): each send is one `publish` frame with a
 * batch, settled by the gateway's ack; the consumer is one connection
 * subscribed to `**`.
 */
export const wsTarget: Target = {
  name: 'ws',
  inProcess: false,
  async consumer(ctx, onEvent): Promise<LoadConsumer> {
    const ws = await open(wsUrl(ctx));
    const ready = new Promise<void>((resolve, reject) => {
      ws.onmessage = (m) => {
        const msg = JSON.parse(String(m.data)) as GatewayReply;
        if (msg.op === 'event') {
          const p = asPayload(msg.event?.data);
          if (p) onEvent(p);
        } else if (msg.op === 'ack' && msg.id === 0) resolve();
        else if (msg.op === 'error' && msg.id === 0)
          reject(new Error(msg.error?.message ?? 'subscribe refused'));
      };
    });
    ws.send(JSON.stringify({ op: 'subscribe', id: 0, patterns: ['**'] }));
    await ready;
    return {
      async close() {
        ws.close();
      },
    };
  },
  async producer(ctx): Promise<LoadProducer> {
    const ws = await open(wsUrl(ctx));
    const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
    let nextId = 1;
    ws.onmessage = (m) => {
      const msg = JSON.parse(String(m.data)) as GatewayReply;
      if (msg.id === undefined) return;
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if (msg.op === 'ack') p.resolve();
      else p.reject(new Error(`${msg.error?.code}: ${msg.error?.message}`));
    };
    ws.onclose = () => {
      for (const p of pending.values()) p.reject(new Error('gateway connection closed'));
      pending.clear();
    };
    return {
      send(events) {
        const id = nextId++;
        return new Promise<readonly number[]>((resolve, reject) => {
          pending.set(id, { resolve: () => resolve([]), reject });
          ws.send(JSON.stringify({ op: 'publish', id, events: events.map((p) => busEventFor(p, ctx.mix)) }));
        });
      },
      async close() {
        ws.close();
      },
    };
  },
};

/**
 * Through the HTTP gateway (`--broker-url` = the gateway's own URL, e.g.
 * `http://host:3001`): each send is one `POST /events` with a batch (202 when
 * accepted); the consumer reads `GET /events/stream` (Server-Sent Events).
 */
export const httpTarget: Target = {
  name: 'http',
  inProcess: false,
  async consumer(ctx, onEvent): Promise<LoadConsumer> {
    const url = new URL('/events/stream', baseUrl(ctx, 'http'));
    url.searchParams.append('pattern', '**');
    const abort = new AbortController();
    const res = await fetch(url, { signal: abort.signal, headers: { accept: 'text/event-stream' } });
    if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let connected!: () => void;
    const ready = new Promise<void>((r) => (connected = r));
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          i = buf.indexOf('\n\n');
          if (frame.startsWith(': connected')) connected();
          for (const line of frame.split('\n'))
            if (line.startsWith('data: ')) {
              const p = asPayload((JSON.parse(line.slice(6)) as { data: unknown }).data);
              if (p) onEvent(p);
            }
        }
      }
    })().catch(() => {});
    await ready;
    return {
      async close() {
        abort.abort();
        await pump;
      },
    };
  },
  async producer(ctx): Promise<LoadProducer> {
    const url = new URL('/events', baseUrl(ctx, 'http'));
    return {
      async send(events) {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(events.map((p) => busEventFor(p, ctx.mix))),
        });
        await res.arrayBuffer();
        if (res.status !== 202) throw new Error(`POST ${url}: HTTP ${res.status}`);
        return [];
      },
      async close() {},
    };
  },
};
