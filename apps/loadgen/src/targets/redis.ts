import { createRedisTransport } from '@qe/redis-transport';
import { busTarget } from './bus.js';
import { deleteKeys } from './raw-redis.js';

/**
 * The bus on Redis Streams (`@qe/redis-transport`, default settings): every
 * producer and the consumer is its own `QEEventBus` node in its own process;
 * the consumer's broadcast subscription acks each entry after its handler ran.
 */
export const redisTarget = busTarget({
  name: 'redis',
  inProcess: false,
  transport: (ctx) => createRedisTransport({ url: ctx.redisUrl, keyPrefix: ctx.keyPrefix }),
  async cleanup(ctx) {
    await deleteKeys(ctx.redisUrl, ctx.keyPrefix);
  },
});
