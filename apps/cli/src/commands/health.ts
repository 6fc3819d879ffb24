import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { requestJson } from '../http.js';
import { closeBus, openBus } from '../redis.js';

interface Health {
  status: string;
  reasons?: string[];
  alerts?: unknown[];
  [k: string]: unknown;
}

/** `qe health`: exit 0 when healthy, 1 when degraded, unhealthy or unreachable. */
export async function health(ctx: Context): Promise<number> {
  let h: Health;
  let where: string;
  if (ctx.mode === 'redis') {
    where = `${ctx.redis} (prefix ${ctx.prefix})`;
    let bus: Awaited<ReturnType<typeof openBus>>;
    try {
      bus = await openBus(ctx);
    } catch (err) {
      if (ctx.json && err instanceof CliError) {
        ctx.out.line({ status: 'unreachable', error: err.message });
        return 1;
      }
      throw err;
    }
    try {
      h = (await bus.healthCheck()) as unknown as Health;
    } finally {
      await closeBus(bus);
    }
  } else {
    where = ctx.broker;
    try {
      h = (await requestJson<Health>(ctx, ctx.broker, '/health', { accept: [503] })).body;
    } catch (err) {
      if (ctx.json && err instanceof CliError) {
        ctx.out.line({ status: 'unreachable', error: err.message, ...(err.hint ? { hint: err.hint } : {}) });
        return 1;
      }
      throw err;
    }
  }
  const ok = h.status === 'healthy';
  if (ctx.json) ctx.out.line(h);
  else {
    const c = ctx.out.c;
    const sc = ok ? c.green : h.status === 'degraded' ? c.yellow : c.red;
    ctx.out.text(`${sc(h.status)}  ${where}`);
    for (const r of h.reasons ?? []) ctx.out.text(`  - ${r}`);
  }
  return ok ? 0 : 1;
}
