/**
 * Spec 000's configuration examples and spec 003's usage, written as a user
 * arriving with the specs would write them, against the real redis-server on
 * 6379 (each test under its own key prefix, deleted afterwards).
 */
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type AgentEvent, createEvent, EventPriority } from '@qe/core';
import { deletePrefix, REDIS_URL, uniquePrefix, waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type ComposedEventBus, createEventBus } from '../src/index.js';

const SECRET = 'bus-spec-000-secret-0123456789abcdefghij';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function prefix(): string {
  const p = uniquePrefix('bus');
  cleanups.push(() => deletePrefix(p, REDIS_URL));
  return p;
}

async function started(bus: ComposedEventBus): Promise<ComposedEventBus> {
  await bus.start();
  cleanups.push(() => bus.stop());
  return bus;
}

const logger = { debug() {}, info() {}, warn() {}, error() {} };
const url = new URL(REDIS_URL);

describe('createEventBus: spec 000 configuration', () => {
  it('nodeId + redis (spec 000 RedisConfig): Redis Streams, publish and subscribe as the specs write them', async () => {
    const config = {
      nodeId: 'node-1',
      redis: {
        host: url.hostname,
        port: Number(url.port || 6379),
        db: 0,
        keyPrefix: prefix(),
        ttl: 3600,
        serialization: 'msgpack' as const,
      },
    };
    const eventBus = await started(await createEventBus(config, { logger }));
    expect(eventBus.transport.name).toBe('redis-streams');
    const seen: AgentEvent[] = [];
    const unsubscribe = eventBus.subscribe(
      'task.*',
      async (event) => {
        seen.push(event);
      },
      { priority: EventPriority.HIGH, timeout: 30_000, retryAttempts: 3, maxConcurrency: 10 },
    );
    await unsubscribe.ready;
    await eventBus.publish(
      createEvent('task.create').agentId('agent-001').swarmId('swarm-123').data({ taskId: 't-1' }).build(),
    );
    await eventBus.publish('task.update', { taskId: 't-1' }); // spec 003's shape
    await waitFor(() => seen.length === 2, 'both events over Redis');
    expect(seen.map((e) => [e.type, e.agentId])).toEqual([
      ['task.create', 'agent-001'],
      ['task.update', 'node-1'],
    ]);
    expect(eventBus.getMetrics().eventsProcessed).toBeGreaterThanOrEqual(2);
    expect(eventBus.isConnected()).toBe(true);
  });

  it('loadBalancer (hash_based) over Redis: a group shares events across two nodes, each agent on one member', async () => {
    const keyPrefix = prefix();
    const make = (nodeId: string) =>
      createEventBus(
        {
          nodeId,
          redis: { host: url.hostname, port: Number(url.port || 6379), keyPrefix },
          loadBalancer: { strategy: 'hash_based' },
        },
        { logger },
      );
    const [a, b] = [await started(await make('lb-a')), await started(await make('lb-b'))];
    expect(a.transport.name).toMatch(/routed/);
    const got: Record<string, string[]> = { 'lb-a': [], 'lb-b': [] };
    for (const [bus, name] of [
      [a, 'lb-a'],
      [b, 'lb-b'],
    ] as const) {
      const u = bus.subscribe('job.*', { group: 'workers' }, async (e) => {
        got[name]!.push(e.agentId);
      });
      await u.ready;
    }
    await a.publish('job.run', {}, { agentId: 'warm-up' });
    await waitFor(() => got['lb-a']!.length + got['lb-b']!.length === 1, 'the warm-up event');
    for (let i = 0; i < 40; i++) await a.publish('job.run', { i }, { agentId: `agent-${i % 8}` });
    await waitFor(() => got['lb-a']!.length + got['lb-b']!.length === 41, '41 events, each once');
    // the first publish may still see the membership before lb-b joined (hash_based holds while it is stable)
    got['lb-a']!.splice(got['lb-a']!.indexOf('warm-up'), got['lb-a']!.includes('warm-up') ? 1 : 0);
    got['lb-b']!.splice(got['lb-b']!.indexOf('warm-up'), got['lb-b']!.includes('warm-up') ? 1 : 0);
    expect(got['lb-a']!.length).toBeGreaterThan(0);
    expect(got['lb-b']!.length).toBeGreaterThan(0);
    for (const agent of new Set([...got['lb-a']!, ...got['lb-b']!]))
      expect(got['lb-a']!.includes(agent) && got['lb-b']!.includes(agent)).toBe(false);
  });

  it('loadBalancer in memory (no redis): weighted with spec 000’s Map of weights', async () => {
    const bus = await started(
      await createEventBus(
        { nodeId: 'mem', loadBalancer: { strategy: 'weighted', weights: new Map([['mem', 3]]) } },
        { logger },
      ),
    );
    expect(bus.transport.name).toBe('memory');
    let n = 0;
    bus.subscribe('x.y', { group: 'g' }, () => {
      n++;
    });
    await bus.publish('x.y', {});
    await waitFor(() => n === 1, 'the event');
  });

  it('circuitBreaker, rateLimiting and metrics compose as middleware', async () => {
    const bus = await started(
      await createEventBus(
        {
          nodeId: 'guarded',
          circuitBreaker: {
            enabled: true,
            failureThreshold: 10,
            recoveryTimeout: 60_000,
            monitoringPeriod: 30_000,
          },
          rateLimiting: { enabled: true, windowMs: 60_000, maxEvents: 5, skipSuccessfulRequests: false },
          metrics: { enabled: true },
        },
        { logger },
      ),
    );
    for (let i = 0; i < 5; i++) await bus.publish('limited.event', { i }, { agentId: 'one-agent' });
    await expect(bus.publish('limited.event', {}, { agentId: 'one-agent' })).rejects.toMatchObject({
      code: 'RATE_LIMITED',
    });
    const text = await bus.metricsRegistry!.metrics();
    expect(text).toMatch(/qe_events_published_total\{[^}]*\} 5/);
  });

  it('protocols (websocket + http) with authentication: the gateways start and stop with the bus', async () => {
    const bus = await started(
      await createEventBus(
        {
          nodeId: 'gw',
          protocols: {
            websocket: { enabled: true, port: 0, path: '/events', compression: true, maxConnections: 1000 },
            http: { enabled: true, port: 0, rateLimit: 1000, compression: true },
          },
          authentication: { enabled: true, type: 'jwt', secret: SECRET, algorithm: 'HS256' },
        },
        { logger },
      ),
    );
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const body = `${enc({ alg: 'HS256' })}.${enc({ sub: 'c', exp: Math.floor(Date.now() / 1000) + 300, qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } })}`;
    const token = `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
    const httpPort = bus.gateways.http!.port;
    expect((await fetch(`http://127.0.0.1:${httpPort}/events?limit=1`)).status).toBe(401);
    const post = await fetch(`http://127.0.0.1:${httpPort}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ type: 'rest.event', agentId: 'rest', data: {} }),
    });
    expect(post.status).toBe(202);
    const ws = new WebSocket(`ws://127.0.0.1:${bus.gateways.websocket!.port}/events`, {
      headers: { authorization: `Bearer ${token}` },
    });
    cleanups.push(() => ws.terminate());
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    const pong = new Promise<string>((r) => ws.once('message', (d) => r(String(d))));
    ws.send(JSON.stringify({ op: 'ping', id: 1 }));
    expect(JSON.parse(await pong)).toMatchObject({ op: 'pong', id: 1 });
    await bus.stop();
    expect(bus.gateways.http).toBeUndefined();
    await expect(fetch(`http://127.0.0.1:${httpPort}/health`)).rejects.toThrow();
  });
});

