/**
 * Events/s in through the WebSocket gateway and out to a WebSocket
 * subscriber, beside the bus alone in the same run.
 *
 *   pnpm --filter @qe/gateway-ws bench
 */
import { QEEventBus } from '@qe/core';
import WebSocket from 'ws';
import { createWebSocketGateway } from '../src/index.js';

const N = Number(process.env.QE_BENCH_EVENTS ?? 50_000);
const WINDOW = 500; // publishes in flight
const data = { task: 'summarise', tokens: 1234 };

async function busAlone(): Promise<number> {
  const bus = new QEEventBus({ nodeId: 'alone' });
  await bus.start();
  let n = 0;
  let done!: () => void;
  const fin = new Promise<void>((r) => (done = r));
  bus.subscribe('bench.*', () => {
    if (++n === N) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const p = bus.publish({ type: 'bench.x', agentId: 'a', data });
    if (i % WINDOW === WINDOW - 1) await p;
  }
  await fin;
  const rate = (N / (performance.now() - t0)) * 1000;
  await bus.stop();
  return rate;
}

async function throughGateway(): Promise<number> {
  const bus = new QEEventBus({ nodeId: 'gw', backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  const gw = await createWebSocketGateway({ bus, port: 0, maxBufferedBytes: 64 * 1024 * 1024 });
  const open = async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/events`);
    await new Promise((r) => ws.once('open', r));
    return ws;
  };
  const sub = await open();
  const pub = await open();
  let received = 0;
  let done!: () => void;
  const fin = new Promise<void>((r) => (done = r));
  await new Promise<void>((resolve) => {
    sub.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.op === 'ack') resolve();
      else if (m.op === 'event' && ++received === N) done();
    });
    sub.send(JSON.stringify({ op: 'subscribe', id: 's', patterns: 'bench.*' }));
  });
  let acked = 0;
  let waiter: (() => void) | null = null;
  pub.on('message', () => {
    acked++;
    waiter?.();
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    while (i - acked >= WINDOW) await new Promise<void>((r) => (waiter = r));
    pub.send(JSON.stringify({ op: 'publish', id: i, event: { type: 'bench.x', agentId: 'a', data } }));
  }
  await fin;
  const rate = (N / (performance.now() - t0)) * 1000;
  sub.close();
  pub.close();
  await gw.close();
  await bus.stop();
  return rate;
}

const alone = await busAlone();
const gw = await throughGateway();
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(
  `# WebSocket gateway throughput (${fmt(N)} events, ${WINDOW} publishes in flight, publisher and subscriber are ws clients)`,
);
console.log(`bus alone (in process)            ${fmt(alone).padStart(10)} events/s`);
console.log(
  `ws client -> gateway -> ws client ${fmt(gw).padStart(10)} events/s   ratio ${(gw / alone).toFixed(2)}`,
);
