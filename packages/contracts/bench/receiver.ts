/**
 * Project B of the bench's cross-process latency run: receives its messages and
 * prints `r <orderId> <epoch ms, fractional>` for each; `ready` once subscribed.
 *   receiver.ts <redisUrl> <prefix> <credential>
 */
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import { ContractRegistry, CrossProjectMessenger } from '../src/index.js';

const [url, prefix, credential] = process.argv.slice(2) as [string, string, string];
const redis = new Redis(url);
const contracts = new ContractRegistry({ redis, keyPrefix: `${prefix}:contracts` });
await contracts.start();
const bus = new QEEventBus({
  nodeId: 'billing',
  transport: new RedisStreamsTransport({ url, keyPrefix: `${prefix}:bus`, blockMs: 100 }),
});
await bus.start();
const messenger = new CrossProjectMessenger({ bus, redis, keyPrefix: `${prefix}:xp`, contracts });
await messenger.start();
let out = '';
let scheduled = false;
await messenger.receive('billing', credential, (m) => {
  out += `r ${(m.data as { orderId: string }).orderId} ${performance.timeOrigin + performance.now()}\n`;
  if (!scheduled) {
    scheduled = true;
    setImmediate(() => {
      process.stdout.write(out);
      out = '';
      scheduled = false;
    });
  }
});
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void Promise.all([messenger.close(), contracts.close(), bus.stop()]).finally(() => {
    redis.disconnect();
    process.exit(0);
  });
});
