/**
 * The gateway against a bare `ws` server, driven by the same client in the
 * same run, then client-to-client fan-out through the gateway and the bus.
 *
 *   pnpm --filter @qe/gateway-ws bench
 *
 * Each server runs in a child process of its own (the clients stay here):
 *   bare     a `ws` server that JSON.parses each publish frame and acks it
 *   corked   the same, with the acks of one tick written at once (socket corked), as the gateway does
 *   gateway  createWebSocketGateway on an in-memory bus, JWT (HS256) on, ACLs checked
 * Publish: QE_BENCH_CONNECTIONS connections, each keeping QE_BENCH_WINDOW
 * publishes (one event each) in flight; acks per second.
 * Fan-out: one publishing and one subscribing client on the gateway; events
 * per second that reach the subscriber, one event per publish frame and 100
 * per frame (`events: [...]`).
 * Arms alternate for QE_BENCH_ROUNDS rounds of QE_BENCH_SECONDS each; medians.
 *
 * QE_BENCH_PROFILE=gateway (or bare, corked, all) starts that child under `node --cpu-prof`
 * (profiles in packages/gateway-ws/.bench-prof/).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { SignJWT } from 'jose';
import WebSocket, { WebSocketServer } from 'ws';
import { createWebSocketGateway } from '../src/index.js';

const SECRET = 'bench-secret-bench-secret-bench-secret!';
const CONNECTIONS = Number(process.env.QE_BENCH_CONNECTIONS ?? 4);
const WINDOW = Number(process.env.QE_BENCH_WINDOW ?? 64);
const SECONDS = Number(process.env.QE_BENCH_SECONDS ?? 3);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);
/** QE_BENCH_ONLY=publish or fanout runs that part alone (to profile it). */
const PUBLISH = process.env.QE_BENCH_ONLY !== 'fanout';
const FANOUT = process.env.QE_BENCH_ONLY !== 'publish';
const EVENT = { type: 'bench.created', agentId: 'agent-1', data: { task: 'summarise', tokens: 1234 } };
const EVENT_JSON = JSON.stringify(EVENT);
const BATCH_JSON = (n: number) => JSON.stringify(Array.from({ length: n }, () => EVENT));

type Arm = 'bare' | 'corked' | 'gateway';

// ---------------------------------------------------------------- child: one server
async function serve(arm: Arm): Promise<void> {
  let port: number;
  let close: () => Promise<void>;
  if (arm !== 'gateway') {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
    await once(wss, 'listening');
    // `corked`: the acks of one tick leave in one write, as the gateway's do (else each send is a syscall)
    const corked: Socket[] = [];
    const uncorkAll = () => {
      for (const s of corked) s.uncork();
      corked.length = 0;
    };
    wss.on('connection', (ws, req) => {
      const socket = req.socket as Socket;
      ws.on('message', (data) => {
        const msg = JSON.parse(data.toString()) as { id: number; event?: { type?: unknown } };
        if (typeof msg.event?.type !== 'string') return void ws.send('{"op":"error"}');
        if (arm === 'corked' && !corked.includes(socket)) {
          socket.cork();
          if (corked.push(socket) === 1) process.nextTick(uncorkAll);
        }
        // the gateway's ack, the same size (an id as long as a UUID)
        ws.send(`{"op":"ack","id":${JSON.stringify(msg.id)},"ids":["${randomUUID()}"]}`);
      });
    });
    port = (wss.address() as AddressInfo).port;
    close = () => new Promise<void>((r) => wss.close(() => r()));
  } else {
    const bus = new QEEventBus({ nodeId: 'bench', backpressure: { maxQueueSize: 100_000 } });
    await bus.start();
    const gw = await createWebSocketGateway({
      bus,
      port: 0,
      maxBufferedBytes: 64 * 1024 * 1024,
      auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    });
    port = gw.port;
    close = async () => {
      await gw.close();
      await bus.stop();
    };
  }
  process.send!({ port });
  process.on('message', async (m) => {
    if (m === 'cpu') return void process.send!({ cpu: process.cpuUsage() });
    if (m !== 'stop') return;
    await close();
    process.exit(0); // writes the --cpu-prof profile
  });
}

// ---------------------------------------------------------------- parent: the clients
interface Server {
  child: ChildProcess;
  port: number;
}

