import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisTokenBuckets } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const children: ChildProcess[] = [];
const prefixes: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  const r = new Redis(URL_);
  for (const p of prefixes.splice(0)) {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${p}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  }
  r.disconnect();
});
const prefix = () => {
  const p = `qe-test:rel:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  prefixes.push(p);
  return p;
};

function worker(args: string[]) {
  const proc = spawn(
    process.execPath,
    [
      '--conditions=@qe/source',
      '--import',
      'tsx',
      fileURLToPath(new URL('./fixtures/worker.ts', import.meta.url)),
      ...args,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  children.push(proc);
  const lines: string[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  return { proc, lines };
}

describe('reliability across processes (Redis)', () => {
  it('two processes sharing a Redis rate limit together stay within it', async () => {
    const p = prefix();
    const a = worker(['ratelimit', URL_, p, '100']);
    const b = worker(['ratelimit', URL_, p, '100']);
    await waitFor(() => a.lines.includes('ready') && b.lines.includes('ready'), 'both workers', 20_000);
    const start = Date.now();
    a.proc.stdin!.write('go\n');
    b.proc.stdin!.write('go\n');
    const admitted = () => [...a.lines, ...b.lines].filter((l) => l.startsWith('admitted '));
    await waitFor(() => admitted().length === 200, '200 admitted events', 30_000);
    const times = admitted()
      .map((l) => Number(l.slice(9)) - start)
      .sort((x, y) => x - y);
    // a bucket of 50 refilled at 50/s: by time t at most 50 + 50 * t/1000 (+1 for clock granularity)
    for (const [i, t] of times.entries())
      expect(i + 1).toBeLessThanOrEqual(50 + Math.floor((50 * (t + 20)) / 1000) + 1);
    expect(times[199]!).toBeGreaterThanOrEqual(2800);
    // both drew from the one bucket
    expect(a.lines.filter((l) => l.startsWith('admitted')).length).toBe(100);
    expect(b.lines.filter((l) => l.startsWith('admitted')).length).toBe(100);
  });

  it('the token bucket script refuses bad arguments loudly instead of letting everything through', async () => {
    const r = new Redis(URL_);
    try {
      const buckets = new RedisTokenBuckets(r, prefix());
      await expect(buckets.take('k', 10, Number.NaN, 1)).rejects.toThrow();
    } finally {
      r.disconnect();
    }
  });

  it('duplicates published five times are handled once across two consumer processes', async () => {
    const p = prefix();
    const a = worker(['idem', URL_, p, 'consumer-a']);
    const b = worker(['idem', URL_, p, 'consumer-b']);
    await waitFor(() => a.lines.includes('ready') && b.lines.includes('ready'), 'both consumers', 20_000);
    const producer = new QEEventBus({
      nodeId: 'idem-producer',
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${p}:bus` }),
    });
    await producer.start();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const e = await producer.publish({ type: 'dup.order', agentId: `shop-${i}`, data: { i } });
        ids.push(e.id);
        for (let k = 0; k < 4; k++) await producer.publish({ ...e });
      }
      const handled = () =>
        [...a.lines, ...b.lines].filter((l) => l.startsWith('handled ')).map((l) => l.slice(8));
      await waitFor(() => new Set(handled()).size === 20, 'every distinct event handled', 20_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(handled().sort()).toEqual([...ids].sort());
      expect(
        a.lines.some((l) => l.startsWith('handled')) && b.lines.some((l) => l.startsWith('handled')),
      ).toBe(true);
    } finally {
      await producer.stop();
    }
  });
});
