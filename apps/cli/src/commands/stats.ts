import type { Context } from '../context.js';
import { CliError } from '../errors.js';
import { requestJson } from '../http.js';
import { type Colors, parseIntOption } from '../io.js';

/** The part of the broker's `/api/dashboard` (`DashboardSnapshot`) that `qe stats` shows. */
export interface Snapshot {
  service: string;
  nodeId: string;
  transport: string;
  startedAt: number;
  now: number;
  health: { status: string; reasons: readonly string[] } | null;
  totals: {
    handled: number;
    published: number;
    errors: number;
    retried: number;
    deadLettered: number;
    shed: number;
  };
  latest: {
    handledPerSec: number;
    publishedPerSec: number;
    p50: number;
    p90: number;
    p99: number;
    max: number;
    count: number;
    rssBytes: number;
  } | null;
  byFamily: Record<string, number>;
  lag: {
    queue: number;
    inFlight: number;
    backlog: number;
    groups: { group: string; pending: number; lag: number | null }[];
  };
  connections: Record<string, number>;
  circuits: { name: string; state: string; failures?: number; source: string }[];
  deadLetters: { count: number };
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n)
    ? '-'
    : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}

/** The screen of `qe stats`: a few aligned blocks, no wider than 100 columns. */
export function renderStats(s: Snapshot, url: string, c: Colors, width = 100): string {
  const health = s.health?.status ?? 'unknown';
  const hc = health === 'healthy' ? c.green : health === 'degraded' ? c.yellow : c.red;
  const l = s.latest;
  const lat = (v: number | undefined) => (l && l.count > 0 ? fmt(v, 2) : '-');
  const lines: string[] = [];
  lines.push(
    `${c.bold('qe stats')}  ${url}  ${s.service} (${s.nodeId}, ${s.transport})  up ${duration(s.now - s.startedAt)}  ${hc(health)}`,
  );
  if (s.health?.reasons.length) lines.push(c.yellow(`  ${s.health.reasons.join('; ')}`));
  lines.push('');
  lines.push(c.bold('RATES'));
  lines.push(
    `  published/s ${fmt(l?.publishedPerSec, 1).padStart(10)}   handled/s ${fmt(l?.handledPerSec, 1).padStart(10)}   ` +
      `total published ${fmt(s.totals.published)}  handled ${fmt(s.totals.handled)}`,
  );
  lines.push(
    `  errors ${fmt(s.totals.errors)}  retried ${fmt(s.totals.retried)}  dead-lettered ${fmt(s.totals.deadLettered)}  shed ${fmt(s.totals.shed)}`,
  );
  lines.push(c.bold('LATENCY (publish → handler, ms)'));
  lines.push(
    // an interval without events has no latency: '-' rather than a misleading 0
    `  p50 ${lat(l?.p50)}   p90 ${lat(l?.p90)}   p99 ${lat(l?.p99)}   max ${lat(l?.max)}   rss ${fmt((l?.rssBytes ?? 0) / 1048576, 1)} MB`,
  );
  lines.push(c.bold('LAG'));
  lines.push(
    `  queue ${fmt(s.lag.queue)}   in flight ${fmt(s.lag.inFlight)}   backlog ${fmt(s.lag.backlog)}`,
  );
  for (const g of s.lag.groups.slice(0, 8))
    lines.push(
      `  ${g.group.slice(0, 60).padEnd(60)} pending ${fmt(g.pending)}  lag ${g.lag === null ? '-' : fmt(g.lag)}`,
    );
  lines.push(c.bold('BREAKERS'));
  if (s.circuits.length === 0) lines.push(c.dim('  none'));
  for (const b of s.circuits.slice(0, 8)) {
    const sc = b.state === 'closed' ? c.green : b.state === 'open' ? c.red : c.yellow;
    lines.push(`  ${b.name.slice(0, 60).padEnd(60)} ${sc(b.state.padEnd(9))} failures ${fmt(b.failures)}`);
  }
  const conns = Object.entries(s.connections)
    .map(([k, v]) => `${k} ${v}`)
    .join('  ');
  lines.push(`${c.bold('CONNECTIONS')}  ${conns || '-'}`);
  lines.push(`${c.bold('DEAD LETTERS')}  ${fmt(s.deadLetters.count)}`);
  const families = Object.entries(s.byFamily)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join('  ');
  if (families) lines.push(`${c.bold('FAMILIES')}  ${families}`);
  return lines.map((x) => (c.enabled ? x : x.slice(0, width))).join('\n');
}

/** `qe stats`: a live view redrawn every `--interval` (q or Ctrl-C quits), or `--once`. */
export async function stats(ctx: Context, o: { once?: boolean; interval: string }) {
  const interval = parseIntOption(o.interval, '--interval', 100, 3_600_000);
  const fetchSnap = async () => (await requestJson<Snapshot>(ctx, ctx.broker, '/api/dashboard')).body;
  if (o.once) {
    const s = await fetchSnap();
    if (ctx.json) ctx.out.line(s);
    else ctx.out.text(renderStats(s, ctx.broker, ctx.out.c, process.stdout.columns ?? 100));
    return;
  }
  if (ctx.json) {
    // NDJSON: one snapshot per interval, for scripts
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    process.once('SIGTERM', () => (stop = true));
    while (!stop) {
      ctx.out.line(await fetchSnap());
      await new Promise((r) => setTimeout(r, interval));
    }
    return;
  }
  const tty = process.stdout.isTTY === true;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  process.once('SIGINT', () => finish());
  process.once('SIGTERM', () => finish());
  if (process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on('data', (b: Buffer) => {
      const k = b.toString();
      if (k === 'q' || k === '\u0003' || k === '\u001b') finish();
    });
  }
  if (tty) process.stdout.write('\x1b[?1049h\x1b[?25l'); // alternate screen, hide cursor
  let failure: unknown;
  try {
    let stopped = false;
    void done.then(() => (stopped = true));
    while (!stopped) {
      let screen: string;
      try {
        screen = renderStats(await fetchSnap(), ctx.broker, ctx.out.c, process.stdout.columns ?? 100);
      } catch (err) {
        if (!(err instanceof CliError)) throw err;
        screen = ctx.out.c.red(`${err.message}\n${err.hint ? `hint: ${err.hint}` : ''}\n(retrying)`);
      }
      const footer = ctx.out.c.dim(`\nrefreshing every ${interval} ms — q to quit`);
      process.stdout.write(tty ? `\x1b[H\x1b[2J${screen}${footer}\n` : `${screen}\n\n`);
      await Promise.race([done, new Promise((r) => setTimeout(r, interval))]);
    }
  } catch (err) {
    failure = err;
  } finally {
    if (tty) process.stdout.write('\x1b[?25h\x1b[?1049l');
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(false);
      process.stdin.pause();
    }
  }
  if (failure) throw failure;
}
