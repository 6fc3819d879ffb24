import { QEEventBus } from '@qe/core';
import { type RedisProcess, startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisPubSubTransport, RedisStreamsTransport, type RedisTransportOptions } from '../src/index.js';
import { uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(port: number, args: string[] = []): Promise<RedisProcess> {
  const s = await startRedis(port, args);
  cleanups.push(async () => {
    if (s.proc.signalCode === null && s.proc.exitCode === null) s.proc.kill('SIGCONT');
    await s.stop();
    s.cleanup();
  });
  return s;
}

async function startBus(port: number, options: RedisTransportOptions, shutdownTimeoutMs = 2000) {
  const bus = new QEEventBus({
    nodeId: `deadline-${port}`,
    transport: new RedisStreamsTransport({ url: `redis://127.0.0.1:${port}`, blockMs: 200, ...options }),
    shutdownTimeoutMs,
  });
  bus.on('error', () => {}); // connection errors are the point here
  await bus.start();
  cleanups.push(() => bus.stop().catch(() => {}));
  return bus;
}

/** Settles with what `p` did and how long it took; gives up (as a failure) after `limitMs`. */
async function timed<T>(p: Promise<T>, limitMs: number) {
  const t0 = performance.now();
  const outcome = await Promise.race([
    p.then(
      (value) => ({ ok: true as const, value }),
      (error: { code?: string; details?: Record<string, unknown> }) => ({ ok: false as const, error }),
    ),
    new Promise<{ ok: 'gave up' }>((r) => setTimeout(() => r({ ok: 'gave up' }), limitMs)),
  ]);
  return { outcome, ms: performance.now() - t0 };
}

describe('redis deadlines', () => {
  it('a publish while Redis is down rejects with TIMEOUT after publishTimeoutMs, and is never written later', async () => {
    const s = await server(7180, ['--appendonly', 'yes', '--appendfsync', 'always']);
    const keyPrefix = uniquePrefix('pubdeadline');
    const bus = await startBus(s.port, { keyPrefix, publishTimeoutMs: 1000 });
    await bus.publish({ type: 'dl.before', agentId: 'a', data: {} });
    await s.stop('SIGKILL');
    const { outcome, ms } = await timed(bus.publish({ type: 'dl.lost', agentId: 'a', data: {} }), 3000);
    expect(outcome).toMatchObject({ ok: false, error: { code: 'TIMEOUT', details: { stored: 'none' } } });
    expect(ms).toBeGreaterThanOrEqual(900);
    // back up (AOF kept dl.before): a publish made now lands, the timed-out one never does
    await s.restart();
    await waitFor(
      () =>
        bus.publish({ type: 'dl.after', agentId: 'a', data: {} }).then(
          () => true,
          () => false,
        ),
      'publishing again',
      15_000,
    );
    const r = new Redis(`redis://127.0.0.1:${s.port}`);
    cleanups.push(() => r.disconnect());
    const stream = (bus.transport as RedisStreamsTransport).keys.stream(0, 2);
    const types = ((await r.xrange(stream, '-', '+')) as [string, string[]][]).map(
      ([, f]) => (JSON.parse(f[1]!.slice(f[1]!.indexOf('{'))) as { type: string }).type,
    );
    expect(types[0]).toBe('dl.before');
    expect(types).toContain('dl.after');
    expect(types).not.toContain('dl.lost');
  }, 30_000);

  it('a publish to a Redis that stopped answering rejects with TIMEOUT (outcome unknown) after publishTimeoutMs', async () => {
    const s = await server(7181);
    const bus = await startBus(s.port, { keyPrefix: uniquePrefix('pubfrozen'), publishTimeoutMs: 1000 });
    await bus.publish({ type: 'dl.before', agentId: 'a', data: {} });
    s.proc.kill('SIGSTOP'); // the socket stays open; nothing answers
    const { outcome, ms } = await timed(bus.publish({ type: 'dl.frozen', agentId: 'a', data: {} }), 3000);
    s.proc.kill('SIGCONT');
    expect(outcome).toMatchObject({ ok: false, error: { code: 'TIMEOUT', details: { stored: 'unknown' } } });
    expect(ms).toBeGreaterThanOrEqual(900);
  }, 20_000);

  it('pub/sub: a publish while Redis is down rejects with TIMEOUT after publishTimeoutMs', async () => {
    const s = await server(7185);
    const bus = new QEEventBus({
      nodeId: 'deadline-ps',
      transport: new RedisPubSubTransport({
        url: `redis://127.0.0.1:${s.port}`,
        keyPrefix: uniquePrefix('psdeadline'),
        publishTimeoutMs: 1000,
      }),
      shutdownTimeoutMs: 1000,
    });
    bus.on('error', () => {});
    await bus.start();
    cleanups.push(() => bus.stop().catch(() => {}));
    await bus.publish({ type: 'dl.before', agentId: 'a', data: {} });
    await s.stop('SIGKILL');
    await waitFor(() => !bus.transport.isConnected(), 'the client to notice');
    const { outcome, ms } = await timed(bus.publish({ type: 'dl.lost', agentId: 'a', data: {} }), 3000);
    expect(outcome).toMatchObject({ ok: false, error: { code: 'TIMEOUT', details: { stored: 'none' } } });
    expect(ms).toBeGreaterThanOrEqual(900);
  }, 20_000);

  it('stop() with Redis down returns within shutdownTimeoutMs', async () => {
    const s = await server(7182);
    const bus = await startBus(s.port, { keyPrefix: uniquePrefix('stopdown') }, 2000);
    let handled = 0;
    await bus.subscribe('dl.*', () => void handled++, { group: 'g' }).ready;
    await bus.publishBatch(Array.from({ length: 20 }, () => ({ type: 'dl.x', agentId: 'a', data: {} })));
    await waitFor(() => handled === 20, 'the events handled');
    await s.stop('SIGKILL');
    // the client knows Redis is gone: what close() sends now waits in ioredis's offline queue
    await waitFor(() => !bus.transport.isConnected(), 'the client to notice');
    const { outcome, ms } = await timed(bus.stop(), 6000);
    expect(outcome).toMatchObject({ ok: true });
    expect(ms).toBeLessThan(6000);
  }, 20_000);

  it('stop() with Redis frozen (SIGSTOP) returns within shutdownTimeoutMs', async () => {
    const s = await server(7183);
    const bus = await startBus(s.port, { keyPrefix: uniquePrefix('stopfrozen') }, 2000);
    let handled = 0;
    await bus.subscribe('dl.*', () => void handled++, { group: 'g' }).ready;
    await bus.publishBatch(Array.from({ length: 20 }, () => ({ type: 'dl.x', agentId: 'a', data: {} })));
    await waitFor(() => handled === 20, 'the events handled');
    s.proc.kill('SIGSTOP');
    const { outcome, ms } = await timed(bus.stop(), 6000);
    s.proc.kill('SIGCONT');
    expect(outcome).toMatchObject({ ok: true });
    expect(ms).toBeLessThan(6000);
  }, 20_000);
});
