/**
 * The holes an outside attack review found, each against a gateway embedded in
 * its own process (test/fixtures/gateway-process.ts) over real sockets: a
 * request must never take the process down, dead letters need the admin
 * permission, every listener has the slowloris limits, SSE ends when its token
 * expires, JSON replies carry the security headers, a bind failure rejects,
 * and rate limits are shared across instances through Redis.
 */
import type { ChildProcess } from 'node:child_process';
import { connect as http2Connect } from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import {
  deletePrefix,
  startFixture,
  type TestCertificate,
  testCertificate,
  uniquePrefix,
  waitFor,
} from '@qe/test-utils';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpGateway } from '../src/index.js';

const SECRET = 'http-gateway-security-secret-0123456789abcdef';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const FIXTURE = fileURLToPath(new URL('./fixtures/gateway-process.ts', import.meta.url));
const json = { 'content-type': 'application/json' };

interface Gw {
  child: ChildProcess;
  port: number;
  h2cPort: number | null;
  base: string;
}
const children: ChildProcess[] = [];
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});
/** A self-signed certificate for localhost and 127.0.0.1. */
let cert: TestCertificate;
beforeAll(() => {
  cert = testCertificate();
});
afterAll(() => cert.cleanup());

/** Starts the fixture process and resolves once it printed its ports (its stderr goes to the test's). */
function startGateway(config: Record<string, unknown>): Promise<Gw> {
  return new Promise((resolve, reject) => {
    let ready = false;
    const child: ChildProcess = startFixture(FIXTURE, [], {
      env: { QE_GW: JSON.stringify(config) },
      onLine: (line) => {
        if (ready) return;
        ready = true;
        const { port, h2cPort } = JSON.parse(line) as { port: number; h2cPort: number | null };
        const scheme = config.tls ? 'https' : 'http';
        resolve({ child, port, h2cPort, base: `${scheme}://127.0.0.1:${port}` });
      },
    });
    children.push(child);
    child.on('exit', (code) => {
      if (!ready)
        reject(new Error(`gateway process exited with ${code} before listening (its stderr is above)`));
    });
  });
}
const tlsConfig = () => ({ tls: { key: cert.keyFile, cert: cert.certFile } });

const token = (claims: Record<string, unknown>, exp: string | number = '5m') =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));

/** Sends raw bytes on a socket and collects everything until the server closes or answers a status line. */
function rawExchange(socket: net.Socket | tls.TLSSocket, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    socket.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (/\r\n\r\n/.test(got)) {
        socket.destroy();
        resolve(got);
      }
    });
    socket.on('error', () => resolve(got));
    socket.on('close', () => resolve(got));
    socket.write(bytes);
  });
}

