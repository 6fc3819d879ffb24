import { deleteKeys } from './raw-redis.js';
import {
  asPayload,
  type LoadConsumer,
  type LoadProducer,
  type Target,
  type TargetContext,
} from './target.js';

const QUEUE = 'loadgen';

function connection(ctx: TargetContext) {
  const u = new URL(ctx.redisUrl);
  const db = u.pathname.replace(/^\//, '');
  return {
    host: u.hostname,
    port: u.port === '' ? 6379 : Number(u.port),
    ...(u.password === '' ? {} : { password: decodeURIComponent(u.password) }),
    ...(db === '' ? {} : { db: Number(db) }),
    // BullMQ's workers block on Redis and require this
    maxRetriesPerRequest: null,
  };
}

/**
 * A peer library as a second yardstick: BullMQ (a job queue on Redis; a dev
 * dependency, loaded only when this target is used). Producer: `addBulk` per
 * send call; consumer: one Worker with concurrency 100, completed jobs removed.
 */
export const bullmqTarget: Target = {
  name: 'bullmq',
  inProcess: false,
  async consumer(ctx, onEvent): Promise<LoadConsumer> {
    const { Worker } = await import('bullmq');
    const worker = new Worker(
      QUEUE,
      async (job) => {
        const p = asPayload(job.data);
        if (p) onEvent(p);
      },
      { connection: connection(ctx), prefix: ctx.keyPrefix, concurrency: 100 },
    );
    await worker.waitUntilReady();
    return {
      async close() {
        await worker.close();
      },
    };
  },
  async producer(ctx): Promise<LoadProducer> {
    const { Queue } = await import('bullmq');
    const queue = new Queue(QUEUE, { connection: connection(ctx), prefix: ctx.keyPrefix });
    await queue.waitUntilReady();
    return {
      async send(events) {
        await queue.addBulk(
          events.map((p) => ({ name: 'e', data: p, opts: { removeOnComplete: true, removeOnFail: true } })),
        );
        return [];
      },
      async close() {
        await queue.close();
      },
    };
  },
  async cleanup(ctx) {
    await deleteKeys(ctx.redisUrl, ctx.keyPrefix);
  },
};
