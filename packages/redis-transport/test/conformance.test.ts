// The assertions (expect) live in the kit: every case it registers checks this transport.
import { describeTransportConformance } from '@qe/transport-conformance';
import { RedisStreamsTransport } from '../src/index.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from './helpers.js';

describeTransportConformance({
  name: 'redis-streams (single node)',
  capabilities: new RedisStreamsTransport().capabilities,
  redeliveryTimeoutMs: 8_000,
  async setup() {
    const keyPrefix = uniquePrefix('conf');
    return {
      createTransport: () =>
        new RedisStreamsTransport({ url: REDIS_URL, keyPrefix, claimIdleMs: 500, blockMs: 200 }),
      teardown: () => deletePrefix(keyPrefix),
      crash: (t) => (t as RedisStreamsTransport).kill(),
    };
  },
});
