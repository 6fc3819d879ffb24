import { QEEventBus } from '@qe/core';
import { ServiceRegistry } from '@qe/service-registry';
import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { discoverContracts } from './discovery.js';
import { ContractRegistry } from './registry.js';

const stops: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s();
});

describe('contracts discovered from @qe/service-registry', () => {
  it('registers what services declare they publish, now and as they come; refusals are counted, not thrown', async () => {
    const bus = new QEEventBus({ nodeId: 'discovery' });
    await bus.start();
    stops.push(() => bus.stop());
    const services = new ServiceRegistry({ bus, heartbeatIntervalMs: 200 });
    await services.start();
    stops.push(() => services.stop());
    const contracts = new ContractRegistry();
    await contracts.start();
    stops.push(() => contracts.close());
    const userSchema = {
      type: 'object',
      required: ['userId'],
      properties: { userId: { type: 'string' } },
    };
    await services.register({
      name: 'users',
      version: '1.0.0',
      publishes: ['user.created'],
      contracts: [
        { eventType: 'user.created', schema: userSchema, direction: 'publishes' },
        { eventType: 'order.created', schema: { type: 'object' }, direction: 'consumes' },
      ],
    });
    const discovery = discoverContracts(contracts, services);
    stops.push(() => discovery.stop());
    await discovery.settled();
    const ok = contracts.check({ type: 'user.created', data: { userId: 'u-1' } });
    expect([ok.contract?.owner, ok.issues.length]).toEqual(['users', 0]);
    expect(contracts.check({ type: 'user.created', data: { userId: 7 } }).issues.length).toBeGreaterThan(0);
    expect(contracts.check({ type: 'order.created', data: {} }).contract).toBeUndefined();
    expect(discovery.stats().registered).toBe(1); // the consumer's declaration is not a contract

    // a service that comes later, and a breaking change of user.created by another version
    await services.register({
      name: 'orders',
      version: '2.1.0',
      contracts: [
        {
          eventType: 'order.placed',
          schema: { type: 'object', required: ['orderId'] },
          direction: 'publishes',
        },
      ],
    });
    await services.register({
      name: 'users',
      version: '1.1.0',
      contracts: [
        {
          eventType: 'user.created',
          version: '1.1.0',
          schema: {
            type: 'object',
            required: ['userId', 'tenant'],
            properties: { userId: { type: 'number' } },
          },
          direction: 'publishes',
        },
      ],
    });
    await waitFor(
      () => discovery.stats().registered + discovery.stats().refused === 3,
      'both later declarations',
    );
    await discovery.settled();
    expect(discovery.stats()).toEqual({ registered: 2, refused: 1 });
    expect(contracts.check({ type: 'order.placed', data: {} }).issues.length).toBeGreaterThan(0);
    expect(contracts.check({ type: 'user.created', data: { userId: 'u-2' } }).contract?.version).toBe(
      '1.0.0',
    );
  });
});