async function start(arm: Arm): Promise<Server> {
  const profile = ['all', arm].includes(process.env.QE_BENCH_PROFILE ?? '');
  const dir = fileURLToPath(new URL('../.bench-prof', import.meta.url));
  const child = fork(fileURLToPath(import.meta.url), ['serve', arm], {
    execArgv: [...process.execArgv, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [])],
  });
  const [msg] = (await once(child, 'message')) as [{ port: number }];
  return { child, port: msg.port };
}

/** CPU microseconds (user + system) the server's process has used so far. */
async function cpuOf(s: Server): Promise<number> {
  s.child.send('cpu');
  const [msg] = (await once(s.child, 'message')) as [{ cpu: NodeJS.CpuUsage }];
  return msg.cpu.user + msg.cpu.system;
}

interface Run {
  rate: number;
  /** Acks (publish) or events delivered (fan-out). */
  count: number;
}

/**
 * One run against one server: its rate, and the server's CPU time per ack or
 * delivered event, which a loaded machine disturbs far less than the rate.
 */
async function measure(s: Server, run: () => Promise<Run>): Promise<{ rate: number; cpuUs: number }> {
  const before = await cpuOf(s);
  const r = await run();
  return { rate: r.rate, cpuUs: ((await cpuOf(s)) - before) / r.count };
}

async function stop(s: Server): Promise<void> {
  const exited = once(s.child, 'exit');
  s.child.send('stop');
  await exited;
}

/**
 * A client whose frames of one tick leave in one write, so that the client is
 * not what limits the rate (each `ws.send` alone is a syscall). `_socket` is
 * `ws`'s own field: a bench may lean on it.
 */
