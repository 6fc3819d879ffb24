import {
  type AgentEvent,
  ConfigError,
  EventBusError,
  MemoryBroker,
  MemoryTransport,
  QEEventBus,
} from '@qe/core';
import { waitFor } from '@qe/test-utils';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  InvalidServiceError,
  InvalidVersionError,
  NoHealthyInstanceError,
  type ServiceChange,
  ServiceRegistry,
  UnknownInstanceError,
} from './index.js';
import { registerServiceRegistryMetrics } from './prometheus.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function makeRegistry(nodeId: string, broker: MemoryBroker, opts: Record<string, unknown> = {}) {
  const bus = new QEEventBus({ nodeId, transport: new MemoryTransport({ broker }), retryDelay: 10 });
  await bus.start();
  const reg = new ServiceRegistry({ bus, heartbeatIntervalMs: 100, failureTimeoutMs: 400, ...opts });
  await reg.start();
  cleanups.push(() => bus.stop());
  cleanups.push(() => reg.stop());
  return reg;
}

const orderSchema = { type: 'object', required: ['orderId'], properties: { orderId: { type: 'string' } } };

describe('service registry (memory transport, several registries in one process)', () => {
  it('registers, discovers by name, semver range and capability, and declares contracts', async () => {
    const broker = new MemoryBroker();
    const a = await makeRegistry('a', broker);
    const b = await makeRegistry('b', broker);
    await a.register({
      name: 'billing',
      version: '1.4.2',
      instanceId: 'billing-1',
      endpoints: [{ protocol: 'http', url: 'http://127.0.0.1:8081' }],
      capabilities: ['invoice', 'refund'],
      publishes: ['billing.invoice.created'],
      consumes: ['order.*'],
      contracts: [
        { eventType: 'billing.invoice.created', schema: { type: 'object' } },
        { eventType: 'order.created', schema: orderSchema, version: '1.0.0' },
      ],
    });
    await a.register({
      name: 'billing',
      version: '2.0.0',
      instanceId: 'billing-2',
      capabilities: ['invoice'],
    });
    await a.register({ name: 'search', version: '0.3.0', instanceId: 'search-1' });
    await waitFor(() => b.find().length === 3, 'b to see three instances');
    expect(b.find({ name: 'billing' }).map((i) => i.instanceId)).toEqual(['billing-2', 'billing-1']); // newest first
    expect(b.find({ name: 'billing', version: '^1.2.0' }).map((i) => i.instanceId)).toEqual(['billing-1']);
    expect(b.find({ name: 'billing', version: '>=2' }).map((i) => i.instanceId)).toEqual(['billing-2']);
    expect(b.find({ capability: 'refund' }).map((i) => i.instanceId)).toEqual(['billing-1']);
    expect(b.find({ capability: ['invoice', 'refund'] })).toHaveLength(1);
    expect(b.find({ consumes: 'order.created' }).map((i) => i.instanceId)).toEqual(['billing-1']);
    expect(b.find({ publishes: 'billing.invoice.created' })).toHaveLength(1);
    expect(b.get('billing-1')).toMatchObject({
      nodeId: 'a',
      endpoints: [{ protocol: 'http', url: 'http://127.0.0.1:8081' }],
    });
    expect(b.contracts('billing')).toEqual([
      {
        eventType: 'billing.invoice.created',
        schema: { type: 'object' },
        version: '1.4.2',
        direction: 'publishes',
        service: 'billing',
        serviceVersion: '1.4.2',
      },
      {
        eventType: 'order.created',
        schema: orderSchema,
        version: '1.0.0',
        direction: 'consumes',
        service: 'billing',
        serviceVersion: '1.4.2',
      },
    ]);
    expect(b.contracts('billing', '>=2')).toEqual([]);
    const s = b.stats();
    expect(s).toMatchObject({ services: 2, instances: 3, healthy: 3 });
    expect(s.byService.billing).toEqual({ instances: 2, healthy: 2, versions: ['2.0.0', '1.4.2'] });
    expect(JSON.parse(JSON.stringify(s))).toEqual(s);
  });

  it('a registry that starts late converges within one heartbeat interval', async () => {
    const broker = new MemoryBroker();
    const a = await makeRegistry('a', broker);
    for (let i = 0; i < 10; i++) await a.register({ name: 'svc', version: `1.0.${i}` });
    const late = await makeRegistry('late', broker);
    const t0 = Date.now();
    await waitFor(() => late.find({ name: 'svc' }).length === 10, 'late to see 10');
    expect(Date.now() - t0).toBeLessThanOrEqual(late.heartbeatIntervalMs + 150);
  });

  it('watch: come, health change, go (deregistered) and expiry of an instance whose process stopped heartbeating', async () => {
    const broker = new MemoryBroker();
    const watcher = await makeRegistry('w', broker);
    const changes: ServiceChange[] = [];
    watcher.watch({ name: 'api' }, (c) => changes.push(c));
    const events: string[] = [];
    watcher.bus.subscribe('service.**', (e: AgentEvent) => {
      if (e.type !== 'service.heartbeat') events.push(e.type);
    });
    const host = await makeRegistry('h', broker);
    const h1 = await host.register({ name: 'api', version: '1.0.0', instanceId: 'api-1' });
    await host.register({ name: 'other', version: '1.0.0' });
    await waitFor(() => changes.length === 1, 'up');
    await h1.setHealth('unhealthy');
    await waitFor(() => changes.length === 2, 'health');
    await h1.deregister();
    await waitFor(() => changes.length === 3, 'down');
    expect(changes.map((c) => c.kind)).toEqual(['up', 'health', 'down']);
    expect(changes[1]).toMatchObject({ previous: 'healthy', instance: { health: 'unhealthy' } });
    expect(changes[2]).toMatchObject({ reason: 'deregistered' });

    // a crash: the host's bus stops, no deregistration is published
    const crashBus = new QEEventBus({ nodeId: 'crash', transport: new MemoryTransport({ broker }) });
    await crashBus.start();
    const crashing = new ServiceRegistry({ bus: crashBus, heartbeatIntervalMs: 100, failureTimeoutMs: 400 });
    await crashing.start();
    cleanups.push(() => crashing.stop());
    await crashing.register({ name: 'api', version: '1.1.0', instanceId: 'api-2' });
    await waitFor(() => changes.length === 4, 'api-2 up');
    const killedAt = Date.now();
    await crashBus.stop();
    await waitFor(() => changes.length === 5, 'api-2 expired', 5000);
    expect(changes[4]).toMatchObject({ kind: 'down', reason: 'expired', instance: { instanceId: 'api-2' } });
    expect(Date.now() - killedAt).toBeLessThan(watcher.failureTimeoutMs + watcher.heartbeatIntervalMs + 500);
    expect(events).toEqual(
      expect.arrayContaining([
        'service.registered',
        'service.health.changed',
        'service.deregistered',
        'service.expired',
      ]),
    );
    expect(watcher.stats().expired).toBe(1);
  });

  it('routes each request to one serving instance, never to an unhealthy one', async () => {
    const broker = new MemoryBroker();
    const client = await makeRegistry('client', broker);
    const handled: Record<string, number> = {};
    const handles = [];
    for (const id of ['r1', 'r2', 'r3']) {
      const reg = await makeRegistry(`host-${id}`, broker);
      const h = await reg.register({ name: 'resize', version: '1.0.0', instanceId: id });
      await h.serve('run', () => {
        handled[id] = (handled[id] ?? 0) + 1;
      });
      handles.push(h);
    }
    await waitFor(() => client.find({ name: 'resize' }).length === 3, 'three instances');
    for (let i = 0; i < 30; i++) await client.send('resize', 'run', { i });
    await waitFor(() => Object.values(handled).reduce((a, b) => a + b, 0) === 30, '30 handled');
    expect(Object.keys(handled).sort()).toEqual(['r1', 'r2', 'r3']); // spread, each once
    await handles[0]!.setHealth('unhealthy');
    await handles[1]!.setHealth('degraded'); // degraded still serves
    for (const k of Object.keys(handled)) handled[k] = 0;
    for (let i = 0; i < 30; i++) await client.send('resize', 'run', { i });
    await waitFor(() => Object.values(handled).reduce((a, b) => a + b, 0) === 30, '30 more handled');
    expect(handled.r1).toBe(0);
    expect(handled.r2! + handled.r3!).toBe(30);
    await handles[1]!.setHealth('unhealthy');
    await handles[2]!.setHealth('unhealthy');
    await waitFor(
      () => client.find({ name: 'resize' }).length === 0,
      'no serving instance in the client view',
    );
    await expect(client.send('resize', 'run', {})).rejects.toBeInstanceOf(NoHealthyInstanceError);
    await expect(client.send('nothing', 'run', {})).rejects.toMatchObject({
      code: 'NOT_FOUND',
      details: { known: 0 },
    });
  });

  it('bad input gives typed errors; metrics register on prom-client', async () => {
    const broker = new MemoryBroker();
    const reg = await makeRegistry('r', broker);
    await expect(reg.register({ name: 'Bad Name', version: '1.0.0' })).rejects.toBeInstanceOf(
      InvalidServiceError,
    );
    await expect(reg.register({ name: 'x', version: 'one' })).rejects.toBeInstanceOf(InvalidVersionError);
    await expect(
      reg.register({ name: 'x', version: '1.0.0', publishes: ['Bad..type'] }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      details: { field: 'publishes[0]' },
    });
    await expect(reg.register({ name: 'x', version: '1.0.0', consumes: ['a.***'] })).rejects.toBeInstanceOf(
      InvalidServiceError,
    );
    await expect(
      reg.register({ name: 'x', version: '1.0.0', contracts: [{ eventType: 'a.b', schema: [] as never }] }),
    ).rejects.toMatchObject({ details: { field: 'contracts[0].schema' } });
    await expect(
      reg.register({ name: 'x', version: '1.0.0', colour: 'red' } as never),
    ).rejects.toBeInstanceOf(EventBusError);
    expect(() => reg.find({ version: 'not a range!' })).toThrow(InvalidVersionError);
    expect(() => reg.find({ health: 'sick' as never })).toThrow(InvalidServiceError);
    await expect(reg.setHealth('nope', 'healthy')).rejects.toBeInstanceOf(UnknownInstanceError);
    const h = await reg.register({ name: 'x', version: '1.0.0', instanceId: 'x-1' });
    await expect(reg.register({ name: 'x', version: '1.0.0', instanceId: 'x-1' })).rejects.toBeInstanceOf(
      InvalidServiceError,
    );
    await expect(h.setHealth('sick' as never)).rejects.toBeInstanceOf(InvalidServiceError);
    await expect(h.serve('Bad Op', () => {})).rejects.toBeInstanceOf(InvalidServiceError);
    expect(() => new ServiceRegistry({ bus: reg.bus, heartbeatIntervalMs: 1 })).toThrow(InvalidServiceError);
    expect(() => new ServiceRegistry({ bus: {} as never })).toThrow(ConfigError);

    const registry = new Registry();
    registerServiceRegistryMetrics(registry, reg);
    const text = await registry.metrics();
    expect(text).toContain('ossa_service_registry_services_total 1');
    expect(text).toContain('ossa_service_registry_instances{health="healthy"} 1');
    expect(text).toContain('ossa_service_registry_service_instances{service="x",state="all"} 1');
    expect(() => registerServiceRegistryMetrics(new Registry(), reg, { prefix: '1bad' })).toThrow(
      ConfigError,
    );
  });
});
