import { until, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runBroker, type SpawnedBroker, startBroker } from './spawn-broker.js';

const running: SpawnedBroker[] = [];
afterEach(async () => {
  for (const b of running.splice(0)) {
    if (b.child.exitCode === null && b.child.signalCode === null) {
      b.child.kill('SIGKILL');
      await b.exited;
    }
  }
});

async function start(env: Record<string, string> = {}, args: string[] = []): Promise<SpawnedBroker> {
  const b = await startBroker(env, args);
  running.push(b);
  return b;
}

describe('broker process (memory transport, no configuration)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('serves the dashboard, health, metrics and dead letters over real HTTP, then exits 0 on SIGTERM', async () => {
    const b = await start({ SERVICE_NAME: 'broker-under-test', METRICS_COLLECTION_INTERVAL: '200' });

    const page = await fetch(`${b.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const html = await page.text();
    expect(html).toContain('<title>broker-under-test');
    expect(html).toContain('/api/dashboard');
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href="http/); // self-contained: no external assets

    const health = await fetch(`${b.url}/health`);
    expect(health.status).toBe(200);
    const h = (await health.json()) as { status: string; connected: boolean; service: string };
    expect(h).toMatchObject({ status: 'healthy', connected: true, service: 'broker-under-test' });

    const metrics = await fetch(`${b.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await metrics.text();
    expect(text).toMatch(/^# TYPE qe_eventbus_events_published_total counter$/m);
    expect(text).toMatch(/^qe_eventbus_connections 1$/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m); // prom-client's process metrics

    // the dashboard history gets a sample every METRICS_COLLECTION_INTERVAL (200 ms)
    const dash = await until(
      async () =>
        (await (await fetch(`${b.url}/api/dashboard`)).json()) as {
          service: string;
          transport: string;
          history: unknown[];
          byPriority: Record<string, number>;
        },
      (d) => d.history.length > 0,
      'a sample in the dashboard history',
    );
    expect(dash.service).toBe('broker-under-test');
    expect(dash.transport).toBe('memory');
    expect(dash.history.length).toBeGreaterThan(0);
    expect(Object.keys(dash.byPriority)).toEqual(['critical', 'high', 'normal', 'low', 'bulk']);

    const dl = await fetch(`${b.url}/dead-letters`);
    expect(dl.status).toBe(200);
    expect(dl.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await dl.json()).toEqual({ count: 0, deadLetters: [] });
    const missing = await fetch(`${b.url}/dead-letters/nope`);
    expect(missing.status).toBe(404);
    const json = { 'content-type': 'application/json' };
    const bad = await fetch(`${b.url}/dead-letters/redrive`, {
      method: 'POST',
      headers: json,
      body: '{"ids": 7}',
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('VALIDATION');
    const notJson = await fetch(`${b.url}/dead-letters/redrive`, {
      method: 'POST',
      headers: json,
      body: '{oops',
    });
    expect(notJson.status).toBe(400);
    const vague = await fetch(`${b.url}/dead-letters`, { method: 'DELETE' });
    expect(vague.status).toBe(400); // purging everything must be asked for explicitly
    const purge = await fetch(`${b.url}/dead-letters?all=true`, { method: 'DELETE' });
    expect(await purge.json()).toEqual({ purged: 0 });
    expect((await fetch(`${b.url}/nowhere`)).status).toBe(404);

    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
    const msgs = b.logs.map((l) => l.msg);
    expect(msgs).toContain('shutting down');
    expect(b.logs.find((l) => l.msg === 'shutdown complete')?.result).toBe('clean');
    for (const l of b.logs) expect(typeof l.time).toBe('string');
  });

  it('serves the WebSocket gateway on the same port: a client publishes and subscribes; SIGTERM closes it with 1001', async () => {
    const b = await start({ METRICS_COLLECTION_INTERVAL: '200' });
    const ws = new WebSocket(`${b.url.replace('http:', 'ws:')}/events`);
    const inbox: { op: string; id?: number; event?: { type: string; data: unknown } }[] = [];
    ws.onmessage = (m) => inbox.push(JSON.parse(String(m.data)));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    ws.send(JSON.stringify({ op: 'subscribe', id: 1, patterns: ['task.*'] }));
    await waitFor(() => inbox.some((m) => m.op === 'ack' && m.id === 1), 'the subscribe ack');
    ws.send(
      JSON.stringify({
        op: 'publish',
        id: 2,
        events: Array.from({ length: 25 }, (_, i) => ({
          type: 'task.create',
          agentId: 'ws-client',
          data: { i },
        })),
      }),
    );
    await waitFor(() => inbox.filter((m) => m.op === 'event').length === 25, '25 events');
    ws.send('{not json');
    await waitFor(() => inbox.some((m) => m.op === 'error'), 'the error reply');
    const dash = (await (await fetch(`${b.url}/api/dashboard`)).json()) as {
      connections: Record<string, number>;
      byFamily: Record<string, number>;
    };
    expect(dash.connections.websocket).toBe(1);
    expect(dash.byFamily.task).toBe(25);
    const closed = new Promise<number>((r) => (ws.onclose = (e) => r(e.code)));
    b.child.kill('SIGTERM');
    expect(await closed).toBe(1001);
    expect(await b.exited).toBe(0);
  });

  it('serves the HTTP gateway on its own port: events POSTed there reach the bus the dashboard watches', async () => {
    const b = await start({ METRICS_COLLECTION_INTERVAL: '200' });
    const gw = b.logs.find((l) => l.msg === 'broker listening')?.httpGateway as string;
    expect(gw).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(new URL(gw).port).not.toBe(new URL(b.url).port);
    const res = await fetch(`${gw}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(
        Array.from({ length: 12 }, (_, i) => ({
          type: 'consensus.vote',
          agentId: 'http-client',
          data: { i },
        })),
      ),
    });
    expect(res.status).toBe(202);
    const bad = await fetch(`${gw}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'Not A Type!', agentId: 'x', data: null }),
    });
    expect(bad.status).toBe(400);
    const families = await until(
      async () =>
        ((await (await fetch(`${b.url}/api/dashboard`)).json()) as { byFamily: Record<string, number> })
          .byFamily,
      (f) => f.consensus === 12,
      'twelve consensus events on the dashboard',
    );
    expect(families.consensus).toBe(12);
    const gwMetrics = await (await fetch(`${gw}/metrics`)).text();
    expect(gwMetrics).toMatch(
      /^qe_eventbus_events_published_total\{family="consensus",priority="normal"\} 12$/m,
    );
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
  });

  it('exits 0 on SIGINT too', async () => {
    const b = await start();
    b.child.kill('SIGINT');
    expect(await b.exited).toBe(0);
    expect(b.logs.find((l) => l.msg === 'shutting down')?.reason).toBe('SIGINT');
  });

  it('reads a --config file; the environment overrides it', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'qe-broker-'));
    const file = join(dir, 'broker.json');
    writeFileSync(
      file,
      JSON.stringify({ serviceName: 'from-file', logLevel: 'debug', metricsCollectionInterval: 250 }),
    );
    const b = await start({ SERVICE_NAME: 'from-env' }, ['--config', file]);
    const cfg = (await (await fetch(`${b.url}/api/config`)).json()) as Record<string, unknown>;
    expect(cfg.serviceName).toBe('from-env');
    expect(cfg.logLevel).toBe('debug');
    expect(cfg.metricsIntervalMs).toBe(250);
  });

  it('exits 1 when it cannot listen (port taken)', async () => {
    const a = await start();
    const port = new URL(a.url).port;
    const r = await runBroker({ PORT: port });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/"msg":"cannot start"/);
    expect(r.stderr).toMatch(/EADDRINUSE/);
  });
});

