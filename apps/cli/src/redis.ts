import { QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { type Context, unreachable } from './context.js';
import { CliError } from './errors.js';

/** A bus on the Redis transport (same URL and key prefix as the broker's), started. */
export async function openBus(ctx: Context): Promise<QEEventBus> {
  const bus = new QEEventBus({
    nodeId: `qe-cli-${process.pid}`,
    transport: createRedisTransport({ url: ctx.redis!, keyPrefix: ctx.prefix }),
  });
  const timer = new Promise<never>((_, reject) =>
    setTimeout(
      () =>
        reject(
          new CliError(
            `cannot reach Redis at ${ctx.redis} within ${ctx.timeoutMs} ms`,
            'is redis-server running? check --redis <url> (redis://host:port/db) or raise --timeout',
          ),
        ),
      ctx.timeoutMs,
    ).unref(),
  );
  try {
    await Promise.race([bus.start(), timer]);
  } catch (err) {
    void bus.stop().catch(() => {});
    if (err instanceof CliError) throw err;
    throw unreachableRedis(ctx, err);
  }
  return bus;
}

function unreachableRedis(ctx: Context, err: unknown): CliError {
  const e = unreachable('broker', ctx.redis!, err);
  return new CliError(
    e.message.replace('the broker', 'Redis'),
    "is redis-server running? check --redis <url> (redis://host:port/db) and --prefix (the broker's EVENTBUS_KEY_PREFIX)",
  );
}

export async function closeBus(bus: QEEventBus): Promise<void> {
  await bus.stop().catch(() => {});
}
