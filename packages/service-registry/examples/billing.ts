/**
 * A service in one process, a client in another, on Redis Streams.
 *
 *   tsx --conditions=@qe/source packages/service-registry/examples/billing.ts           # starts the service process itself
 *   tsx --conditions=@qe/source packages/service-registry/examples/billing.ts service   # or: a billing instance on its own
 *
 * REDIS_URL defaults to redis://127.0.0.1:6379.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { ServiceRegistry } from '../src/index.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const keyPrefix = process.env.EXAMPLE_PREFIX ?? 'qe-example:registry';

async function registry(nodeId: string) {
  const bus = new QEEventBus({
    nodeId,
    transport: new RedisStreamsTransport({ url, keyPrefix: `${keyPrefix}:bus` }),
  });
  await bus.start();
  const redis = new Redis(url);
  const reg = new ServiceRegistry({ bus, redis, keyPrefix, heartbeatIntervalMs: 500 });
  await reg.start();
  return {
    reg,
    close: async () => {
      await reg.stop();
      await bus.stop();
      redis.disconnect();
    },
  };
}

/** Starts a billing process, discovers it, reads its contracts, sends it 3 requests and waits for the answers. */
export async function main(): Promise<{ found: string[]; contracts: string[]; answered: number }> {
  const service = spawn(
    process.execPath,
    ['--conditions=@qe/source', '--import', 'tsx', fileURLToPath(import.meta.url), 'service'],
    { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, EXAMPLE_PREFIX: keyPrefix } },
  );
  const { reg: client, close } = await registry(`shop-${process.pid}`);
  try {
    client.watch({ name: 'billing' }, (c) =>
      console.log('watch:', c.kind, c.instance.instanceId, c.instance.version),
    );
    const deadline = Date.now() + 30_000;
    while (client.find({ name: 'billing', version: '^1.2.0' }).length === 0) {
      if (Date.now() > deadline) throw new Error('the billing service did not register within 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    const found = client
      .find({ name: 'billing', version: '^1.2.0' })
      .map((i) => `${i.instanceId}@${i.version}`);
    const contracts = client.contracts('billing').map((c) => `${c.direction} ${c.eventType}`);
    console.log('found:', found, 'contracts:', contracts);
    let answered = 0;
    let sub: { ready: Promise<void> } | undefined;
    const done = new Promise<void>((resolve) => {
      sub = client.bus.subscribe('billing.invoice.created', (e) => {
        console.log('invoice:', e.data);
        if (++answered === 3) resolve();
      });
    });
    await sub!.ready; // live before the requests go out, so no invoice is published before it listens
    for (let i = 1; i <= 3; i++)
      await client.send('billing', 'charge', { orderId: `o-${i}`, amount: 100 * i });
    // bounded, so that a lost answer fails the example (and the finally below stops the service) instead of hanging
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      done,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`only ${answered} of 3 invoices within 30 s`)), 30_000);
      }),
    ]).finally(() => clearTimeout(timer));
    return { found, contracts, answered };
  } finally {
    const exited =
      service.exitCode === null && service.signalCode === null
        ? new Promise((r) => service.once('exit', r))
        : undefined;
    service.kill('SIGTERM');
    await exited; // it deregisters on SIGTERM: let it finish before we go
    await close();
  }
}

if (process.argv[2] === 'service') {
  const { reg, close } = await registry(`billing-host-${process.pid}`);
  const billing = await reg.register({
    name: 'billing',
    version: '1.4.2',
    endpoints: [{ protocol: 'http', url: 'http://127.0.0.1:8080' }],
    capabilities: ['invoice'],
    publishes: ['billing.invoice.created'],
    consumes: ['order.*'],
    contracts: [
      { eventType: 'billing.invoice.created', schema: { type: 'object', required: ['invoiceId'] } },
    ],
    // not serving until it serves: find() (healthy or degraded) skips it until setHealth below
    health: 'unhealthy',
  });
  await billing.serve('charge', async (event) => {
    const { orderId, amount } = event.data as { orderId: string; amount: number };
    await reg.bus.publish({
      type: 'billing.invoice.created',
      agentId: billing.instanceId,
      data: { invoiceId: `inv-${orderId}`, amount },
    });
  });
  await billing.setHealth('healthy'); // its group exists now: requests sent from here on reach it
  process.once('SIGTERM', () => void close().then(() => process.exit(0)));
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main();
  process.exit(0);
}
