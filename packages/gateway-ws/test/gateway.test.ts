import { QEEventBus } from '@qe/core';
import { sleep, waitFor } from '@qe/test-utils';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createWebSocketGateway, type WebSocketGateway, type WebSocketGatewayOptions } from '../src/index.js';

const SECRET = 'ws-gateway-test-secret-long-enough-0123456789';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(extra: Partial<WebSocketGatewayOptions> = {}) {
  const bus = new QEEventBus({ nodeId: `gw-${cleanups.length}`, retryDelay: 10, maxRetryDelay: 20 });
  await bus.start();
  cleanups.push(() => bus.stop());
  const gw = await createWebSocketGateway({ bus, port: 0, heartbeatIntervalMs: 60_000, ...extra });
  cleanups.push(() => gw.close());
  return { bus, gw };
}

type Msg = Record<string, unknown> & { op: string };
class Client {
  readonly inbox: Msg[] = [];
  closed: { code: number; reason: string } | undefined;
  private seq = 0;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.inbox.push(JSON.parse(d.toString())));
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    ws.on('error', () => {});
  }
  static async open(gw: WebSocketGateway, opts: { token?: string; origin?: string; query?: string } = {}) {
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/events${opts.query ?? ''}`, {
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.origin ? { origin: opts.origin } : {}),
      },
    });
    const c = new Client(ws);
    cleanups.push(() => ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
    return c;
  }
  send(msg: Record<string, unknown>) {
    this.ws.send(JSON.stringify(msg));
  }
  async request(msg: Record<string, unknown>): Promise<Msg> {
    const id = `r${++this.seq}`;
    this.send({ ...msg, id });
    await waitFor(() => this.inbox.some((m) => m.id === id), `reply to ${id}`);
    return this.inbox.find((m) => m.id === id)!;
  }
  events(): Msg[] {
    return this.inbox.filter((m) => m.op === 'event');
  }
}

const token = (claims: Record<string, unknown>, exp: string | number = '5m') =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
const auth = { jwt: { algorithms: ['HS256'], secret: SECRET } };
const everything = { qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } };

describe('WebSocket gateway', () => {
  it('publishes with an ack carrying the ids and delivers to subscribers on other connections', async () => {
    const { gw } = await setup();
    const a = await Client.open(gw);
    const b = await Client.open(gw);
    const sub = await b.request({ op: 'subscribe', patterns: ['task.*'] });
    expect(sub).toMatchObject({ op: 'ack', subscription: expect.any(String) });
    const pub = await a.request({
      op: 'publish',
      event: { type: 'task.create', agentId: 'ws-agent', data: { n: 1 } },
    });
    expect(pub).toMatchObject({ op: 'ack', ids: [expect.any(String)] });
    await waitFor(() => b.events().length === 1, 'the event');
    expect(b.events()[0]).toMatchObject({
      subscription: sub.subscription,
      event: { type: 'task.create', data: { n: 1 } },
    });
    const batch = await a.request({
      op: 'publish',
      events: [
        { type: 'task.a', agentId: 'x', data: 1 },
        { type: 'task.b', agentId: 'x', data: 2 },
      ],
    });
    expect((batch.ids as string[]).length).toBe(2);
    const bad = await a.request({
      op: 'publish',
      events: [
        { type: 'task.a', agentId: 'x', data: 1 },
        { type: 'Bad', agentId: 'x', data: 2 },
      ],
    });
    expect(bad).toMatchObject({
      op: 'error',
      error: { code: 'VALIDATION', details: { field: 'events[1].type' } },
    });
    expect(await a.request({ op: 'ping' })).toMatchObject({ op: 'pong' });
    const un = await b.request({ op: 'unsubscribe', subscription: sub.subscription });
    expect(un.op).toBe('ack');
  });

  it('group deliveries wait for the client ack; an unacked one goes to another member when its holder disconnects', async () => {
    const { bus, gw } = await setup({ ackTimeoutMs: 60_000 });
    const a = await Client.open(gw);
    const b = await Client.open(gw);
    await a.request({ op: 'subscribe', patterns: 'job.*', group: 'workers' });
    await b.request({ op: 'subscribe', patterns: 'job.*', group: 'workers' });
    for (let i = 0; i < 4; i++) await bus.publish({ type: 'job.run', agentId: 'p', data: { i } });
    await waitFor(() => a.events().length + b.events().length === 4, 'four deliveries');
    for (const m of b.events()) b.send({ op: 'ack', delivery: m.delivery });
    const heldByA = a.events().map((m) => (m.event as { data: { i: number } }).data.i);
    expect(heldByA.length).toBeGreaterThan(0);
    a.ws.terminate(); // gone without acking
    await waitFor(
      () =>
        heldByA.every((i) =>
          b.events().some((m) => (m.event as { data: { i: number } }).data.i === i && m !== undefined),
        ) && b.events().length >= 4,
      'A’s deliveries redelivered to B',
    );
  });

  it('refuses the upgrade without a valid token (401) and closes with 1008 when the token expires', async () => {
    const { gw } = await setup({ auth });
    await expect(Client.open(gw)).rejects.toThrow(/401/);
    await expect(
      Client.open(gw, { token: await token(everything, Math.floor(Date.now() / 1000) - 30) }),
    ).rejects.toThrow(/401/);
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ ...everything, exp: 9999999999 })).toString('base64url')}.`;
    await expect(Client.open(gw, { token: none })).rejects.toThrow(/401/);
    const ok = await Client.open(gw, { token: await token(everything) });
    expect((await ok.request({ op: 'ping' })).op).toBe('pong');
    const viaQuery = await Client.open(gw, { query: `?token=${await token(everything)}` });
    expect((await viaQuery.request({ op: 'ping' })).op).toBe('pong');
    const short = await Client.open(gw, {
      token: await token(everything, Math.floor(Date.now() / 1000) + 1),
    });
    await waitFor(() => short.closed !== undefined, 'the expiry close', 5000);
    expect(short.closed!.code).toBe(1008);
    expect(gw.stats().refused.unauthorized).toBe(3);
  });

  it('enforces publish and subscribe permissions from claims; a wider subscription is refused', async () => {
    const { gw } = await setup({ auth });
    const c = await Client.open(gw, {
      token: await token({
        qe: { pub: { allow: ['task.*'], deny: ['task.delete'] }, sub: { allow: ['task.**'] } },
      }),
    });
    expect(
      await c.request({ op: 'publish', event: { type: 'task.create', agentId: 'a', data: {} } }),
    ).toMatchObject({ op: 'ack' });
    expect(
      await c.request({ op: 'publish', event: { type: 'task.delete', agentId: 'a', data: {} } }),
    ).toMatchObject({ error: { code: 'FORBIDDEN' } });
    expect(
      await c.request({ op: 'publish', event: { type: 'agent.spawn', agentId: 'a', data: {} } }),
    ).toMatchObject({ error: { code: 'FORBIDDEN' } });
    expect(await c.request({ op: 'subscribe', patterns: '**' })).toMatchObject({
      error: { code: 'FORBIDDEN' },
    });
    expect(await c.request({ op: 'subscribe', patterns: 'task.*' })).toMatchObject({ op: 'ack' });
    expect(gw.stats().errors.forbidden).toBe(3);
  });

  it('refuses a foreign Origin (403) and connections past maxConnections (503)', async () => {
    const { gw } = await setup({ allowedOrigins: ['https://app.example'], maxConnections: 1 });
    await expect(Client.open(gw, { origin: 'https://evil.example' })).rejects.toThrow(/403/);
    await Client.open(gw, { origin: 'https://app.example' });
    await expect(Client.open(gw, { origin: 'https://app.example' })).rejects.toThrow(/503/);
    expect(gw.stats().refused).toMatchObject({ origin: 1, maxConnections: 1 });
  });

  it('answers malformed JSON, prototype pollution and unknown kinds with errors, keeps the connection, and counts them', async () => {
    const { gw } = await setup();
    const c = await Client.open(gw);
    c.ws.send('{not json');
    c.ws.send('{"op":"publish","id":1,"event":{"__proto__":{"polluted":true}}}');
    c.send({ op: 'teleport', id: 2 });
    c.send({ op: 'subscribe', id: 3, patterns: 'a..b' });
    await waitFor(() => c.inbox.filter((m) => m.op === 'error').length === 4, 'four errors');
    expect(c.inbox.map((m) => (m.error as { code: string }).code)).toEqual([
      'VALIDATION',
      'VALIDATION',
      'VALIDATION',
      'INVALID_PATTERN',
    ]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((await c.request({ op: 'ping' })).op).toBe('pong');
    expect(gw.stats().errors).toMatchObject({ malformed: 2, unknownOp: 1, validation: 1 });
  });

  it('closes a connection sending an oversized frame (1009) before buffering it; others are unaffected', async () => {
    const { gw } = await setup({ maxPayload: 1024 });
    const big = await Client.open(gw);
    const other = await Client.open(gw);
    big.ws.send(JSON.stringify({ op: 'ping', id: 1, pad: 'x'.repeat(5000) }));
    await waitFor(() => big.closed !== undefined, 'the close');
    expect(big.closed!.code).toBe(1009);
    expect((await other.request({ op: 'ping' })).op).toBe('pong');
  });

  it('a slow client is capped (events dropped and counted) while a fast client keeps receiving', async () => {
    const { bus, gw } = await setup({ maxBufferedBytes: 64 * 1024 });
    const slow = await Client.open(gw);
    const fast = await Client.open(gw);
    await slow.request({ op: 'subscribe', patterns: 'flood.*' });
    await fast.request({ op: 'subscribe', patterns: 'flood.*' });
    // the slow client stops reading from its socket
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const blob = 'y'.repeat(16 * 1024);
    // at a pace a reading client keeps up with; the paused one falls behind
    for (let i = 0; i < 400; i++) {
      await bus.publish({ type: 'flood.x', agentId: 'p', data: { i, blob } });
      if (i % 4 === 3) await sleep(1); // pacing the load
    }
    await waitFor(
      () => fast.events().length === 400,
      `the fast client to get everything (got ${fast.events().length}, inbox ${fast.inbox.length} closed ${JSON.stringify(fast.closed)} ${JSON.stringify(fast.inbox.slice(-2)).slice(0, 300)}, stats ${JSON.stringify(gw.stats())})`,
      15_000,
    );
    await waitFor(() => gw.stats().dropped > 0, 'drops for the slow client');
  });

  it('rate-limits per principal across that principal’s connections', async () => {
    const { gw } = await setup({
      auth,
      rateLimit: { windowMs: 60_000, maxMessages: 100, perPrincipal: { windowMs: 60_000, maxMessages: 3 } },
    });
    const t = await token({ sub: 'greedy', ...everything });
    const a = await Client.open(gw, { token: t });
    const b = await Client.open(gw, { token: t });
    const other = await Client.open(gw, { token: await token({ sub: 'polite', ...everything }) });
    expect((await a.request({ op: 'ping' })).op).toBe('pong');
    expect((await a.request({ op: 'ping' })).op).toBe('pong');
    expect((await b.request({ op: 'ping' })).op).toBe('pong');
    expect(await b.request({ op: 'ping' })).toMatchObject({ error: { code: 'RATE_LIMITED' } });
    expect((await other.request({ op: 'ping' })).op).toBe('pong'); // another principal is unaffected
  });

  it('closes a connection that stays silent past idleTimeoutMs', async () => {
    const { gw } = await setup({ heartbeatIntervalMs: 50, idleTimeoutMs: 200 });
    const quiet = await Client.open(gw);
    await waitFor(() => quiet.closed !== undefined, 'the idle close', 5000);
    expect(gw.stats().connections).toBe(0);
  });

  it('rate-limits messages per connection with RATE_LIMITED and a retry-after', async () => {
    const { gw } = await setup({ rateLimit: { windowMs: 60_000, maxMessages: 3 } });
    const c = await Client.open(gw);
    for (let i = 0; i < 3; i++) expect((await c.request({ op: 'ping' })).op).toBe('pong');
    expect(await c.request({ op: 'ping' })).toMatchObject({
      error: { code: 'RATE_LIMITED', details: { retryAfterMs: expect.any(Number) } },
    });
  });
});
