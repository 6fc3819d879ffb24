import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { createHttpGateway } from '@qe/gateway-http';
import { createWebSocketGateway } from '@qe/gateway-ws';
import { waitFor } from '@qe/transport-conformance';
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
