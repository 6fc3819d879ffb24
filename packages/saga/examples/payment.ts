// Spec 002's payment example as a saga: `process_payment` charges
// { amount: 100.0, card: '****1234' } and answers { paymentId: 'pay-789',
// status: 'authorized' }; an amount the card cannot cover fails with
// PaymentError 'Insufficient funds' and the reserved stock is released.
//
//   tsx --conditions=@qe/source packages/saga/examples/payment.ts
//   REDIS_URL=redis://127.0.0.1:6379 tsx --conditions=@qe/source packages/saga/examples/payment.ts
import { pathToFileURL } from 'node:url';
import { QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { registerWorker, SagaOrchestrator, type SagaView, toSpec002 } from '../src/index.js';

class PaymentError extends Error {
  override name = 'PaymentError';
}

export async function main(redisUrl = process.env.REDIS_URL): Promise<SagaView[]> {
  const redis = redisUrl ? new Redis(redisUrl) : undefined;
  const keyPrefix = `qe-example:${Date.now().toString(36)}`;
  const bus = new QEEventBus({
    nodeId: 'shop-1',
    ...(redisUrl
      ? { transport: createRedisTransport({ url: redisUrl, keyPrefix: `${keyPrefix}:bus` }) }
      : {}),
  });
  await bus.start();
  const shared = redis ? { redis, keyPrefix } : {};

  // workers: each is a group member on saga.command.<name>; run them in as many processes as you like
  await registerWorker(
    bus,
    'reserve_inventory',
    (ctx) => ({ reservationId: `res-${ctx.context.orderId}` }),
    shared,
  );
  await registerWorker(bus, 'release_inventory', (ctx) => ({ released: ctx.context.reservationId }), shared);
  await registerWorker(
    bus,
    'process_payment',
    (ctx) => {
      const { amount } = ctx.context as { amount: number; card: string };
      if (amount > 1000) throw new PaymentError('Insufficient funds');
      return { paymentId: 'pay-789', status: 'authorized' };
    },
    shared,
  );
  await registerWorker(bus, 'refund_payment', (ctx) => ({ refunded: ctx.context.paymentId }), shared);
  await registerWorker(bus, 'schedule_shipping', () => ({ shipmentId: 'ship-1' }), shared);

  const orchestrator = new SagaOrchestrator({ bus, ...shared });
  orchestrator.define({
    name: 'checkout',
    steps: [
      { name: 'reserve', worker: 'reserve_inventory', compensate: 'release_inventory' },
      { name: 'payment', worker: 'process_payment', compensate: 'refund_payment', timeoutMs: 5000 },
      { name: 'shipping', worker: 'schedule_shipping' },
    ],
  });
  await orchestrator.start();
  orchestrator.watch('*', (s) =>
    console.log(`  status ${s.status} ${s.currentStep ?? ''} ${s.progress.toFixed(2)}`),
  );

  const paid = await orchestrator.execute('checkout', { orderId: 'o-1', amount: 100.0, card: '****1234' });
  console.log(paid.status, paid.context); // completed { ..., paymentId: 'pay-789', status: 'authorized', shipmentId: 'ship-1' }

  const refused = await orchestrator.execute('checkout', {
    orderId: 'o-2',
    amount: 5000.0,
    card: '****1234',
  });
  console.log(refused.status, refused.error); // compensated { message: 'Insufficient funds', type: 'PaymentError', step: 'payment' }

  // the transaction's events, and the command in spec 002's snake_case form
  const history = await orchestrator.history(paid.transactionId);
  const command = history.find((e) => e.type === 'saga.command.process_payment')!;
  console.log(toSpec002(command)); // { event_type: 'CommandEvent', transaction_id, correlation_id, worker_name: 'process_payment', ... }

  await orchestrator.stop();
  await bus.stop();
  if (redis) {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  return [paid, refused];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