describe('broker process: invalid configuration exits 2 naming the setting and the accepted values', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  const cases: [string, Record<string, string>, string[], RegExp][] = [
    ['PORT out of range', { PORT: '99999' }, [], /PORT="99999": must be an integer from 0 to 65535/],
    [
      'REDIS_PORT not a number',
      { REDIS_PORT: 'abc' },
      [],
      /REDIS_PORT="abc": must be an integer from 1 to 65535/,
    ],
    [
      'REDIS_DB out of range',
      { REDIS_HOST: 'localhost', REDIS_DB: '42' },
      [],
      /REDIS_DB="42": must be an integer from 0 to 15/,
    ],
    [
      'MONITORING_ENABLED not a boolean',
      { MONITORING_ENABLED: 'maybe' },
      [],
      /MONITORING_ENABLED="maybe": must be true or false/,
    ],
    [
      'EVENTBUS_BATCH_SIZE zero',
      { EVENTBUS_BATCH_SIZE: '0' },
      [],
      /EVENTBUS_BATCH_SIZE="0": must be an integer from 1 to 10000/,
    ],
    [
      'REDIS_URL with a bad scheme',
      { REDIS_URL: 'http://x' },
      [],
      /REDIS_URL="http:\/\/x": must be a URL like redis:\/\//,
    ],
    [
      'REDIS_CLUSTER_NODES without ports',
      { REDIS_CLUSTER_NODES: 'a,b:7000' },
      [],
      /REDIS_CLUSTER_NODES: bad node "a" \(accepted: a comma-separated list of host:port/,
    ],
    [
      'LOG_LEVEL unknown',
      { LOG_LEVEL: 'loud' },
      [],
      /LOG_LEVEL="loud": must be one of debug, info, warn, error/,
    ],
    [
      'config file missing',
      {},
      ['--config', '/nonexistent/broker.json'],
      /--config \/nonexistent\/broker.json: cannot read the file/,
    ],
    [
      'unknown argument',
      {},
      ['--port', '3000'],
      /--port: unknown argument \(accepted: --config <file.json>\)/,
    ],
  ];
  it.each(cases)('%s', async (_name, env, args, message) => {
    const r = await runBroker(env, args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/"msg":"invalid configuration"/);
  });

  it('reports every bad setting at once', async () => {
    const r = await runBroker({ PORT: '-1', HEALTH_CHECK_INTERVAL: 'soon', SERVICE_NAME: 'has spaces' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PORT="-1"/);
    expect(r.stderr).toMatch(/HEALTH_CHECK_INTERVAL="soon": must be an integer from 100 to 3600000 \(ms\)/);
    expect(r.stderr).toMatch(/SERVICE_NAME="has spaces": must be 1-64 characters/);
  });
});
