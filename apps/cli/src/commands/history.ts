import type { AgentEvent } from '@qe/core';
import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { gatewayUrl, requestJson } from '../http.js';
import { type EventFilter, matchesFilter, parseIntOption, parseTime } from '../io.js';
import { closeBus, openBus } from '../redis.js';

export interface HistoryOptions {
  since?: string;
  limit: string;
  correlationId?: string;
}

export interface ReplayOptions {
  from?: string;
  to?: string;
  limit?: string;
  correlationId?: string;
}

/** The HTTP gateway's largest history page. */
const GATEWAY_MAX = 10_000;

async function fromGateway(ctx: Context, pattern: string, since: number | undefined, limit: number) {
  const base = await gatewayUrl(ctx);
  const q = new URLSearchParams({ pattern, limit: String(limit) });
  if (since !== undefined) q.set('since', String(since));
  const { body } = await requestJson<{ events: AgentEvent[] }>(ctx, base, `/events?${q}`, {
    server: 'gateway',
  });
  return body.events;
}

function print(ctx: Context, events: readonly AgentEvent[], what: string) {
  if (ctx.json) for (const e of events) ctx.out.line(e);
  else {
    for (const e of events) ctx.out.event(e);
    ctx.out.note(ctx.out.c.dim(`${events.length} event${events.length === 1 ? '' : 's'} ${what}`));
  }
}

/** `qe history [pattern]`: the most recent events, oldest first. */
export async function history(ctx: Context, pattern: string, filter: EventFilter, o: HistoryOptions) {
  const since = o.since === undefined ? undefined : parseTime(o.since, '--since');
  const limit = parseIntOption(o.limit, '--limit', 1, 100_000);
  let events: AgentEvent[];
  if (ctx.mode === 'redis') {
    const bus = await openBus(ctx);
    try {
      events = await bus.getRecentEvents({
        pattern,
        limit,
        ...(since === undefined ? {} : { since }),
        ...(o.correlationId === undefined ? {} : { correlationId: o.correlationId }),
      });
    } catch (err) {
      throw new CliError(`history failed: ${(err as Error).message}`);
    } finally {
      await closeBus(bus);
    }
  } else {
    // GET /events has no correlation id: fetch the range and keep the matches here
    const all = await fromGateway(
      ctx,
      pattern,
      since,
      o.correlationId ? GATEWAY_MAX : Math.min(limit, GATEWAY_MAX),
    );
    events = o.correlationId ? all.filter((e) => e.metadata?.correlationId === o.correlationId) : all;
    events = events.slice(-limit);
  }
  print(
    ctx,
    events.filter((e) => matchesFilter(e, filter)),
    'in history',
  );
}

/** `qe replay [pattern]`: every stored event in a time range, oldest first. */
export async function replay(ctx: Context, pattern: string, filter: EventFilter, o: ReplayOptions) {
  const now = Date.now();
  const from = o.from === undefined ? undefined : parseTime(o.from, '--from', now);
  const to = o.to === undefined ? undefined : parseTime(o.to, '--to', now);
  if (from !== undefined && to !== undefined && from > to)
    throw new CliError(
      `--from is after --to (${new Date(from).toISOString()} > ${new Date(to).toISOString()})`,
      undefined,
      2,
    );
  const limit = o.limit === undefined ? undefined : parseIntOption(o.limit, '--limit', 1, 10_000_000);
  if (ctx.mode === 'redis') {
    const bus = await openBus(ctx);
    let n = 0;
    try {
      await bus.replay(
        {
          pattern,
          ...(from === undefined ? {} : { from }),
          ...(to === undefined ? {} : { to }),
          ...(limit === undefined ? {} : { limit }),
          ...(o.correlationId === undefined ? {} : { correlationId: o.correlationId }),
        },
        (e) => {
          if (!matchesFilter(e, filter)) return;
          n++;
          ctx.out.event(e);
        },
      );
    } catch (err) {
      throw new CliError(`replay failed: ${(err as Error).message}`);
    } finally {
      await closeBus(bus);
    }
    if (!ctx.json) ctx.out.note(ctx.out.c.dim(`${n} event${n === 1 ? '' : 's'} replayed`));
    return;
  }
  // a broker: the HTTP gateway's history (its last 10,000 events at most), range and correlation id applied here
  const all = await fromGateway(ctx, pattern, from, GATEWAY_MAX);
  let events = all.filter(
    (e) =>
      (to === undefined || e.timestamp <= to) &&
      (o.correlationId === undefined || e.metadata?.correlationId === o.correlationId) &&
      matchesFilter(e, filter),
  );
  if (limit !== undefined) events = events.slice(0, limit);
  print(ctx, events, 'replayed');
}