describe('createEventBus: validation (spec 000) through @qe/contracts', () => {
  it('strict validation with a schema directory refuses an invalid event before anything is sent, on Redis', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qe-bus-schemas-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(
      join(dir, 'user.created.json'),
      JSON.stringify({
        type: 'user.created',
        version: '1.0.0',
        owner: 'user-service',
        compatibility: 'backward',
        schema: {
          type: 'object',
          required: ['userId', 'email'],
          properties: { userId: { type: 'string' }, email: { type: 'string', format: 'email' } },
        },
      }),
    );
    const bus = await started(
      await createEventBus(
        {
          nodeId: 'validated',
          redis: { host: url.hostname, port: Number(url.port || 6379), keyPrefix: prefix() },
          validation: { enabled: true, strict: true, schemaPath: dir },
        },
        { logger },
      ),
    );
    const seen: AgentEvent[] = [];
    const u = bus.subscribe('user.*', (e) => {
      seen.push(e);
    });
    await u.ready;
    await bus.publish('user.created', { userId: 'user-1', email: 'a@example.com' });
    const bad = await bus
      .publish('user.created', { userId: 7, email: 'not an email' })
      .catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 'VALIDATION' });
    expect((bad as Error).message).toMatch(/userId|email/);
    await waitFor(() => seen.length === 1, 'the valid event');
    expect(bus.contracts).toBeDefined();
    expect((await bus.getRecentEvents({ pattern: 'user.*' })).length).toBe(1); // nothing of the invalid one was sent
  });
});

