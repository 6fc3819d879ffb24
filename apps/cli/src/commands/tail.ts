import type { AgentEvent } from '@qe/core';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { type EventFilter, matchesFilter, parsePriority } from '../io.js';
import { closeBus, openBus } from '../redis.js';
import { GatewaySocket } from '../ws.js';

export interface TailOptions {
  minPriority?: string;
  count?: number;
}

/**
 * `qe tail <pattern>`: live events until Ctrl-C (or `--count` events). Prints
 * `tailing <pattern> on <where>` on stderr once the subscription is live.
 */
export async function tail(
  ctx: Context,
  pattern: string,
  filter: EventFilter,
  o: TailOptions,
): Promise<void> {
  const minPriority =
    o.minPriority === undefined ? undefined : parsePriority(o.minPriority, '--min-priority');
  let seen = 0;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const onEvent = (e: AgentEvent) => {
    if (!matchesFilter(e, filter)) return;
    if (minPriority !== undefined && (e.priority ?? 2) > minPriority) return;
    ctx.out.event(e);
    seen++;
    if (o.count !== undefined && seen >= o.count) finish();
  };
  process.once('SIGINT', () => finish());
  process.once('SIGTERM', () => finish());
  if (ctx.mode === 'redis') {
    const bus = await openBus(ctx);
    try {
      const unsubscribe = bus.subscribe(pattern, onEvent);
      await unsubscribe.ready;
      ctx.out.note(`tailing ${pattern} on ${ctx.redis} (prefix ${ctx.prefix}); Ctrl-C to stop`);
      await done;
    } finally {
      await closeBus(bus);
    }
    return;
  }
  const socket = await GatewaySocket.connect(ctx);
  await socket.subscribe(pattern, onEvent, minPriority);
  ctx.out.note(`tailing ${pattern} on ${socket.url}; Ctrl-C to stop`);
  const ended = await Promise.race([done.then(() => null), socket.closed]);
  if (ended) {
    throw new CliError(
      `the broker closed the connection (${ended.code}${ended.reason ? ` ${ended.reason}` : ''})`,
      ended.code === 1008
        ? 'the token expired: get a new one and run qe tail again'
        : 'is the broker restarting? run qe tail again',
    );
  }
  await socket.close();
}
