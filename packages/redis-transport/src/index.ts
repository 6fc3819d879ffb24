export { groupName, Keys } from './keys.js';
export { type RedisTransportOptions, resolveOptions } from './options.js';
export { RedisDeadLetterStore } from './RedisDeadLetterStore.js';
export { compareIds, type RedisClient, RedisStreamsTransport } from './RedisStreamsTransport.js';
export { DEAD_LETTER_2, REDRIVE_2 } from './scripts.js';

import type { RedisTransportOptions } from './options.js';
import { RedisStreamsTransport } from './RedisStreamsTransport.js';

/** A Redis Streams transport (at-least-once). See `RedisTransportOptions`. */
export function createRedisTransport(options: RedisTransportOptions = {}): RedisStreamsTransport {
  return new RedisStreamsTransport(options);
}
