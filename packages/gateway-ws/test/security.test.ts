/**
 * Findings of the outside attack review that concern the WebSocket gateway:
 * a token valid for longer than Node's timer range (~24.8 days) must not close
 * the connection at once; a port in use must reject, not raise an unhandled
 * 'error'; per-principal message limits are shared across gateways through
 * Redis; a malformed upgrade or frame never affects other clients.
 */
import net from 'node:net';
import { QEEventBus } from '@qe/core';
import { RedisTokenBuckets } from '@qe/reliability';
import { deletePrefix, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createWebSocketGateway, type WebSocketGatewayOptions } from '../src/index.js';

const SECRET = 'ws-gateway-security-secret-0123456789abcdef';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const auth = { jwt: { algorithms: ['HS256'], secret: SECRET } };
const everything = { qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } };
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const token = (claims: Record<string, unknown>, exp: number) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));

async function gateway(extra: Partial<WebSocketGatewayOptions> = {}) {
  const bus = new QEEventBus({ nodeId: `ws-sec-${cleanups.length}` });
  await bus.start();
  cleanups.push(() => bus.stop());
  const gw = await createWebSocketGateway({ bus, port: 0, heartbeatIntervalMs: 60_000, ...extra });
  cleanups.push(() => gw.close());
  return gw;
}

/** Opens a client; resolves once open, with a request helper that awaits the reply to each id. */
async function open(port: number, bearer: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/events`, {
    headers: { authorization: `Bearer ${bearer}` },
  });
  cleanups.push(() => ws.terminate());
  const inbox: Record<string, unknown>[] = [];
  let closed: number | undefined;
  ws.on('message', (d) => inbox.push(JSON.parse(d.toString())));
  ws.on('close', (code) => (closed = code));
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let seq = 0;
  return {
    ws,
    closed: () => closed,
    async request(msg: Record<string, unknown>) {
      const id = `q${++seq}`;
      ws.send(JSON.stringify({ ...msg, id }));
      await waitFor(() => inbox.some((m) => m.id === id) || closed !== undefined, `reply to ${id}`);
      return inbox.find((m) => m.id === id);
    },
  };
}

describe('WebSocket gateway: findings of the attack review', () => {
  it('a token valid for 30 days keeps its connection (the expiry timer does not overflow)', async () => {
    const gw = await gateway({ auth });
    const long = await token(everything, Math.floor(Date.now() / 1000) + 30 * 24 * 3600);
    const c = await open(gw.port, long);
    // three round trips: a connection closed at once (the overflowed timer fires after 1 ms) fails the first
    for (let i = 0; i < 3; i++) expect((await c.request({ op: 'ping' }))?.op).toBe('pong');
    expect(c.closed()).toBeUndefined();
    const short = await open(gw.port, await token(everything, Math.floor(Date.now() / 1000) + 1));
    await waitFor(() => short.closed() !== undefined, 'the expiry close', 10_000);
    expect(short.closed()).toBe(1008);
  });

  it('a port in use rejects with the bind error', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const taken = (blocker.address() as net.AddressInfo).port;
    const bus = new QEEventBus({ nodeId: 'ws-bind' });
    await expect(createWebSocketGateway({ bus, port: taken })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('per-principal limits are shared by two gateways on one Redis', async () => {
    const prefix = uniquePrefix('ws-rl');
    const redis = new Redis(REDIS_URL);
    cleanups.push(async () => {
      await deletePrefix(prefix, REDIS_URL);
      redis.disconnect();
    });
    const rateLimit = {
      windowMs: 600_000,
      maxMessages: 100,
      perPrincipal: { windowMs: 600_000, maxMessages: 4 },
      store: new RedisTokenBuckets(redis, prefix),
    };
    const [a, b] = [await gateway({ auth, rateLimit }), await gateway({ auth, rateLimit })];
    const t = await token({ ...everything, sub: 'alice' }, Math.floor(Date.now() / 1000) + 600);
    const ca = await open(a.port, t);
    const cb = await open(b.port, t);
    const ops: string[] = [];
    for (const c of [ca, cb, ca, cb, ca, cb]) ops.push(String((await c.request({ op: 'ping' }))?.op));
    expect(ops).toEqual(['pong', 'pong', 'pong', 'pong', 'error', 'error']);
  });

  it('refuses bad rate-limit settings with CONFIG', async () => {
    const bus = new QEEventBus({ nodeId: 'ws-cfg' });
    await expect(
      createWebSocketGateway({ bus, port: 0, rateLimit: { windowMs: 0, maxMessages: 5 } }),
    ).rejects.toMatchObject({ code: 'CONFIG' });
  });
});