async function open(port: number, token: string): Promise<{ ws: WebSocket; send(frame: string): void }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/events`, {
    headers: { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
  });
  await once(ws, 'open');
  const socket = (ws as unknown as { _socket: Socket })._socket;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return {
    ws,
    send(frame) {
      if (!corked) {
        corked = true;
        socket.cork();
        process.nextTick(uncork);
      }
      ws.send(frame);
    },
  };
}

/** Frames with a numeric id, `window` in flight per connection, for `seconds`; acks per second. */
async function publishRate(port: number, token: string, seconds = SECONDS): Promise<Run> {
  const conns = await Promise.all(Array.from({ length: CONNECTIONS }, () => open(port, token)));
  let acked = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(
    conns.map(
      (c) =>
        new Promise<void>((resolve) => {
          let sent = 0;
          let inFlight = 0;
          const send = () => {
            inFlight++;
            c.send(`{"op":"publish","id":${++sent},"event":${EVENT_JSON}}`);
          };
          c.ws.on('message', (d) => {
            inFlight--;
            // the same check on both arms: an ack, not an error
            if ((d as Buffer).toString('latin1', 0, 12) === '{"op":"ack",') acked++;
            else failed++;
            if (performance.now() < deadline) send();
            else if (inFlight === 0) resolve();
          });
          for (let i = 0; i < WINDOW; i++) send();
        }),
    ),
  );
  const elapsed = (performance.now() - t0) / 1000;
  for (const c of conns) c.ws.close();
  if (failed > 0 || acked === 0) throw new Error(`publish run failed: ${acked} acked, ${failed} refused`);
  return { rate: acked / elapsed, count: acked };
}

/** One publisher, one subscriber on the gateway: events per second delivered to the subscriber. */
async function fanOut(port: number, token: string, perFrame: number, seconds = SECONDS): Promise<Run> {
  const [pub, sub] = await Promise.all([open(port, token), open(port, token)]);
  let subscribed!: () => void;
  const ready = new Promise<void>((r) => (subscribed = r));
  let delivered = 0;
  sub.ws.on('message', (d) => {
    const head = (d as Buffer).toString('latin1', 0, 14);
    if (head === '{"op":"event",') delivered++;
    else if (head.startsWith('{"op":"ack"')) subscribed();
    else throw new Error(`subscriber got ${d}`);
  });
  sub.send(JSON.stringify({ op: 'subscribe', id: 's', patterns: 'bench.*' }));
  await ready;
  const batch = BATCH_JSON(perFrame);
  const frame = (id: number) =>
    perFrame === 1
      ? `{"op":"publish","id":${id},"event":${EVENT_JSON}}`
      : `{"op":"publish","id":${id},"events":${batch}}`;
  const window = Math.max(1, Math.ceil(WINDOW / perFrame) * 2);
  let published = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await new Promise<void>((resolve) => {
    let sent = 0;
    let inFlight = 0;
    const send = () => {
      inFlight++;
      pub.send(frame(++sent));
    };
    pub.ws.on('message', (d) => {
      inFlight--;
      if ((d as Buffer).toString('latin1', 0, 12) !== '{"op":"ack",') throw new Error(`publisher got ${d}`);
      published += perFrame;
      if (performance.now() < deadline) send();
      else if (inFlight === 0) resolve();
    });
    for (let i = 0; i < window; i++) send();
  });
  // the last acked events are still on their way to the subscriber: wait for them (bounded)
  const until = performance.now() + 5000;
  while (delivered < published && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
  const elapsed = (performance.now() - t0) / 1000;
  pub.ws.close();
  sub.ws.close();
  if (delivered < published) throw new Error(`fan-out lost events: ${delivered} of ${published}`);
  return { rate: delivered / elapsed, count: delivered };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function main(): Promise<void> {
  const token = await new SignJWT({
    qe: { pub: { allow: ['bench.*', 'agent.**'], deny: ['bench.secret'] }, sub: { allow: ['bench.*'] } },
  })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('bench')
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(SECRET));
  const servers = {
    bare: await start('bare'),
    corked: await start('corked'),
    gateway: await start('gateway'),
  };
  type Runs = { rate: number; cpuUs: number }[];
  const rates = {
    bare: [] as Runs,
    corked: [] as Runs,
    gateway: [] as Runs,
    fan1: [] as Runs,
    fan100: [] as Runs,
  };
  try {
    // a short warm-up, not counted: the first second is JIT compilation
    if (PUBLISH)
      for (const arm of ['bare', 'corked', 'gateway'] as const)
        await publishRate(servers[arm].port, token, 1);
    if (FANOUT) {
      await fanOut(servers.gateway.port, token, 1, 1);
      await fanOut(servers.gateway.port, token, 100, 1);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // alternate which arm goes first, so neither always meets the warmer (or busier) machine
      const order: Arm[] = round % 2 ? ['gateway', 'corked', 'bare'] : ['bare', 'corked', 'gateway'];
      if (PUBLISH)
        for (const arm of order)
          rates[arm].push(await measure(servers[arm], () => publishRate(servers[arm].port, token)));
      if (FANOUT) {
        rates.fan1.push(await measure(servers.gateway, () => fanOut(servers.gateway.port, token, 1)));
        rates.fan100.push(await measure(servers.gateway, () => fanOut(servers.gateway.port, token, 100)));
      }
    }
  } finally {
    await Promise.all([stop(servers.bare), stop(servers.corked), stop(servers.gateway)]);
  }
  type Key = keyof typeof rates;
  const rate = (k: Key) => median(rates[k].map((r) => r.rate));
  const cpu = (k: Key) => median(rates[k].map((r) => r.cpuUs));
  const line = (k: Key, label: string, unit: string) =>
    console.log(
      `  ${label} ${fmt(rate(k)).padStart(8)} ${unit}   (${rates[k].map((r) => fmt(r.rate)).join(', ')})   server CPU ${cpu(k).toFixed(1)} us/${unit === 'acks/s' ? 'ack' : 'event'}`,
    );
  const ratio = (base: Key) =>
    `${(rate('gateway') / rate(base)).toFixed(2)} (of medians), ${median(
      rates.gateway.map((g, i) => g.rate / rates[base][i]!.rate),
    ).toFixed(
      2,
    )} (median of per-round ratios), ${(cpu(base) / cpu('gateway')).toFixed(2)} (by server CPU per ack)`;
  console.log(
    '# WebSocket publish, one event per frame: gateway (JWT HS256 + ACL, in-memory bus) vs bare ws',
  );
  console.log(
    `# ${ROUNDS} rounds x ${SECONDS} s per arm, alternating; medians. load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  if (PUBLISH) {
    console.log(`${CONNECTIONS} connections x ${WINDOW} publishes in flight`);
    for (const arm of ['bare', 'corked', 'gateway'] as const) line(arm, arm.padEnd(8), 'acks/s');
    console.log(`  ratio gateway/bare   ${ratio('bare')}`);
    console.log(`  ratio gateway/corked ${ratio('corked')}`);
  }
  if (!FANOUT) return;
  console.log('fan-out: ws publisher -> gateway -> bus -> gateway -> ws subscriber');
  line('fan1', '1 event per frame   ', 'events/s');
  line('fan100', '100 events per frame', 'events/s');
}

if (process.argv[2] === 'serve') await serve(process.argv[3] as Arm);
else await main();
