/**
 * A WebSocket client of the broker in a chaos run (started by the coordinator
 * like `child.ts`): `ws-child.ts <producer|group|broadcast> <name> <incarnation>`.
 * It speaks the gateway's protocol (packages/gateway-ws) with the `ws` package:
 * - `producer`: the open-loop load as `{ op: 'publish', events }` batches;
 *   `a` when the gateway acks the batch, `f` when it answers an error, the
 *   connection drops first (`stored: unknown`), there is no connection
 *   (`stored: none`: nothing was sent) or no answer within 3 s;
 * - `group`: subscribes with `group: 'wsworkers'`; every delivery carries a
 *   `delivery` id and is acked after its `h` line is written (at-least-once);
 * - `broadcast`: subscribes without a group (at-most-once: what is sent
 *   while the connection is down is not sent again).
 * On a lost connection it logs `ws connection lost` (a ledger `log` line, the
 * gap signal for the broadcast verdict) and reconnects every 250 ms.
 * Environment: CHAOS_WS_URL, CHAOS_DIR, CHAOS_RATE, CHAOS_HEAP_MB.
 * stdout: `{"ready":true}` once subscribed (or, for the producer, connected), `{"mem":{...}}` every second.
 * stdin: one `ChildCommand` per line.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { getHeapStatistics } from 'node:v8';
import { epochNow } from '@qe/core';
import { drive } from '@qe/loadgen/schedule';
import WebSocket from 'ws';
import type { ChildCommand } from './faults/index.js';
import { type LedgerRecord, LedgerWriter } from './ledger.js';

const [role, name, incText] = process.argv.slice(2) as ['producer' | 'group' | 'broadcast', string, string];
const inc = Number(incText);
const env = (k: string) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const dir = env('CHAOS_DIR');
const url = env('CHAOS_WS_URL');
const ledger = new LedgerWriter(join(dir, 'ledger', `${name}.${inc}.jsonl`));
const logFile = join(dir, 'logs', `${name}.log`);
/** The WS group every `group` client joins, and the subscription sets of the ledger. */
const WS_GROUP = 'wsworkers';
const subName = role === 'group' ? `ws:group:${WS_GROUP}` : `ws:broadcast:${name}`;
const PUBLISH_TIMEOUT_MS = 3000;
const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);

// --- in-process faults (as in child.ts) -----------------------------------------
const realDateNow = Date.now;
let slowMs = 0;
let poisonLeft = 0;
let hog: number[][] = [];
let hogTimer: NodeJS.Timeout | null = null;
const heapTarget = 0.6 * Number(env('CHAOS_HEAP_MB')) * 1_048_576;
const fillHeap = () => {
  while (process.memoryUsage().heapUsed < heapTarget) hog.push(new Array(131_072).fill(Math.random()));
};
function onCommand(c: ChildCommand): void {
  if (c.cmd === 'slow') slowMs = c.ms;
  else if (c.cmd === 'poison') poisonLeft += c.count;
  else if (c.cmd === 'clock') Date.now = c.offsetMs === 0 ? realDateNow : () => realDateNow() + c.offsetMs;
  else if (c.cmd === 'pressure') {
    if (hogTimer) clearInterval(hogTimer);
    hogTimer = null;
    hog = [];
    if (c.on) {
      fillHeap();
      hogTimer = setInterval(fillHeap, 500);
    }
  } else if (c.cmd === 'stop') void stop();
}

const lastLogged = new Map<string, number>();
const log =
  (lvl: 'info' | 'warn' | 'error') =>
  (msg: string, fields?: Record<string, unknown>): void => {
    const t = epochNow();
    appendFileSync(
      logFile,
      `${new Date(t).toISOString()} ${lvl} ${msg} ${fields ? JSON.stringify(fields) : ''}\n`,
    );
    if (lvl === 'info') return;
    if (t - (lastLogged.get(msg) ?? 0) < 1000) return;
    lastLogged.set(msg, t);
    ledger.write({ k: 'log', node: name, lvl, msg, t });
  };

// --- the connection ---------------------------------------------------------------
/** A publish batch waiting for the gateway: `a`, or what to put in its `f` lines. */
type Outcome = 'a' | { code: string; stored?: string };
type Pending = { keys: string[]; timer: NodeJS.Timeout; done: (o: Outcome) => void };
let ws: WebSocket | null = null;
let open = false;
let stopping = false;
let reqSeq = 0;
const pending = new Map<number, Pending>();
let firstReady: (() => void) | null = null;
const ready = new Promise<void>((r) => (firstReady = r));

function connect(): void {
  const sock = new WebSocket(url);
  ws = sock;
  sock.on('open', () => {
    open = true;
    if (role === 'producer') firstReady?.();
    else subscribe(sock);
  });
  sock.on('message', (data) => onMessage(sock, String(data)));
  sock.on('error', () => {});
  sock.on('close', (code) => {
    if (ws !== sock) return;
    const was = open;
    open = false;
    ws = null;
    // the batches in flight: the gateway may or may not have published them
    for (const [id, p] of pending) {
      pending.delete(id);
      clearTimeout(p.timer);
      p.done({ code: 'CLOSED', stored: 'unknown' });
    }
    if (stopping) return;
    if (was) log('warn')('ws connection lost', { code });
    setTimeout(connect, 250);
  });
}

