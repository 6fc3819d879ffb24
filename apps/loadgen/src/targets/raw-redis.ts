import { Redis } from 'ioredis';
import {
  asPayload,
  type LoadConsumer,
  type LoadPayload,
  type LoadProducer,
  type Target,
  type TargetContext,
} from './target.js';

const GROUP = 'loadgen';
/** Approximate retention, as a bounded stream in production would have; loss from trimming would show in the ledger. */
const MAXLEN = 500_000;
const READ_COUNT = 500;

function streamKey(ctx: TargetContext): string {
  return `${ctx.keyPrefix}:raw`;
}

/**
 * The yardstick: raw ioredis Streams with a plain client, no bus. The producer
 * pipelines one XADD per event per send call; the consumer does
 * XREADGROUP (COUNT 500, BLOCK 100) then one XACK for the ids it read —
 * at-least-once, like the bus on Redis Streams.
 */
export const rawRedisTarget: Target = {
  name: 'raw-redis',
  inProcess: false,
  async consumer(ctx, onEvent): Promise<LoadConsumer> {
    const key = streamKey(ctx);
    const redis = new Redis(ctx.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await redis.connect();
    try {
      await redis.xgroup('CREATE', key, GROUP, '$', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
    let running = true;
    const name = `c-${process.pid}`;
    const loop = (async () => {
      while (running) {
        const res = (await redis.xreadgroup(
          'GROUP',
          GROUP,
          name,
          'COUNT',
          READ_COUNT,
          'BLOCK',
          100,
          'STREAMS',
          key,
          '>',
        )) as [string, [string, string[]][]][] | null;
        if (!res) continue;
        const entries = res[0]![1];
        const ids: string[] = new Array(entries.length);
        for (let i = 0; i < entries.length; i++) {
          const [id, fields] = entries[i]!;
          ids[i] = id;
          const p = asPayload(JSON.parse(fields[1]!));
          if (p) onEvent(p);
        }
        if (ids.length > 0) await redis.xack(key, GROUP, ...ids);
      }
    })();
    return {
      async close() {
        running = false;
        await loop.catch(() => {});
        redis.disconnect();
      },
    };
  },
  async producer(ctx): Promise<LoadProducer> {
    const key = streamKey(ctx);
    const redis = new Redis(ctx.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await redis.connect();
    return {
      async send(events: readonly LoadPayload[]) {
        const pipe = redis.pipeline();
        for (const p of events) pipe.xadd(key, 'MAXLEN', '~', MAXLEN, '*', 'd', JSON.stringify(p));
        const results = (await pipe.exec()) ?? [];
        const refused: number[] = [];
        results.forEach(([err], i) => {
          if (err) refused.push(i);
        });
        if (results.length === 0 && events.length > 0) throw new Error('pipeline returned nothing');
        return refused;
      },
      async close() {
        redis.disconnect();
      },
    };
  },
  async cleanup(ctx) {
    await deleteKeys(ctx.redisUrl, ctx.keyPrefix);
  },
};

/** Deletes every key under `prefix` (SCAN + UNLINK). */
export async function deleteKeys(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
  await redis.connect();
  let n = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) n += await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return n;
}
