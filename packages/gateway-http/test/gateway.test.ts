import { execFile } from 'node:child_process';
import { connect as http2Connect } from 'node:http2';
import net from 'node:net';
import { promisify } from 'node:util';
import { type AgentEvent, QEEventBus } from '@qe/core';
import { type TestCertificate, testCertificate, waitFor } from '@qe/test-utils';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpGateway, type HttpGatewayOptions } from '../src/index.js';

const run = promisify(execFile);
const SECRET = 'http-gateway-test-secret-long-enough-0123456789';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
/** A self-signed certificate for localhost and 127.0.0.1. */
let cert: TestCertificate;
beforeAll(() => {
  cert = testCertificate();
});
afterAll(() => cert.cleanup());

async function setup(extra: Partial<HttpGatewayOptions> = {}) {
  const bus = new QEEventBus({ nodeId: `http-${cleanups.length}`, retryAttempts: 0 });
  await bus.start();
  cleanups.push(() => bus.stop());
  const gw = await createHttpGateway({ bus, port: 0, ...extra });
  cleanups.push(() => gw.close());
  return { bus, gw, base: `http://127.0.0.1:${gw.port}` };
}
const token = (claims: Record<string, unknown>, exp: string | number = '5m') =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
const json = { 'content-type': 'application/json' };
const ev = (type: string, data: unknown = {}) => ({ type, agentId: 'http-agent', data });

