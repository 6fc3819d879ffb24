/**
 * The broker of a chaos run (`--broker`), started by the coordinator like
 * `child.ts`: `broker-child.ts broker <name> <incarnation>`. It is the real
 * broker (`@qe/broker`'s `loadBrokerConfig` from the environment and
 * `createBroker`, as `qe-broker` runs it), with its Redis connection through
 * the suite's proxy (REDIS_URL), so network and Redis faults hit it too.
 * Its log goes to `logs/<name>.log`; warnings and errors to the ledger as
 * `log` lines, like the other children. stdout: `{"ready":true}` once
 * listening, `{"mem":{...}}` every second. stdin: `{"cmd":"stop"}` (a clean
 * shutdown, as on SIGTERM); other commands are ignored.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { getHeapStatistics } from 'node:v8';
import { createBroker, loadBrokerConfig } from '@qe/broker';
import { epochNow, type Logger } from '@qe/core';
import type { ChildCommand } from './faults/index.js';
import { LedgerWriter } from './ledger.js';

const [, name, incText] = process.argv.slice(2) as [string, string, string];
const dir = process.env.CHAOS_DIR!;
const ledger = new LedgerWriter(join(dir, 'ledger', `${name}.${Number(incText)}.jsonl`));
const logFile = join(dir, 'logs', `${name}.log`);
const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);

const lastLogged = new Map<string, number>();
const log =
  (lvl: 'debug' | 'info' | 'warn' | 'error') =>
  (msg: string, fields?: Record<string, unknown>): void => {
    if (lvl === 'debug') return;
    const t = epochNow();
    appendFileSync(
      logFile,
      `${new Date(t).toISOString()} ${lvl} ${msg} ${fields ? JSON.stringify(fields) : ''}\n`,
    );
    if (lvl !== 'warn' && lvl !== 'error') return;
    if (t - (lastLogged.get(msg) ?? 0) < 1000) return;
    lastLogged.set(msg, t);
    ledger.write({ k: 'log', node: name, lvl, msg, t });
  };
const logger: Logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };

const broker = createBroker(loadBrokerConfig({ env: process.env }), { logger });
broker.bus.on('error', (err: Error) => log('error')(`bus error: ${err.message}`));

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  const result = await broker.stop().catch((err: Error) => `failed: ${err.message}`);
  log('info')('broker stopped', { result });
  ledger.close();
  process.exit(0);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    if ((JSON.parse(line) as ChildCommand).cmd === 'stop') void stop();
  } catch {}
});
process.stdin.on('end', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
process.on('unhandledRejection', (reason) => log('error')(`unhandled rejection: ${String(reason)}`));
setInterval(() => {
  const m = process.memoryUsage();
  say({ mem: { rss: m.rss, heapUsed: m.heapUsed, heapLimit: getHeapStatistics().heap_size_limit } });
}, 1000).unref();

await broker.start();
log('info')('broker listening', { url: broker.url });
say({ ready: true });
