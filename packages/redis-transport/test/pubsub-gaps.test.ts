import { QEEventBus } from '@qe/core';
import { startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisPubSubTransport } from '../src/index.js';
import { REDIS_URL, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startBus(nodeId: string, url: string, keyPrefix: string) {
  const bus = new QEEventBus({ nodeId, transport: new RedisPubSubTransport({ url, keyPrefix }) });
  bus.on('error', () => {});
  await bus.start();
  cleanups.push(() => bus.stop().catch(() => {}));
  return bus;
}

const numsub = async (r: Redis, channel: string) =>
  Number(((await r.pubsub('NUMSUB', channel)) as [string, number])[1]);

describe('redis pub/sub subscriptions and gaps', () => {
  it('a bus that only publishes does not SUBSCRIBE; the first consumer does', async () => {
    const keyPrefix = uniquePrefix('psonly');
    const channel = `${keyPrefix}:ps`;
    const r = new Redis(REDIS_URL);
    cleanups.push(() => r.disconnect());
    const producer = await startBus('ps-producer', REDIS_URL, keyPrefix);
    await producer.publish({ type: 'ps.x', agentId: 'a', data: {} });
    expect(await numsub(r, channel)).toBe(0);
    const consumer = await startBus('ps-consumer', REDIS_URL, keyPrefix);
    expect(await numsub(r, channel)).toBe(0); // started, no subscription yet
    const got: unknown[] = [];
    await consumer.subscribe('ps.*', (e) => void got.push(e)).ready;
    expect(await numsub(r, channel)).toBe(1);
    await producer.publish({ type: 'ps.y', agentId: 'a', data: {} });
    await waitFor(() => got.length === 1, 'the event');
    // the producer's bus still gets no traffic of its own
    expect(producer.transport.stats()).toMatchObject({ delivered: 0 });
  });

  it('a dropped subscriber connection is counted, and health is degraded with the gap until it is reported', async () => {
    const s = await startRedis(7184);
    cleanups.push(async () => {
      await s.stop();
      s.cleanup();
    });
    const url = `redis://127.0.0.1:${s.port}`;
    const keyPrefix = uniquePrefix('psgap');
    const admin = new Redis(url);
    cleanups.push(() => admin.disconnect());
    const producer = await startBus('ps-gap-producer', url, keyPrefix);
    const consumer = await startBus('ps-gap-consumer', url, keyPrefix);
    const got: number[] = [];
    await consumer.subscribe('gap.*', (e) => void got.push((e.data as { i: number }).i)).ready;
    expect(consumer.transport.stats()).toMatchObject({ reconnects: 0 });
    expect((await consumer.transport.healthCheck()).status).toBe('healthy');
    const before = Date.now();
    await admin.client('KILL', 'TYPE', 'pubsub');
    await waitFor(() => consumer.transport.stats().reconnects === 1, 'the subscriber to reconnect');
    // delivery resumes on the new connection
    let i = 0;
    await waitFor(async () => {
      await producer.publish({ type: 'gap.x', agentId: 'a', data: { i: ++i } });
      return got.length > 0;
    }, 'an event after the reconnect');
    const health = await consumer.transport.healthCheck();
    expect(health.status).toBe('degraded');
    expect(health.reasons.join(' ')).toMatch(/subscriber connection was down/);
    const gap = (health.details as { lastGap: { from: number; to: number } }).lastGap;
    expect(gap.from).toBeGreaterThanOrEqual(before);
    expect(gap.to).toBeGreaterThanOrEqual(gap.from);
    expect(consumer.transport.stats()).toMatchObject({ reconnects: 1, gapMs: expect.any(Number) });
  });
});
