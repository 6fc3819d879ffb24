import type { ChildProcess } from 'node:child_process';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, startFixture, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { NoHealthyInstanceError, type ServiceChange, ServiceRegistry } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const r = new Redis(URL_);
const prefixes: string[] = [];
const children: ChildProcess[] = [];
const stops: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(async () => {
  for (const p of prefixes) await deletePrefix(p, URL_);
  r.disconnect();
});

function host(args: string[]) {
  const lines: string[] = [];
  const proc = startFixture(new URL('./fixtures/host.ts', import.meta.url), ['host', ...args], {
    stdin: 'pipe',
    onLine: (line) => lines.push(line),
  });
  children.push(proc);
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  return {
    send: (line: string) => proc.stdin!.write(`${line}\n`),
    waitLine: (line: string, timeoutMs = 30_000) =>
      waitFor(() => lines.includes(line), `${args[2]}: ${line}`, timeoutMs),
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

describe('service registry over Redis, instances in separate processes', () => {
  it('discovery, contracts, routing to healthy instances only, and expiry after SIGKILL', async () => {
    const p = `qe-test:registry:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
    prefixes.push(p);
    const h1 = host([URL_, p, 'p1', 'billing', '1.2.0', 'b1']);
    const h2 = host([URL_, p, 'p2', 'billing', '2.0.0', 'b2']);
    await Promise.all([h1.waitLine('ready'), h2.waitLine('ready')]);

    const bus = new QEEventBus({
      nodeId: 'client',
      transport: new RedisStreamsTransport({
        url: URL_,
        keyPrefix: `${p}:bus`,
        blockMs: 100,
        claimIdleMs: 1000,
      }),
    });
    await bus.start();
    stops.push(() => bus.stop());
    const redis = new Redis(URL_);
    stops.push(async () => redis.disconnect());
    const reg = new ServiceRegistry({
      bus,
      redis,
      keyPrefix: `${p}:registry`,
      heartbeatIntervalMs: 300,
      failureTimeoutMs: 1200,
    });
    await reg.start();
    stops.push(() => reg.stop());
    // from the Redis snapshot: known as soon as start() resolves, before any heartbeat
    expect(reg.find({ name: 'billing' }).map((i) => i.instanceId)).toEqual(['b2', 'b1']);
    expect(reg.find({ name: 'billing', version: '~1.2' }).map((i) => i.nodeId)).toEqual(['p1']);
    expect(reg.contracts('billing', '^2')).toMatchObject([
      { eventType: 'billing.done', direction: 'publishes', serviceVersion: '2.0.0' },
    ]);
    const changes: ServiceChange[] = [];
    reg.watch({ name: 'billing' }, (c) => changes.push(c));

    for (let i = 0; i < 40; i++) await reg.send('billing', 'run', { i });
    await waitFor(async () => (await r.llen(`${p}:handled`)) === 40, '40 requests handled', 20_000);
    const first = await r.lrange(`${p}:handled`, 0, -1);
    expect(new Set(first)).toEqual(new Set(['b1', 'b2']));

    h1.send('unhealthy');
    await h1.waitLine('health unhealthy');
    await waitFor(
      () => changes.some((c) => c.kind === 'health' && c.instance.instanceId === 'b1'),
      'b1 unhealthy seen',
    );
    await r.del(`${p}:handled`);
    for (let i = 0; i < 20; i++) await reg.send('billing', 'run', { i });
    await waitFor(async () => (await r.llen(`${p}:handled`)) === 20, '20 requests handled', 20_000);
    expect(new Set(await r.lrange(`${p}:handled`, 0, -1))).toEqual(new Set(['b2']));

    const killedAt = Date.now();
    await h2.kill();
    await waitFor(
      () => changes.some((c) => c.kind === 'down' && c.instance.instanceId === 'b2'),
      'b2 expired',
      10_000,
    );
    expect(Date.now() - killedAt).toBeLessThan(1200 + 300 + 1500);
    expect(changes.find((c) => c.kind === 'down')).toMatchObject({ reason: 'expired' });
    await waitFor(async () => (await r.hexists(`${p}:registry:instances`, 'b2')) === 0, 'b2 gone from Redis');
    await expect(reg.send('billing', 'run', {})).rejects.toBeInstanceOf(NoHealthyInstanceError);
    expect(reg.stats()).toMatchObject({ services: 1, instances: 1, unhealthy: 1, expired: 1 });
  }, 60_000);
});