describe('createEventBus: nothing silently ignored', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown top-level key', { nodeId: 'n', persistence: true }, /^persistence: unknown setting/],
    ['no nodeId', {}, /^nodeId: is required/],
    ['an unknown redis key', { nodeId: 'n', redis: { hots: 'x' } }, /^redis\.hots: unknown setting/],
    [
      'spec 000’s healthCheckInterval',
      { nodeId: 'n', loadBalancer: { strategy: 'least_connections', healthCheckInterval: 30000 } },
      /^loadBalancer\.healthCheckInterval: not used: members are tracked by heartbeats/,
    ],
    [
      'spec 000’s cors: true',
      { nodeId: 'n', protocols: { http: { enabled: true, port: 0, cors: true } } },
      /^protocols\.http\.cors: name the allowed origins/,
    ],
    [
      'skipSuccessfulRequests: true',
      { nodeId: 'n', rateLimiting: { windowMs: 1000, maxEvents: 1, skipSuccessfulRequests: true } },
      /^rateLimiting\.skipSuccessfulRequests: not supported/,
    ],
    [
      'spec 003’s connectionPoolSize',
      { nodeId: 'n', redis: { host: 'h' }, performance: { batchSize: 100, connectionPoolSize: 20 } },
      /^performance\.connectionPoolSize: not used/,
    ],
    [
      'performance without redis',
      { nodeId: 'n', performance: { batchSize: 100 } },
      /^performance: tunes the Redis reads/,
    ],
    ['a bad log level', { nodeId: 'n', logging: { level: 'loud' } }, /^logging\.level: must be one of/],
    ['a gRPC protocol', { nodeId: 'n', protocols: { grpc: {} } }, /^protocols\.grpc: no gRPC gateway yet/],
    [
      'a non-JWT authentication',
      { nodeId: 'n', authentication: { type: 'basic', secret: 'x' } },
      /^authentication\.type/,
    ],
  ];
  for (const [name, config, message] of cases)
    it(`refuses ${name} with CONFIG naming the key`, async () => {
      const err = await createEventBus(config as never, { logger }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'CONFIG' });
      expect((err as Error).message).toMatch(message);
    });

  it('a plugin package that is not installed is a CONFIG error naming the package to install', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'qe-bus-noplugins-'));
    cleanups.push(() => rmSync(empty, { recursive: true, force: true }));
    // resolves packages from an empty folder: the real module-not-found error of Node
    const load = (name: string) => import(pathToFileURL(join(empty, 'node_modules', name, 'index.js')).href);
    const err = await createEventBus({ nodeId: 'n', redis: { host: '127.0.0.1' } }, { logger, load }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'CONFIG' });
    expect((err as Error).message).toMatch(
      /redis: needs the package @qe\/redis-transport, which is not installed: pnpm add @qe\/redis-transport/,
    );
    const v = await createEventBus(
      { nodeId: 'n', validation: { enabled: true, strict: true, schemaPath: './schemas' } },
      { logger, load },
    ).catch((e: unknown) => e);
    expect((v as Error).message).toMatch(/validation: needs the package @qe\/contracts/);
  });
});
