import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { createHttpGateway } from '@qe/gateway-http';
import { createWebSocketGateway } from '@qe/gateway-ws';
import { waitFor } from '@qe/test-utils';
import { build } from 'esbuild';
import { SignJWT } from 'jose';
import { chromium } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { ClientError, type ClientEvent, publishHttp, QEClient } from '../src/index.js';

const SECRET = 'client-test-secret-that-is-long-enough-42';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function setup(port = 0, auth = false) {
  const bus = new QEEventBus({ nodeId: `client-${cleanups.length}`, retryDelay: 10, maxRetryDelay: 20 });
  await bus.start();
  cleanups.push(() => bus.stop());
  const gw = await createWebSocketGateway({
    bus,
    port,
    heartbeatIntervalMs: 60_000,
    ...(auth ? { auth: { jwt: { algorithms: ['HS256'], secret: SECRET } } } : {}),
  });
  cleanups.push(() => gw.close());
  return { bus, gw, url: `ws://127.0.0.1:${gw.port}/events` };
}
function client(url: string, token?: string) {
  const c = new QEClient({
    url,
    ...(token ? { token } : {}),
    reconnect: { minDelayMs: 50, maxDelayMs: 200 },
  });
  cleanups.push(() => c.close());
  return c;
}

describe('QEClient (Node, global WebSocket)', () => {
  it('publishes, subscribes, and acks group deliveries after the handler', async () => {
    const { bus, url } = await setup();
    const a = client(url);
    const b = client(url);
    await a.connect();
    await b.connect();
    const got: ClientEvent[] = [];
    await b.subscribe<{ n: number }>('task.*', (e) => void got.push(e));
    const id = await a.publish({ type: 'task.create', agentId: 'node-client', data: { n: 1 } });
    await waitFor(() => got.length === 1, 'the event');
    expect(got[0]).toMatchObject({ id, type: 'task.create', data: { n: 1 } });
    const handled: number[] = [];
    await b.subscribe<{ i: number }>('job.*', async (e) => void handled.push(e.data.i), { group: 'w' });
    for (let i = 0; i < 5; i++) await bus.publish({ type: 'job.run', agentId: 'p', data: { i } });
    await waitFor(() => handled.length === 5, 'five group deliveries');
    await waitFor(() => bus.getDetailedMetrics().queueSize === 0, 'every delivery acked');
    expect(
      (
        await a.publishBatch([
          { type: 'x.y', agentId: 'a', data: 1 },
          { type: 'x.z', agentId: 'a', data: 2 },
        ])
      ).length,
    ).toBe(2);
  });

  it('surfaces gateway errors as typed ClientErrors', async () => {
    const { url } = await setup();
    const c = client(url);
    await c.connect();
    const err = await c.publish({ type: 'Bad Type', agentId: 'a', data: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe('VALIDATION');
    await expect(c.subscribe('a..b', () => {})).rejects.toMatchObject({ code: 'INVALID_PATTERN' });
  });

  it('an unauthenticated connection is refused; with a token it works', async () => {
    const { url } = await setup(0, true);
    await expect(client(url).connect()).rejects.toBeInstanceOf(ClientError);
    const token = await new SignJWT({ qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(SECRET));
    const c = client(url, token);
    await c.connect();
    await c.ping();
  });

  it('reconnects with backoff and resubscribes when the gateway comes back', async () => {
    const first = await setup();
    const port = first.gw.port;
    const c = client(first.url);
    await c.connect();
    const got: string[] = [];
    await c.subscribe('re.*', (e) => void got.push(e.type));
    await first.gw.close();
    const bus2 = new QEEventBus({ nodeId: 'client-again' });
    await bus2.start();
    cleanups.push(() => bus2.stop());
    const gw2 = await createWebSocketGateway({ bus: bus2, port, heartbeatIntervalMs: 60_000 });
    cleanups.push(() => gw2.close());
    await waitFor(() => c.reconnects === 1 && gw2.stats().connections === 1, 'the reconnect', 10_000);
    await waitFor(() => bus2.getSubscriberStats().active === 1, 'the resubscription');
    await bus2.publish({ type: 're.after', agentId: 'p', data: {} });
    await waitFor(() => got.includes('re.after'), 'an event after the reconnect');
  });

  it('publishHttp publishes over the HTTP gateway', async () => {
    const bus = new QEEventBus({ nodeId: 'client-http' });
    await bus.start();
    cleanups.push(() => bus.stop());
    const gw = await createHttpGateway({ bus, port: 0 });
    cleanups.push(() => gw.close());
    const got: string[] = [];
    bus.subscribe('web.*', (e) => void got.push(e.type));
    const ids = await publishHttp(`http://127.0.0.1:${gw.port}`, [
      { type: 'web.one', agentId: 'curl', data: {} },
    ]);
    expect(ids).toHaveLength(1);
    await waitFor(() => got.length === 1, 'the HTTP event');
    await expect(
      publishHttp(`http://127.0.0.1:${gw.port}`, { type: 'BAD', agentId: 'x', data: {} }),
    ).rejects.toMatchObject({ code: 'VALIDATION' });
  });
});

/**
 * A gateway peer that the test scripts: a real WebSocket server on a real
 * socket (RFC 6455 handshake and frames, written here) that hands each request
 * to `onRequest` and lets the test answer when and in what order it likes.
 */
async function scriptedGateway(
  onRequest: (msg: Record<string, unknown>, reply: (m: unknown) => void) => void,
) {
  const sockets = new Set<Socket>();
  const server = createServer();
  server.on('upgrade', (req, socket: Socket) => {
    sockets.add(socket);
    const accept = createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const reply = (m: unknown) => {
      const body = Buffer.from(JSON.stringify(m));
      const head =
        body.length < 126
          ? Buffer.from([0x81, body.length])
          : Buffer.from([0x81, 126, body.length >> 8, body.length & 255]);
      if (!socket.destroyed) socket.write(Buffer.concat([head, body]));
    };
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        let len = buf[1]! & 127;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + 4 + len) return;
        const mask = buf.subarray(at, at + 4);
        const body = Buffer.from(buf.subarray(at + 4, at + 4 + len));
        for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
        const opcode = buf[0]! & 15;
        buf = buf.subarray(at + 4 + len);
        if (opcode === 8) return void socket.end();
        if (opcode === 1) onRequest(JSON.parse(body.toString()) as Record<string, unknown>, reply);
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
}

describe('QEClient requests against a scripted gateway', () => {
  it('replies in any order settle their own requests, thousands in flight', async () => {
    const held: [Record<string, unknown>, (m: unknown) => void][] = [];
    let mode: 'reverse' | 'inOrder' | 'oddFirst' = 'reverse';
    const N = 3000;
    const url = await scriptedGateway((msg, reply) => {
      held.push([msg, reply]);
      if (held.length < N) return;
      const batch = held.splice(0);
      const order =
        mode === 'reverse'
          ? batch.reverse()
          : mode === 'inOrder'
            ? batch
            : [...batch.filter((_, i) => i % 2 === 1), ...batch.filter((_, i) => i % 2 === 0)];
      for (const [m, r] of order) r({ op: 'published', id: m.id, ids: [`srv-${String(m.id)}`] });
    });
    const c = client(url);
    await c.connect();
    for (const m of ['reverse', 'inOrder', 'oddFirst'] as const) {
      mode = m;
      const sent = Array.from({ length: N }, (_, i) => c.publish({ type: 'x.y', agentId: 'a', data: { i } }));
      const ids = await Promise.all(sent);
      // each publish got the reply to its own request: the ids are those the client sent, in send order
      const seqs = ids.map((id) => Number(id.replace('srv-c', '')));
      expect(seqs.every((s, i) => i === 0 || s === seqs[i - 1]! + 1)).toBe(true);
    }
  });

  it('a request never answered rejects with TIMEOUT; late, unknown and malformed reply ids are ignored', async () => {
    const late: (() => void)[] = [];
    const url = await scriptedGateway((msg, reply) => {
      if (msg.op === 'ping') {
        late.push(() => reply({ op: 'pong', id: msg.id }));
        return;
      }
      for (const id of ['zzz', 'c', 'c-1', 'c1.5', 'c99999999', 7, null])
        reply({ op: 'published', id, ids: ['bogus'] });
      reply({ op: 'published', id: msg.id, ids: ['real'] });
    });
    const c = new QEClient({ url, requestTimeoutMs: 150, reconnect: { enabled: false } });
    cleanups.push(() => c.close());
    const errors: unknown[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    await expect(c.ping()).rejects.toMatchObject({ code: 'TIMEOUT' });
    for (const f of late.splice(0)) f(); // the answer after the timeout
    expect(await c.publish({ type: 'x.y', agentId: 'a', data: {} })).toBe('real');
    expect(errors).toEqual([]);
  });
});

describe('QEClient in headless Chromium', () => {
  it('a page subscribes through the browser build of the client and receives events published on the bus', async () => {
    const { bus, url } = await setup();
    const bundle = await build({
      entryPoints: [fileURLToPath(new URL('../src/index.ts', import.meta.url))],
      bundle: true,
      format: 'iife',
      globalName: 'QE',
      platform: 'browser',
      write: false,
    });
    const js = bundle.outputFiles[0]!.text;
    const page = `<!doctype html><html><body><h1>QE client</h1><ul id="log"></ul><script>${js}</script><script>
      window.received = [];
      const c = new QE.QEClient({ url: ${JSON.stringify(url)} });
      c.connect().then(() => c.subscribe('browser.*', (e) => {
        window.received.push(e.type);
        const li = document.createElement('li'); li.textContent = e.type; document.getElementById('log').appendChild(li);
      })).then(() => { window.ready = true; }, (e) => { window.failed = String(e); });
    </script></body></html>`;
    const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(page));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
      ],
    });
    cleanups.push(() => browser.close());
    const tab = await browser.newPage();
    await tab.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await tab.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true, undefined, {
      timeout: 15_000,
    });
    await bus.publish({ type: 'browser.hello', agentId: 'node', data: {} });
    await bus.publish({ type: 'browser.again', agentId: 'node', data: {} });
    await tab.waitForFunction(
      () => (window as unknown as { received: string[] }).received.length === 2,
      undefined,
      { timeout: 15_000 },
    );
    expect(await tab.evaluate(() => (window as unknown as { received: string[] }).received)).toEqual([
      'browser.hello',
      'browser.again',
    ]);
    expect(await tab.locator('#log li').count()).toBe(2);
  }, 60_000);
});
