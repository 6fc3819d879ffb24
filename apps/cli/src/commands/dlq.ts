import type { Context } from '../context.js';
import { UsageError } from '../errors.js';
import { requestJson } from '../http.js';
import { parseIntOption } from '../io.js';

interface DeadLetter {
  id: string;
  event: { id: string; type: string; agentId: string; data: unknown; timestamp: number };
  error?: { message?: string; name?: string; stack?: string } | string;
  reason?: string;
  attempts?: number;
  deadAt?: number;
  subscription?: string;
  [k: string]: unknown;
}

export interface Selector {
  pattern?: string;
  all?: boolean;
}

function errorText(d: DeadLetter): string {
  if (typeof d.error === 'string') return d.error;
  return d.error?.message ?? d.reason ?? '';
}

function selector(
  ids: string[],
  o: Selector,
  verb: string,
): { ids?: string[]; pattern?: string; all?: true } {
  const given = [ids.length > 0, o.pattern !== undefined, o.all === true].filter(Boolean).length;
  if (given !== 1)
    throw new UsageError(
      `qe dlq ${verb}: give exactly one of <id...>, --pattern <pattern> or --all`,
      `e.g. qe dlq ${verb} --pattern 'task.*'`,
    );
  if (ids.length > 0) return { ids };
  if (o.pattern !== undefined) return { pattern: o.pattern };
  return { all: true };
}

export async function dlqList(ctx: Context, o: { pattern?: string; limit: string; after?: string }) {
  const q = new URLSearchParams({ limit: String(parseIntOption(o.limit, '--limit', 1, 10_000)) });
  if (o.pattern) q.set('pattern', o.pattern);
  if (o.after) q.set('after', o.after);
  const { body } = await requestJson<{ count: number; deadLetters: DeadLetter[] }>(
    ctx,
    ctx.broker,
    `/dead-letters?${q}`,
    { admin: true },
  );
  if (ctx.json) return ctx.out.line(body);
  const c = ctx.out.c;
  ctx.out.text(c.bold(`${body.count} dead letter${body.count === 1 ? '' : 's'}`));
  for (const d of body.deadLetters)
    ctx.out.text(
      `${c.dim(d.id)}  ${c.cyan(d.event?.type ?? '?')}  ${c.dim(`attempts ${d.attempts ?? '?'}`)}  ${c.red(errorText(d))}`,
    );
}

export async function dlqShow(ctx: Context, id: string) {
  const { body } = await requestJson<DeadLetter>(ctx, ctx.broker, `/dead-letters/${encodeURIComponent(id)}`, {
    admin: true,
  });
  if (ctx.json) return ctx.out.line(body);
  const c = ctx.out.c;
  const rows: [string, string][] = [
    ['id', body.id],
    ['event', `${body.event?.type} ${body.event?.id}`],
    ['agent', body.event?.agentId ?? ''],
    ['data', JSON.stringify(body.event?.data)],
    ['error', errorText(body)],
    ['attempts', String(body.attempts ?? '')],
    ['dead at', body.deadAt ? new Date(body.deadAt).toISOString() : ''],
    ['subscription', String(body.subscription ?? '')],
  ];
  for (const [k, v] of rows) ctx.out.text(`${c.bold(k.padEnd(13))}${v}`);
}

export async function dlqRedrive(ctx: Context, ids: string[], o: Selector) {
  const { body } = await requestJson<{ redriven: number }>(ctx, ctx.broker, '/dead-letters/redrive', {
    method: 'POST',
    body: selector(ids, o, 'redrive'),
    admin: true,
  });
  if (ctx.json) ctx.out.line(body);
  else ctx.out.text(`redriven ${body.redriven}`);
}

export async function dlqPurge(ctx: Context, ids: string[], o: Selector) {
  const sel = selector(ids, o, 'purge');
  const q = new URLSearchParams();
  if (sel.ids) q.set('ids', sel.ids.join(','));
  if (sel.pattern) q.set('pattern', sel.pattern);
  if (sel.all) q.set('all', 'true');
  const { body } = await requestJson<{ purged: number }>(ctx, ctx.broker, `/dead-letters?${q}`, {
    method: 'DELETE',
    admin: true,
  });
  if (ctx.json) ctx.out.line(body);
  else ctx.out.text(`purged ${body.purged}`);
}