/** One HTTP/2 request's status and body. */
function h2Request(
  url: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  const session = http2Connect(url, { rejectUnauthorized: false });
  return new Promise((resolve, reject) => {
    session.on('error', reject);
    const req = session.request(headers);
    let status = 0;
    let text = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      session.close();
      resolve({ status, body: text });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function alive(gw: Gw, insecure = false): Promise<void> {
  expect(gw.child.exitCode).toBeNull();
  if (insecure) {
    const r = await h2Request(gw.base, { ':path': '/health' });
    expect(r.status).toBe(200);
  } else expect((await fetch(`${gw.base}/health`)).status).toBe(200);
}

describe('a request never takes the process down', () => {
  it('a target that is not a URL gets 400 on HTTP/1.1, h2c, HTTP/1.1 over TLS and HTTP/2 over TLS; the process lives', async () => {
    const plain = await startGateway({ h2c: true });
    const h1 = await rawExchange(net.connect(plain.port, '127.0.0.1'), 'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(h1).toMatch(/^HTTP\/1\.1 400 /);
    expect(h1.toLowerCase()).toContain('x-content-type-options: nosniff');
    const h2c = await h2Request(`http://127.0.0.1:${plain.h2cPort}`, { ':path': '//[' });
    expect(h2c.status).toBe(400);
    expect(JSON.parse(h2c.body).error.code).toBe('VALIDATION');
    await alive(plain);

    const secure = await startGateway(tlsConfig());
    const overTls = await rawExchange(
      tls.connect({
        port: secure.port,
        host: '127.0.0.1',
        rejectUnauthorized: false,
        ALPNProtocols: ['http/1.1'],
      }),
      'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    expect(overTls).toMatch(/^HTTP\/1\.1 400 /);
    const h2 = await h2Request(secure.base, { ':path': '//[' });
    expect(h2.status).toBe(400);
    await alive(secure, true);
  });

  it('bad query values and bad percent-encoding are 400, not 500', async () => {
    const gw = await startGateway({});
    for (const q of ['limit=abc', 'limit=1.5', 'limit=-1', 'since=x', 'pattern=%E0%A4%A']) {
      const r = await fetch(`${gw.base}/events?${q}`);
      expect([q, r.status]).toEqual([q, 400]);
    }
    const dl = await fetch(`${gw.base}/dead-letters/%E0%A4%A`);
    expect(dl.status).toBe(400);
    await alive(gw);
  });
});

describe('dead letters need the admin permission and show only what the principal may subscribe to', () => {
  it('refuses principals without admin; a restricted admin sees and acts only on its subjects', async () => {
    const gw = await startGateway({ secret: SECRET });
    const all = await token({ qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] }, admin: true } });
    const bearer = (t: string, extra: Record<string, string> = {}) => ({
      authorization: `Bearer ${t}`,
      ...extra,
    });
    for (const type of ['dl.a.one', 'dl.b.two']) {
      const r = await fetch(`${gw.base}/events`, {
        method: 'POST',
        headers: bearer(all, json),
        body: JSON.stringify({ type, agentId: 'sec', data: { secret: type } }),
      });
      expect(r.status).toBe(202);
    }
    const listAs = async (t: string) => {
      const r = await fetch(`${gw.base}/dead-letters`, { headers: bearer(t) });
      return {
        status: r.status,
        body: (await r.json()) as { count: number; deadLetters: { id: string; event: { type: string } }[] },
      };
    };
    await waitFor(async () => (await listAs(all)).body.count === 2, 'two dead letters');
    const ids = Object.fromEntries((await listAs(all)).body.deadLetters.map((d) => [d.event.type, d.id]));

    expect((await fetch(`${gw.base}/dead-letters`)).status).toBe(401);
    const noRights = await token({});
    const userAll = await token({ qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } });
    for (const t of [noRights, userAll]) {
      expect((await listAs(t)).status).toBe(403);
      const redrive = await fetch(`${gw.base}/dead-letters/redrive`, {
        method: 'POST',
        headers: bearer(t, json),
        body: JSON.stringify({ all: true }),
      });
      expect(redrive.status).toBe(403);
      expect(
        (await fetch(`${gw.base}/dead-letters?all=true`, { method: 'DELETE', headers: bearer(t) })).status,
      ).toBe(403);
      expect((await fetch(`${gw.base}/dead-letters/${ids['dl.b.two']}`, { headers: bearer(t) })).status).toBe(
        403,
      );
    }

    const adminA = await token({ qe: { sub: { allow: ['dl.a.**'] }, admin: true } });
    const seen = await listAs(adminA);
    expect(seen.status).toBe(200);
    expect(seen.body.deadLetters.map((d) => d.event.type)).toEqual(['dl.a.one']);
    expect(seen.body.count).toBe(1);
    expect(
      (await fetch(`${gw.base}/dead-letters/${ids['dl.b.two']}`, { headers: bearer(adminA) })).status,
    ).toBe(404);
    const del = (q: string, t = adminA) =>
      fetch(`${gw.base}/dead-letters?${q}`, { method: 'DELETE', headers: bearer(t) });
    expect((await del('pattern=dl.b.*')).status).toBe(403);
    expect((await del('all=true')).status).toBe(403);
    expect((await del(`ids=${ids['dl.b.two']}`)).status).toBe(404);
    const redriveB = await fetch(`${gw.base}/dead-letters/redrive`, {
      method: 'POST',
      headers: bearer(adminA, json),
      body: JSON.stringify({ ids: [ids['dl.b.two']] }),
    });
    expect(redriveB.status).toBe(404);
    const mine = await del(`ids=${ids['dl.a.one']}`);
    expect(await mine.json()).toEqual({ purged: 1 });
    const left = await listAs(all);
    expect(left.body.deadLetters.map((d) => d.event.type)).toEqual(['dl.b.two']);
  });
});

describe('slowloris: the header limit holds on every listener', () => {
  const dripUntilClosed = (socket: net.Socket | tls.TLSSocket, first: string, drip: () => string) =>
    new Promise<number>((resolve) => {
      const started = Date.now();
      socket.on('error', () => {});
      let timer: NodeJS.Timeout | undefined;
      const go = () => {
        socket.write(first);
        timer = setInterval(() => socket.write(drip()), 150);
      };
      if (socket instanceof tls.TLSSocket) socket.once('secureConnect', go);
      else socket.once('connect', go);
      socket.on('close', () => {
        clearInterval(timer);
        resolve(Date.now() - started);
      });
    });
  const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

  it('TLS (HTTP/1.1 and HTTP/2) and h2c connections that never complete a request are closed', async () => {
    const secure = await startGateway({ ...tlsConfig(), headersTimeoutMs: 1000 });
    const h2cGw = await startGateway({ h2c: true, headersTimeoutMs: 1000 });
    let i = 0;
    const closed = await Promise.all([
      dripUntilClosed(
        tls.connect({
          port: secure.port,
          host: '127.0.0.1',
          rejectUnauthorized: false,
          ALPNProtocols: ['http/1.1'],
        }),
        'GET /health HTTP/1.1\r\nHost: x\r\n',
        () => `X-Slow-${i++}: 1\r\n`,
      ),
      dripUntilClosed(
        tls.connect({
          port: secure.port,
          host: '127.0.0.1',
          rejectUnauthorized: false,
          ALPNProtocols: ['h2'],
        }),
        PREFACE.slice(0, 1),
        () => PREFACE[1 + (i++ % (PREFACE.length - 1))]!,
      ),
      dripUntilClosed(
        net.connect(h2cGw.h2cPort!, '127.0.0.1'),
        PREFACE.slice(0, 1),
        () => PREFACE[1 + (i++ % (PREFACE.length - 1))]!,
      ),
    ]);
    // each was cut off by the 1 s limit (plus the sweep), not left open while it kept dripping
    for (const ms of closed) expect(ms).toBeLessThan(15_000);
    await alive(secure, true);
  }, 30_000);

  it('a body dripped over TLS is cut off by the request deadline (408)', async () => {
    const secure = await startGateway({ ...tlsConfig(), headersTimeoutMs: 5000, requestTimeoutMs: 1000 });
    const sock = tls.connect({
      port: secure.port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    sock.on('error', () => {});
    await new Promise((r) => sock.once('secureConnect', r));
    sock.write(
      'POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{',
    );
    const drip = setInterval(() => sock.write(' '), 100);
    let got = '';
    sock.on('data', (c: Buffer) => (got += c.toString()));
    await new Promise((r) => sock.once('close', r));
    clearInterval(drip);
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
  }, 30_000);
});

describe('token expiry on long-lived streams', () => {
  it('an SSE stream ends when its token expires, over HTTP/1.1 and HTTP/2', async () => {
    const gw = await startGateway({ secret: SECRET, h2c: true });
    const exp = Math.floor(Date.now() / 1000) + 2;
    const t = await token({ qe: { sub: { allow: ['**'] } } }, exp);
    const res = await fetch(`${gw.base}/events/stream?pattern=x.*`, {
      headers: { authorization: `Bearer ${t}` },
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain('token expired');
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000 - 50);

    const session = http2Connect(`http://127.0.0.1:${gw.h2cPort}`);
    cleanups.push(() => session.close());
    const t2 = await token({ qe: { sub: { allow: ['**'] } } }, Math.floor(Date.now() / 1000) + 2);
    const ended = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/events/stream?pattern=x.*', authorization: `Bearer ${t2}` });
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve(body));
      req.on('error', reject);
    });
    expect(ended).toContain('token expired');
  }, 30_000);
});

describe('replies and listeners', () => {
  it('JSON replies carry nosniff and no-store, errors included', async () => {
    const gw = await startGateway({});
    for (const path of ['/health', '/events?limit=1', '/nope']) {
      const r = await fetch(`${gw.base}${path}`);
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.headers.get('cache-control')).toBe('no-store');
    }
  });

  it('a port in use rejects createHttpGateway (and its h2c port too) instead of an unhandled error', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const taken = (blocker.address() as net.AddressInfo).port;
    const bus = new QEEventBus({ nodeId: 'bind-test' });
    await expect(createHttpGateway({ bus, port: taken })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await expect(createHttpGateway({ bus, port: 0, h2cPort: taken })).rejects.toMatchObject({
      code: 'EADDRINUSE',
    });
    await expect(createHttpGateway({ bus, port: 0, maxBodyByts: 5 } as never)).rejects.toMatchObject({
      code: 'CONFIG',
    });
  });
});

describe('rate limits across instances', () => {
  it('two gateway processes on one Redis share one budget per principal', async () => {
    const prefix = uniquePrefix('http-rl');
    const rateLimit = { windowMs: 600_000, maxRequests: 4, redisUrl: REDIS_URL, prefix };
    const [a, b] = await Promise.all([startGateway({ rateLimit }), startGateway({ rateLimit })]);
    cleanups.push(() => deletePrefix(prefix, REDIS_URL));
    const statuses: number[] = [];
    for (const gw of [a, b, a, b, a, b]) statuses.push((await fetch(`${gw.base}/events?limit=1`)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  });
});
