export { groupName, Keys } from './keys.js';
export { type RedisTransportOptions, resolveOptions } from './options.js';
export { RedisDeadLetterStore } from './RedisDeadLetterStore.js';
export { GAP_REPORT_MS, RedisPubSubTransport, type SubscriberGap } from './RedisPubSubTransport.js';
export { compareIds, type RedisClient, RedisStreamsTransport } from './RedisStreamsTransport.js';
export { DEAD_LETTER_2, DELAYED_HEADER_LEN, PROMOTE_6, PUBLISH_6, REDRIVE_2, SCHEDULE_2 } from './scripts.js';

import type { RedisTransportOptions } from './options.js';
import { RedisPubSubTransport } from './RedisPubSubTransport.js';
import { RedisStreamsTransport } from './RedisStreamsTransport.js';

/** A Redis Streams transport (at-least-once). See `RedisTransportOptions`. */
export function createRedisTransport(
  options: RedisTransportOptions & { mode: 'pubsub' },
): RedisPubSubTransport;
export function createRedisTransport(
  options?: RedisTransportOptions & { mode?: 'streams' },
): RedisStreamsTransport;
export function createRedisTransport(
  options?: RedisTransportOptions,
): RedisStreamsTransport | RedisPubSubTransport;
export function createRedisTransport(
  options: RedisTransportOptions = {},
): RedisStreamsTransport | RedisPubSubTransport {
  return options.mode === 'pubsub' ? new RedisPubSubTransport(options) : new RedisStreamsTransport(options);
}
