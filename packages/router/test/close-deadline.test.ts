import { MemoryTransport, QEEventBus } from '@qe/core';
import { type RedisProcess, startRedis } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RoutedTransport } from '../src/index.js';

/** This file's own redis-server (port 7600), frozen with SIGSTOP and killed by PID. */
const PORT = 7600;
let server: RedisProcess | undefined;
afterEach(async () => {
  await server?.stop('SIGKILL');
  server?.cleanup();
  server = undefined;
});

describe('RoutedTransport.close({ timeoutMs })', () => {
  it('returns within its deadline when Redis stops answering, and closes the inner transport', async () => {
    server = await startRedis(PORT, ['--appendonly', 'no']);
    const redis = new Redis({ port: PORT, lazyConnect: true, retryStrategy: () => 50 });
    redis.on('error', () => {});
    await redis.connect();
    const inner = new MemoryTransport();
    const t = new RoutedTransport({
      inner,
      redis,
      prefix: 'qe-test:router-close',
      heartbeatMs: 200,
      memberTtlMs: 1000,
    });
    const bus = new QEEventBus({ nodeId: 'router-close', transport: t });
    await bus.start();
    const sub = bus.subscribe('job.*', () => {}, { group: 'workers' });
    await sub.ready;
    server.proc.kill('SIGSTOP'); // Redis holds every command from now on
    const started = Date.now();
    await t.close({ timeoutMs: 1000 });
    // the handover would wait for Redis forever; the deadline (plus generous slack for a loaded machine) holds
    expect(Date.now() - started).toBeLessThan(5000);
    expect(inner.isConnected()).toBe(false);
    redis.disconnect();
  });
});
