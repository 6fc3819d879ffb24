/**
 * Routing cost: the same group traffic through the router (strategy choice
 * per event, per-member inbox) versus a plain Redis Streams consumer group, in
 * the same run, with 4 members in this process.
 *
 *   pnpm --filter @qe/router bench
 */
import { MemoryTransport, QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { createStrategy, RoutedTransport } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const N = Number(process.env.QE_BENCH_EVENTS ?? 40_000);

async function run(kind: 'plain' | 'routed'): Promise<number> {
  const prefix = `qe-bench:router:${kind}:${Date.now().toString(36)}`;
  const redis = new Redis(URL_);
  const make = (id: string) =>
    new QEEventBus({
      nodeId: id,
      transport:
        kind === 'plain'
          ? new RedisStreamsTransport({ url: URL_, keyPrefix: prefix })
          : new RoutedTransport({
              inner: new MemoryTransport(),
              redis,
              prefix,
              strategy: createStrategy('hash_based'),
            }),
    });
  const members = ['m1', 'm2', 'm3', 'm4'].map(make);
  const pub = make('pub');
  let handled = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  for (const m of members) {
    await m.start();
    await m.subscribe(
      'bench.*',
      () => {
        if (++handled === N) done();
      },
      { group: 'g', maxConcurrency: 32 },
    ).ready;
  }
  await pub.start();
  if (pub.transport instanceof RoutedTransport) await pub.transport.refresh();
  const t0 = performance.now();
  for (let i = 0; i < N; i += 500)
    await pub.publishBatch(
      Array.from({ length: 500 }, (_, k) => ({
        type: 'bench.x',
        agentId: `a${(i + k) % 1000}`,
        data: { i: i + k },
      })),
    );
  await finished;
  const rate = (N / (performance.now() - t0)) * 1000;
  for (const b of [pub, ...members]) await b.stop();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
  redis.disconnect();
  return rate;
}

const plain = await run('plain');
const routed = await run('routed');
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(`# router cost, ${fmt(N)} events, 4 members (in one process), hash_based with per-key lanes`);
console.log(`plain Redis Streams consumer group   ${fmt(plain).padStart(8)} events/s`);
console.log(
  `router (hash_based, inboxes)         ${fmt(routed).padStart(8)} events/s   ratio ${(routed / plain).toFixed(2)}`,
);