/** The id of the subscribe request in flight: an error answer to it (the broker's Redis down) is retried. */
let subscribeId = -1;
function subscribe(sock: WebSocket): void {
  if (sock !== ws || sock.readyState !== WebSocket.OPEN) return;
  subscribeId = ++reqSeq;
  sock.send(
    JSON.stringify({
      op: 'subscribe',
      id: subscribeId,
      patterns: ['chaos.**'],
      ...(role === 'group' ? { group: WS_GROUP } : {}),
    }),
  );
}

function onMessage(sock: WebSocket, text: string): void {
  let m: {
    op: string;
    id?: number;
    delivery?: string;
    subscription?: string;
    event?: { id: string; type: string; data: { key: string } };
    error?: { code: string; details?: { stored?: string } };
  };
  try {
    m = JSON.parse(text);
  } catch {
    return;
  }
  if (m.op === 'ack' && m.subscription !== undefined) {
    log('info')('subscribed', { subscription: m.subscription });
    firstReady?.();
    return;
  }
  if (m.op === 'error' && m.id === subscribeId) {
    log('warn')(`subscribe refused: ${m.error?.code}; retrying`);
    setTimeout(() => subscribe(sock), 500);
    return;
  }
  if ((m.op === 'ack' || m.op === 'error') && m.id !== undefined) {
    const p = pending.get(m.id);
    if (!p) {
      if (m.op === 'error') log('error')(`gateway error: ${m.error?.code}`);
      return;
    }
    pending.delete(m.id);
    clearTimeout(p.timer);
    p.done(
      m.op === 'ack'
        ? 'a'
        : {
            code: m.error?.code ?? 'ERROR',
            ...(m.error?.details?.stored ? { stored: m.error.details.stored } : {}),
          },
    );
    return;
  }
  if (m.op === 'event' && m.event) void handle(sock, m.event, m.delivery);
}

/** One delivery: the handler call (slow, poison) is concurrent, like the bus's; the ack goes after the `h` line. */
async function handle(
  sock: WebSocket,
  ev: { id: string; type: string; data: { key: string } },
  delivery: string | undefined,
): Promise<void> {
  if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
  const key = ev.data.key;
  // the gateway does not tell a redelivery apart: the attempt is this client's count of calls for the key
  const att = (calls.get(key) ?? 0) + 1;
  calls.set(key, att);
  const ok = ev.type !== 'chaos.poison';
  ledger.write({ k: 'h', key, id: ev.id, sub: subName, node: name, att, t: epochNow(), ok });
  // a broadcast subscriber has nowhere to dead-letter a poison event: it refuses it here
  if (!ok && delivery === undefined) ledger.write({ k: 'd', key, sub: subName, t: epochNow() });
  if (delivery !== undefined && sock.readyState === WebSocket.OPEN)
    sock.send(JSON.stringify({ op: ok ? 'ack' : 'nack', delivery }));
}
const calls = new Map<string, number>();

const stopSignal = new AbortController();
let driving: Promise<unknown> = Promise.resolve();

function runProducer(): void {
  const rate = Number(env('CHAOS_RATE'));
  driving = drive({
    rate,
    durationMs: 7 * 24 * 3_600_000,
    maxInFlight: rate * 20,
    maxBatch: 16,
    signal: stopSignal.signal,
    send: async (group) => {
      const keys: string[] = [];
      const events: unknown[] = [];
      const recs: LedgerRecord[] = [];
      for (const d of group) {
        const key = `${name}.${inc}.${d.seq}`;
        const poison = poisonLeft > 0;
        if (poison) poisonLeft--;
        keys.push(key);
        recs.push(
          poison
            ? { k: 'p', key, t: d.intendedAt, node: name, poison }
            : { k: 'p', key, t: d.intendedAt, node: name },
        );
        events.push({
          type: poison ? 'chaos.poison' : 'chaos.event',
          agentId: `chaos-${name}-a${d.seq % 8}`,
          data: { key },
        });
      }
      ledger.writeMany(recs);
      const outcome = await new Promise<Outcome>((resolve) => {
        const sock = ws;
        if (!sock || !open) return resolve({ code: 'NOT_CONNECTED', stored: 'none' });
        const id = ++reqSeq;
        const timer = setTimeout(() => {
          pending.delete(id);
          resolve({ code: 'TIMEOUT', stored: 'unknown' });
        }, PUBLISH_TIMEOUT_MS);
        pending.set(id, { keys, timer, done: resolve });
        sock.send(JSON.stringify({ op: 'publish', id, events }));
      });
      const t = epochNow();
      ledger.writeMany(
        keys.map(
          (key): LedgerRecord => (outcome === 'a' ? { k: 'a', key, t } : { k: 'f', key, t, ...outcome }),
        ),
      );
      return [];
    },
  });
}

async function stop(): Promise<void> {
  stopping = true;
  stopSignal.abort();
  await driving;
  // let acks of deliveries still being handled go out
  await new Promise((r) => setTimeout(r, slowMs + 100));
  ws?.close();
  ledger.close();
  process.exit(0);
}

process.on('disconnect', () => process.exit(0));
createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    onCommand(JSON.parse(line) as ChildCommand);
  } catch (err) {
    log('error')(`bad command ${line}: ${(err as Error).message}`);
  }
});
process.stdin.on('end', () => process.exit(0));
setInterval(() => {
  const m = process.memoryUsage();
  say({ mem: { rss: m.rss, heapUsed: m.heapUsed, heapLimit: getHeapStatistics().heap_size_limit } });
}, 1000).unref();

connect();
await ready;
if (role === 'producer') runProducer();
say({ ready: true });
