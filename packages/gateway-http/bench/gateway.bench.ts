/**
 * Events/s in through `POST /events` (single and batches of 100) and out to a
 * subscriber on the bus, beside `bus.publish` alone in the same run.
 *
 *   pnpm --filter @qe/gateway-http bench
 */
import { QEEventBus } from '@qe/core';
import { createHttpGateway } from '../src/index.js';

const N = Number(process.env.QE_BENCH_EVENTS ?? 20_000);
const CONCURRENCY = 32;
const data = { task: 'summarise', tokens: 1234 };

async function run(kind: 'alone' | 'single' | 'batch'): Promise<number> {
  const bus = new QEEventBus({ nodeId: kind, backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  const gw = kind === 'alone' ? undefined : await createHttpGateway({ bus, port: 0 });
  let n = 0;
  let done!: () => void;
  const fin = new Promise<void>((r) => (done = r));
  bus.subscribe('bench.*', () => {
    if (++n === N) done();
  });
  const url = gw ? `http://127.0.0.1:${gw.port}/events` : '';
  const per = kind === 'batch' ? 100 : 1;
  const calls = Math.ceil(N / per);
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < calls) {
      next++;
      const events = Array.from({ length: per }, () => ({ type: 'bench.x', agentId: 'a', data }));
      if (kind === 'alone') await bus.publish(events[0]!);
      else {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(per === 1 ? events[0] : events),
        });
        await res.arrayBuffer();
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await fin;
  const rate = (N / (performance.now() - t0)) * 1000;
  await gw?.close();
  await bus.stop();
  return rate;
}

const alone = await run('alone');
const single = await run('single');
const batch = await run('batch');
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(
  `# HTTP gateway throughput (${fmt(N)} events, ${CONCURRENCY} concurrent requests, HTTP/1.1 keep-alive)`,
);
console.log(`bus.publish alone             ${fmt(alone).padStart(10)} events/s`);
console.log(
  `POST /events, one per request ${fmt(single).padStart(10)} events/s   ratio ${(single / alone).toFixed(3)}`,
);
console.log(
  `POST /events, 100 per request ${fmt(batch).padStart(10)} events/s   ratio ${(batch / alone).toFixed(3)}`,
);