describe('HTTP gateway (HTTP/1.1, real sockets)', () => {
  it('POST /events publishes one or a batch (202 with ids); GET /events reads history; /health', async () => {
    const { bus, base } = await setup();
    const got: AgentEvent[] = [];
    bus.subscribe('order.*', (e) => void got.push(e));
    const one = await fetch(`${base}/events`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify(ev('order.placed', { n: 1 })),
    });
    expect(one.status).toBe(202);
    expect((await one.json()).ids).toHaveLength(1);
    const batch = await fetch(`${base}/events`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify([ev('order.a'), ev('order.b')]),
    });
    expect((await batch.json()).ids).toHaveLength(2);
    await waitFor(() => got.length === 3, 'three events');
    const hist = await (await fetch(`${base}/events?pattern=order.*&limit=2`)).json();
    expect(hist.events.map((e: AgentEvent) => e.type)).toEqual(['order.a', 'order.b']);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect((await health.json()).status).toBe('healthy');
  });

  it('answers bad input with the right status and the bus code, and counts it', async () => {
    const { base, gw } = await setup({ maxBodyBytes: 1024 });
    const post = (body: string, headers: Record<string, string> = json) =>
      fetch(`${base}/events`, { method: 'POST', headers, body });
    const cases: [Promise<Response>, number, string][] = [
      [post('{not json'), 400, 'VALIDATION'],
      [post('{"type":"a.b","agentId":"x","data":{"__proto__":{"polluted":1}}}'), 400, 'VALIDATION'],
      [post(JSON.stringify(ev('Bad Type'))), 400, 'VALIDATION'],
      [post(JSON.stringify([ev('ok.one'), { type: 'ok.two', agentId: '' }])), 400, 'VALIDATION'],
      [post('hello', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [post(JSON.stringify(ev('big.one', 'x'.repeat(5000)))), 413, 'PAYLOAD_TOO_LARGE'],
      [fetch(`${base}/nope`), 404, 'NOT_FOUND'],
      [fetch(`${base}/events?pattern=a..b`), 400, 'INVALID_PATTERN'],
    ];
    for (const [p, status, code] of cases) {
      const r = await p;
      expect([r.status, (await r.json()).error.code]).toEqual([status, code]);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(gw.stats().refused).toMatchObject({
      VALIDATION: 4,
      UNSUPPORTED_MEDIA_TYPE: 1,
      PAYLOAD_TOO_LARGE: 1,
    });
    expect((await fetch(`${base}/health`)).status).toBe(200); // still serving
  });

  it('JWT: missing, expired and alg-none tokens get 401; permissions give 403 for a forbidden publish and a too-wide stream', async () => {
    const { base } = await setup({ auth: { jwt: { algorithms: ['HS256'], secret: SECRET } } });
    const withToken = (t: string) => ({ ...json, authorization: `Bearer ${t}` });
    const body = JSON.stringify(ev('task.create'));
    expect((await fetch(`${base}/events`, { method: 'POST', headers: json, body })).status).toBe(401);
    const expired = await token({ qe: { pub: { allow: ['**'] } } }, Math.floor(Date.now() / 1000) - 60);
    expect(
      (await fetch(`${base}/events`, { method: 'POST', headers: withToken(expired), body })).status,
    ).toBe(401);
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"exp":9999999999,"qe":{"pub":{"allow":["**"]}}}').toString('base64url')}.`;
    expect((await fetch(`${base}/events`, { method: 'POST', headers: withToken(none), body })).status).toBe(
      401,
    );
    const limited = await token({
      qe: { pub: { allow: ['task.*'], deny: ['task.delete'] }, sub: { allow: ['task.create'] } },
    });
    expect(
      (await fetch(`${base}/events`, { method: 'POST', headers: withToken(limited), body })).status,
    ).toBe(202);
    const del = await fetch(`${base}/events`, {
      method: 'POST',
      headers: withToken(limited),
      body: JSON.stringify(ev('task.delete')),
    });
    expect([del.status, (await del.json()).error.code]).toEqual([403, 'FORBIDDEN']);
    const wide = await fetch(`${base}/events/stream?pattern=task.*`, { headers: withToken(limited) });
    expect(wide.status).toBe(403);
  });

  it('rate limit: 429 with Retry-After', async () => {
    const { base } = await setup({ rateLimit: { windowMs: 60_000, maxRequests: 2 } });
    for (let i = 0; i < 2; i++) expect((await fetch(`${base}/events?limit=1`)).status).toBe(200);
    const r = await fetch(`${base}/events?limit=1`);
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('CORS: an allowed origin gets its own origin back (never * with credentials); a foreign one is refused', async () => {
    const { base } = await setup({ cors: { origins: ['https://app.example'], credentials: true } });
    const ok = await fetch(`${base}/events?limit=1`, { headers: { origin: 'https://app.example' } });
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
    const bad = await fetch(`${base}/events?limit=1`, { headers: { origin: 'https://evil.example' } });
    expect(bad.status).toBe(403);
    expect(bad.headers.get('access-control-allow-origin')).toBeNull();
    await expect(
      createHttpGateway({
        bus: new QEEventBus({ nodeId: 'x' }),
        cors: { origins: ['*'], credentials: true },
      }),
    ).rejects.toThrow(/wildcard/);
  });

  it('h2c: HTTP/2 with prior knowledge on its cleartext port (curl --http2-prior-knowledge, Node http2)', async () => {
    const { gw } = await setup({ h2cPort: 0 });
    const url = `http://127.0.0.1:${gw.h2cPort}`;
    const h2 = await run('curl', [
      '-sS',
      '--http2-prior-knowledge',
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `${url}/health`,
    ]);
    expect(h2.stdout).toBe('2 200');
    const post = await run('curl', [
      '-sS',
      '--http2-prior-knowledge',
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify(ev('h2c.curl')),
      `${url}/events`,
    ]);
    expect(JSON.parse(post.stdout).ids).toHaveLength(1);
    const session = http2Connect(url);
    cleanups.push(() => session.close());
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ':path': '/events?limit=1' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });

  it('gzips large JSON replies when configured, serves /metrics when given, and answers 503 when the bus is down', async () => {
    const { bus, base } = await setup({
      compression: true,
      metrics: {
        contentType: 'text/plain; version=0.0.4',
        render: async () => '# TYPE qe_up gauge\nqe_up 1\n',
      },
    });
    for (let i = 0; i < 30; i++) await bus.publish(ev('big.history', { pad: 'x'.repeat(100), i }));
    const raw = await run('curl', [
      '-sS',
      '-D',
      '-',
      '-o',
      '/dev/null',
      '-H',
      'accept-encoding: gzip',
      `${base}/events?pattern=big.*&limit=30`,
    ]);
    expect(raw.stdout.toLowerCase()).toContain('content-encoding: gzip');
    const decoded = await fetch(`${base}/events?pattern=big.*&limit=30`, {
      headers: { 'accept-encoding': 'gzip' },
    });
    expect((await decoded.json()).events).toHaveLength(30);
    const metrics = await fetch(`${base}/metrics`);
    expect(await metrics.text()).toContain('qe_up 1');
    await bus.stop();
    const down = await fetch(`${base}/events`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify(ev('late.x')),
    });
    expect([down.status, (await down.json()).error.code]).toEqual([503, 'NOT_CONNECTED']);
    expect((await fetch(`${base}/health`)).status).toBe(503);
  });

  it('slowloris: a client dribbling headers is cut off after headersTimeout', async () => {
    const { gw } = await setup({ headersTimeoutMs: 500, requestTimeoutMs: 1000 });
    const sock = net.connect(gw.port, '127.0.0.1');
    sock.on('error', () => {});
    sock.write('GET /health HTTP/1.1\r\nHost: x\r\n');
    const dribble = setInterval(() => sock.write('X-Slow: 1\r\n'), 100);
    const closedAt = await new Promise<number>((r) => sock.on('close', () => r(Date.now())));
    clearInterval(dribble);
    expect(closedAt).toBeGreaterThan(0);
  }, 10_000);

  it('close() lets a publish in progress get its reply (202) before the server closes', async () => {
    const bus = new QEEventBus({ nodeId: 'http-close', retryAttempts: 0 });
    await bus.start();
    cleanups.push(() => bus.stop());
    const gw = await createHttpGateway({ bus, port: 0 });
    const body = JSON.stringify(ev('close.inflight'));
    const sock = net.connect(gw.port, '127.0.0.1');
    sock.on('error', () => {});
    let reply = '';
    sock.on('data', (c: Buffer) => (reply += c.toString()));
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      `POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    );
    await waitFor(() => gw.stats().requests === 1, 'the request to start');
    const closed = gw.close();
    sock.write(body.slice(10)); // the rest of the body arrives while the gateway is closing
    await closed;
    await waitFor(() => reply.includes('\r\n\r\n'), 'the reply');
    expect(reply).toMatch(/^HTTP\/1\.1 202 /);
    expect((await bus.getRecentEvents({ pattern: 'close.*' })).map((e) => e.type)).toEqual([
      'close.inflight',
    ]);
    sock.destroy();
  });

  it('SSE: a live stream with ids, resumable with Last-Event-ID from history', async () => {
    const { bus, base } = await setup();
    const ac = new AbortController();
    cleanups.push(() => ac.abort());
    const res = await fetch(`${base}/events/stream?pattern=feed.*`, { signal: ac.signal });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    let text = '';
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        text += new TextDecoder().decode(value);
      }
    })();
    await waitFor(() => text.includes(': connected'), 'the stream to open');
    const first = await bus.publish(ev('feed.one'));
    await bus.publish(ev('other.x'));
    await waitFor(() => text.includes(`id: ${first.id}`), 'the first event');
    expect(text).toContain('event: feed.one');
    expect(text).not.toContain('other.x');
    ac.abort();
    await pump;
    const second = await bus.publish(ev('feed.two'));
    const resumed = await fetch(`${base}/events/stream?pattern=feed.*`, {
      headers: { 'last-event-id': first.id },
    });
    const r2 = resumed.body!.getReader();
    let t2 = '';
    await waitFor(async () => {
      const { value } = await r2.read();
      t2 += new TextDecoder().decode(value);
      return t2.includes(`id: ${second.id}`);
    }, 'the missed event on resume');
    await r2.cancel();
  });
});

describe('HTTP gateway over TLS: HTTP/2 with ALPN, HTTP/1.1 fallback', () => {
  it('serves HTTP/2 to Node’s http2 client and to curl --http2, and HTTP/1.1 to curl --http1.1', async () => {
    const { base: _b, gw } = await setup({
      tls: { key: cert.key, cert: cert.cert },
    });
    const url = `https://localhost:${gw.port}`;
    const session = http2Connect(url, { ca: cert.cert });
    cleanups.push(() => session.close());
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({
        ':method': 'POST',
        ':path': '/events',
        'content-type': 'application/json',
      });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.end(JSON.stringify(ev('h2.hello')));
    });
    expect(status).toBe(202);
    expect(session.alpnProtocol).toBe('h2');
    const h2 = await run('curl', [
      '-sS',
      '--cacert',
      cert.certFile,
      '--http2',
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `${url}/health`,
    ]);
    expect(h2.stdout).toBe('2 200');
    const h1 = await run('curl', [
      '-sS',
      '--cacert',
      cert.certFile,
      '--http1.1',
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `${url}/health`,
    ]);
    expect(h1.stdout).toBe('1.1 200');
    const post = await run('curl', [
      '-sS',
      '--cacert',
      cert.certFile,
      '--http2',
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify(ev('h2.curl')),
      `${url}/events`,
    ]);
    expect(JSON.parse(post.stdout).ids).toHaveLength(1);
  });
});
