import { describe, expect, it, vi } from 'vitest';
import { main } from '../examples/payment.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe("the README's payment example (spec 002) runs", () => {
  for (const url of [undefined, URL_])
    it(url ? 'on Redis' : 'in memory', async () => {
      const log = vi.spyOn(console, 'log').mockImplementation(() => {});
      try {
        const [paid, refused] = await main(url);
        expect(paid).toMatchObject({
          status: 'completed',
          context: { paymentId: 'pay-789', status: 'authorized', shipmentId: 'ship-1' },
        });
        expect(refused).toMatchObject({
          status: 'compensated',
          error: { message: 'Insufficient funds', type: 'PaymentError', step: 'payment' },
        });
        const spec = log.mock.calls.map((c) => c[0]).find((x) => x?.event_type === 'CommandEvent');
        expect(spec).toMatchObject({ worker_name: 'process_payment', step_name: 'payment', retry_count: 0 });
        expect(spec.transaction_id).toBe(paid!.transactionId);
      } finally {
        log.mockRestore();
      }
    });
});
