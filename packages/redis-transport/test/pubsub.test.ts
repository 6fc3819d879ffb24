import { createEvent, noopLogger, QEEventBus, TransportError } from '@qe/core';
import { describeTransportConformance, waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisTransport, RedisPubSubTransport } from '../src/index.js';
import { REDIS_URL, uniquePrefix } from './helpers.js';

describeTransportConformance({
  name: 'redis-pubsub',
  capabilities: new RedisPubSubTransport().capabilities,
  async setup() {
    const keyPrefix = uniquePrefix('ps');
    return { createTransport: () => createRedisTransport({ mode: 'pubsub', url: REDIS_URL, keyPrefix }) };
  },
});

describe('redis pub/sub specifics', () => {
  it('publishes made in the tick of close() still go out and resolve', async () => {
    const keyPrefix = uniquePrefix('ps');
    const listener = new Redis(REDIS_URL);
    const got: string[] = [];
    await listener.subscribe(`${keyPrefix}:ps`);
    listener.on('messageBuffer', (_c: Buffer, m: Buffer) => got.push(m.subarray(8).toString()));
    const t = new RedisPubSubTransport({ url: REDIS_URL, keyPrefix });
    try {
      await t.connect({ nodeId: 'ps-close', logger: noopLogger, onError: () => {} });
      const e = (i: number) => createEvent('ps.last').agentId('a').data({ i }).build();
      const published = [t.publish([e(1)]), t.publish([e(2), e(3)])];
      await t.close();
      await Promise.all(published);
      await expect(t.publish([e(4)])).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
      await waitFor(() => got.length === 3, 'the three messages');
      expect(got.map((m) => (JSON.parse(m.slice(m.indexOf('{'))) as { data: { i: number } }).data.i)).toEqual(
        [1, 2, 3],
      );
    } finally {
      listener.disconnect();
    }
  });

  it('a publish Redis refuses rejects with TransportError, single or batched, and the transport keeps working', async () => {
    const admin = new Redis(REDIS_URL);
    const user = `qe-test-nopub-${Math.random().toString(36).slice(2, 8)}`;
    // may subscribe and ping, may not PUBLISH
    await admin.acl('SETUSER', user, 'on', '>pw', '~*', '&*', '+@all', '-publish');
    const keyPrefix = uniquePrefix('ps');
    const t = new RedisPubSubTransport({ url: REDIS_URL, keyPrefix, username: user, password: 'pw' });
    try {
      await t.connect({ nodeId: 'ps-refused', logger: noopLogger, onError: () => {} });
      const e = (i: number) => createEvent('ps.refused').agentId('a').data({ i }).build();
      await expect(t.publish([e(1)])).rejects.toBeInstanceOf(TransportError);
      await expect(t.publish([e(1), e(2), e(3)])).rejects.toThrow(/NOPERM|no permissions/i);
      expect(t.stats().published).toBe(0);
      expect((await t.healthCheck()).connected).toBe(true);
      // allowed again: the same transport publishes, corked batch included
      await admin.acl('SETUSER', user, '+publish');
      await t.publish([e(4), e(5)]);
      expect(t.stats().published).toBe(2);
    } finally {
      await t.close();
      await admin.acl('DELUSER', user);
      admin.disconnect();
    }
  });

  it('refuses group subscriptions with UNSUPPORTED', async () => {
    const bus = new QEEventBus({
      nodeId: 'ps-g',
      transport: new RedisPubSubTransport({ keyPrefix: uniquePrefix('ps') }),
    });
    const errors: Error[] = [];
    bus.on('error', (e) => errors.push(e));
    await bus.start();
    try {
      const u = bus.subscribe('x.*', () => {}, { group: 'g' });
      await expect(u.ready).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    } finally {
      await bus.stop();
    }
  });

  it('drops and counts events a full queue cannot take, never buffering without bound', async () => {
    const keyPrefix = uniquePrefix('ps');
    const producer = new QEEventBus({ nodeId: 'ps-p', transport: new RedisPubSubTransport({ keyPrefix }) });
    const consumer = new QEEventBus({
      nodeId: 'ps-c',
      transport: new RedisPubSubTransport({ keyPrefix }),
      backpressure: { maxQueueSize: 5 },
    });
    await producer.start();
    await consumer.start();
    try {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let handled = 0;
      await consumer.subscribe('flood.*', async () => {
        await gate;
        handled++;
      }).ready;
      await producer.publishBatch(
        Array.from({ length: 50 }, (_, i) => ({ type: 'flood.x', agentId: 'a', data: { i } })),
      );
      const t = consumer.transport as RedisPubSubTransport;
      await waitFor(() => t.counters.dropped + t.counters.delivered === 50, 'all 50 to arrive');
      expect(t.counters.dropped).toBe(45);
      release();
      await waitFor(() => handled === 5, 'the five accepted');
      expect((await consumer.healthCheck()).transport.reasons.join()).toMatch(/45 events dropped/);
    } finally {
      await producer.stop();
      await consumer.stop();
    }
  });
});
