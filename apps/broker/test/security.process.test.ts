/**
 * The broker as an outsider meets it (a real process, real sockets): safe
 * defaults, dead letters behind the admin permission, security headers, bind
 * failures as one-line errors with a non-zero exit, and rate-limit settings.
 */
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runBroker, type SpawnedBroker, startBroker } from './spawn-broker.js';

const SECRET = 'broker-security-secret-0123456789abcdefgh';
const running: SpawnedBroker[] = [];
afterEach(async () => {
  for (const b of running.splice(0)) {
    if (b.child.exitCode === null && b.child.signalCode === null) {
      b.child.kill('SIGKILL');
      await b.exited;
    }
  }
});
async function start(env: Record<string, string> = {}): Promise<SpawnedBroker> {
  const b = await startBroker(env);
  running.push(b);
  return b;
}

/** An HS256 JWT (node:crypto only, so the test does not share the code under test). */
function jwt(claims: Record<string, unknown>, ttlSec = 300): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ ...claims, exp: Math.floor(Date.now() / 1000) + ttlSec })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

async function takenPort(): Promise<{ port: number; close(): Promise<void> }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as net.AddressInfo).port, close: () => new Promise((r) => s.close(() => r())) };
}

describe('broker: safe to expose', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('listens on 127.0.0.1 by default; a non-loopback HOST without auth is refused unless explicitly allowed, then warned', async () => {
    const def = await startBroker({ HOST: '' }); // HOST unset: the default applies
    running.push(def);
    expect(new URL(def.url).hostname).toBe('127.0.0.1');
    const refused = await runBroker({ HOST: '0.0.0.0' });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/HOST=0\.0\.0\.0: listening beyond this machine without authentication/);
    const open = await start({ HOST: '0.0.0.0', ALLOW_INSECURE_REMOTE: 'true' });
    expect(
      open.logs.find((l) => l.level === 'warn' && /WITHOUT authentication/.test(String(l.msg))),
    ).toBeDefined();
    const withAuth = await start({ HOST: '0.0.0.0', JWT_SECRET: SECRET });
    expect(withAuth.logs.find((l) => /WITHOUT authentication/.test(String(l.msg)))).toBeUndefined();
  });

  it('dead letters on the broker port: 401 without a token, 403 without admin, 200 for an admin; one API with the gateway', async () => {
    const b = await start({ JWT_SECRET: SECRET });
    expect((await fetch(`${b.url}/dead-letters`)).status).toBe(401);
    const user = jwt({ sub: 'u', qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } });
    const admin = jwt({ sub: 'ops', qe: { sub: { allow: ['**'] }, admin: true } });
    const h = (t: string) => ({ authorization: `Bearer ${t}` });
    expect((await fetch(`${b.url}/dead-letters`, { headers: h(user) })).status).toBe(403);
    expect(
      (await fetch(`${b.url}/dead-letters?all=true`, { method: 'DELETE', headers: h(user) })).status,
    ).toBe(403);
    const redrive = await fetch(`${b.url}/dead-letters/redrive`, {
      method: 'POST',
      headers: { ...h(user), 'content-type': 'application/json' },
      body: '{"all":true}',
    });
    expect(redrive.status).toBe(403);
    const ok = await fetch(`${b.url}/dead-letters`, { headers: h(admin) });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ count: 0, deadLetters: [] });
    // the gateway's own port serves the same API with the same rules
    const gw = b.logs.find((l) => l.msg === 'broker listening')!.httpGateway as string;
    expect((await fetch(`${gw}/dead-letters`, { headers: h(user) })).status).toBe(403);
    expect(await (await fetch(`${gw}/dead-letters`, { headers: h(admin) })).json()).toEqual({
      count: 0,
      deadLetters: [],
    });
  });

  it('security headers: JSON is nosniff and no-store; the dashboard cannot be framed', async () => {
    const b = await start();
    const page = await fetch(`${b.url}/`);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    for (const path of ['/health', '/api/dashboard', '/api/config', '/nowhere']) {
      const r = await fetch(`${b.url}${path}`);
      expect([path, r.headers.get('x-content-type-options'), r.headers.get('cache-control')]).toEqual([
        path,
        'nosniff',
        'no-store',
      ]);
    }
    const raw = await new Promise<string>((resolve) => {
      const s = net.connect(Number(new URL(b.url).port), '127.0.0.1');
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
      s.write('GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expect(b.child.exitCode).toBeNull();
  });

  it('a taken HTTP gateway port (or h2c port) is a one-line error and exit 1', async () => {
    const taken = await takenPort();
    try {
      const envs: Record<string, string>[] = [
        { HTTP_GATEWAY_PORT: String(taken.port) },
        { HTTP_GATEWAY_H2C_PORT: String(taken.port) },
      ];
      for (const env of envs) {
        const r = await runBroker(env);
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(
          /qe-broker: cannot start: HTTP gateway: cannot listen on 127\.0\.0\.1:.*EADDRINUSE/,
        );
        expect(r.stderr).not.toMatch(/\n\s+at /); // no stack
      }
    } finally {
      await taken.close();
    }
  });

  it('rate limits are broker settings: RATE_LIMIT_MAX_REQUESTS per principal on the HTTP gateway', async () => {
    const b = await start({ RATE_LIMIT_WINDOW: '600000', RATE_LIMIT_MAX_REQUESTS: '2' });
    const gw = b.logs.find((l) => l.msg === 'broker listening')!.httpGateway as string;
    const s = [];
    for (let i = 0; i < 3; i++) s.push((await fetch(`${gw}/events?limit=1`)).status);
    expect(s).toEqual([200, 200, 429]);
    const bad = await runBroker({ RATE_LIMIT_MAX_REQUESTS: '-1' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/RATE_LIMIT_MAX_REQUESTS="-1": must be an integer from 0/);
  });
});
