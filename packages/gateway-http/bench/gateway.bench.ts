/**
 * The gateway against a bare `node:http` server, driven by the same client in
 * the same run, so that the ratio means something on a loaded machine.
 *
 *   pnpm --filter @qe/gateway-http bench
 *
 * Each server runs in a child process of its own (the load client stays here):
 *   bare     `node:http` (h2c: `node:http2`): read the body, JSON.parse it, answer 202
 *   gateway  createHttpGateway on an in-memory bus, JWT (HS256) on, ACLs checked,
 *            POST /events with one event per request
 * HTTP/1.1: autocannon, keep-alive, no pipelining, a fixed number of connections.
 * h2c: autocannon speaks no HTTP/2, so a small loop of our own keeps a fixed
 * number of streams in flight on one session, for both arms alike.
 * Arms alternate for QE_BENCH_ROUNDS rounds of QE_BENCH_SECONDS each; medians.
 *
 * QE_BENCH_PROFILE=gateway (or bare, or all) starts that child under `node --cpu-prof`
 * (profiles in packages/gateway-http/.bench-prof/).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  connect,
  createServer as createH2cServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import autocannon from 'autocannon';
import { SignJWT } from 'jose';
import { createHttpGateway } from '../src/index.js';

const SECRET = 'bench-secret-bench-secret-bench-secret!';
const CONNECTIONS = Number(process.env.QE_BENCH_CONNECTIONS ?? 32);
const STREAMS = Number(process.env.QE_BENCH_STREAMS ?? 32);
const SECONDS = Number(process.env.QE_BENCH_SECONDS ?? 3);
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);
/** QE_BENCH_ONLY=http1 or h2c runs that protocol alone (to profile it). */
const PROTOCOLS = process.env.QE_BENCH_ONLY ? [process.env.QE_BENCH_ONLY] : ['http1', 'h2c'];
const BODY = JSON.stringify({
  type: 'bench.created',
  agentId: 'agent-1',
  data: { task: 'summarise', tokens: 1234 },
});

type Arm = 'bare' | 'gateway';

// ---------------------------------------------------------------- child: one server
async function serve(arm: Arm): Promise<void> {
  let ports: { http: number; h2c: number };
  let close: () => Promise<void>;
  if (arm === 'bare') {
    // what both protocols' responses share (their writeHead overloads do not unify)
    type Reply = {
      writeHead(status: number, headers: Record<string, string | number>): unknown;
      end(body: string): unknown;
    };
    const onRequest = (req: IncomingMessage | Http2ServerRequest, res: Reply) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const event = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type?: unknown };
        if (typeof event?.type !== 'string') {
          res.writeHead(400, { 'content-length': 0 });
          return void res.end('');
        }
        // the gateway's reply, the same size (its headers, an id as long as a UUID), so that both
        // arms cost the client the same and the ratio is the gateway's work alone
        const body = `{"ids":["${randomUUID()}"]}`;
        res.writeHead(202, {
          'content-type': 'application/json; charset=utf-8',
          'x-content-type-options': 'nosniff',
          'cache-control': 'no-store',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      });
    };
    const h1 = createServer((req, res: ServerResponse) => onRequest(req, res));
    const h2 = createH2cServer((req, res: Http2ServerResponse) => onRequest(req, res));
    await Promise.all([h1, h2].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
    ports = { http: (h1.address() as AddressInfo).port, h2c: (h2.address() as AddressInfo).port };
    close = async () => {
      h1.closeAllConnections();
      h1.close();
      h2.close();
    };
  } else {
    const bus = new QEEventBus({ nodeId: 'bench', backpressure: { maxQueueSize: 100_000 } });
    await bus.start();
    const gw = await createHttpGateway({
      bus,
      port: 0,
      h2cPort: 0,
      auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    });
    ports = { http: gw.port, h2c: gw.h2cPort! };
    close = async () => {
      await gw.close();
      await bus.stop();
    };
  }
  process.send!({ ports });
  process.on('message', async (m) => {
    if (m === 'cpu') return void process.send!({ cpu: process.cpuUsage() });
    if (m !== 'stop') return;
    await close();
    process.exit(0); // writes the --cpu-prof profile
  });
}

// ---------------------------------------------------------------- parent: the load client
interface Server {
  child: ChildProcess;
  ports: { http: number; h2c: number };
}

async function start(arm: Arm): Promise<Server> {
  const profile = ['all', arm].includes(process.env.QE_BENCH_PROFILE ?? '');
  const child = fork(fileURLToPath(import.meta.url), ['serve', arm], {
    execArgv: [
      ...process.execArgv,
      ...(profile
        ? ['--cpu-prof', `--cpu-prof-dir=${fileURLToPath(new URL('../.bench-prof', import.meta.url))}`]
        : []),
    ],
  });
  const [msg] = (await once(child, 'message')) as [{ ports: Server['ports'] }];
  return { child, ports: msg.ports };
}

/** CPU microseconds (user + system) the server's process has used so far. */
async function cpuOf(s: Server): Promise<number> {
  s.child.send('cpu');
  const [msg] = (await once(s.child, 'message')) as [{ cpu: NodeJS.CpuUsage }];
  return msg.cpu.user + msg.cpu.system;
}

interface Run {
  rate: number;
  requests: number;
}

/**
 * One run against one server: its rate, and the server's CPU time per request,
 * which a loaded machine disturbs far less than the rate (a server that waits
 * for the CPU uses none meanwhile).
 */
async function measure(s: Server, run: () => Promise<Run>): Promise<{ rate: number; cpuUs: number }> {
  const before = await cpuOf(s);
  const r = await run();
  return { rate: r.rate, cpuUs: ((await cpuOf(s)) - before) / r.requests };
}

async function stop(s: Server): Promise<void> {
  const exited = once(s.child, 'exit');
  s.child.send('stop');
  await exited;
}

async function http1(port: number, token: string, seconds = SECONDS): Promise<Run> {
  const r = await autocannon({
    url: `http://127.0.0.1:${port}/events`,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: BODY,
    connections: CONNECTIONS,
    pipelining: 1,
    duration: seconds,
  });
  if (r.non2xx > 0 || r.errors > 0 || r['2xx'] === 0)
    throw new Error(`HTTP/1.1 run failed: ${r['2xx']} 2xx, ${r.non2xx} other, ${r.errors} errors`);
  return { rate: r['2xx'] / (r.duration || seconds), requests: r['2xx'] };
}

/** `STREAMS` requests in flight on one h2c session for `seconds`; completed requests per second. */
async function h2c(port: number, token: string, seconds = SECONDS): Promise<Run> {
  const session = connect(`http://127.0.0.1:${port}`);
  await once(session, 'connect');
  const headers = {
    ':method': 'POST',
    ':path': '/events',
    'content-type': 'application/json',
    authorization: `Bearer ${token}`,
  };
  let done = 0;
  let failed = 0;
  let running = true;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const loop = async () => {
    while (running && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        const s = session.request(headers);
        let status = 0;
        s.on('response', (h) => (status = Number(h[':status'])));
        s.on('data', () => {});
        s.on('end', () => {
          if (status === 202) done++;
          else failed++;
          resolve();
        });
        s.on('error', () => {
          failed++;
          resolve();
        });
        s.end(BODY);
      });
    }
  };
  await Promise.all(Array.from({ length: STREAMS }, loop));
  running = false;
  const elapsed = (performance.now() - t0) / 1000;
  session.close();
  if (failed > 0 || done === 0) throw new Error(`h2c run failed: ${done} ok, ${failed} failed`);
  return { rate: done / elapsed, requests: done };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function main(): Promise<void> {
  const token = await new SignJWT({ qe: { pub: { allow: ['bench.*', 'agent.**'], deny: ['bench.secret'] } } })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('bench')
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(SECRET));
  const servers = { bare: await start('bare'), gateway: await start('gateway') };
  type Runs = { rate: number; cpuUs: number }[];
  const rates = {
    http1: { bare: [] as Runs, gateway: [] as Runs },
    h2c: { bare: [] as Runs, gateway: [] as Runs },
  };
  try {
    // a short warm-up per arm and protocol, not counted: the first seconds are JIT compilation
    for (const arm of ['bare', 'gateway'] as const) {
      if (PROTOCOLS.includes('http1')) await http1(servers[arm].ports.http, token, 1);
      if (PROTOCOLS.includes('h2c')) await h2c(servers[arm].ports.h2c, token, 1);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // alternate which arm goes first, so neither always meets the warmer (or busier) machine
      const order: Arm[] = round % 2 ? ['gateway', 'bare'] : ['bare', 'gateway'];
      if (PROTOCOLS.includes('http1'))
        for (const arm of order)
          rates.http1[arm].push(await measure(servers[arm], () => http1(servers[arm].ports.http, token)));
      if (PROTOCOLS.includes('h2c'))
        for (const arm of order)
          rates.h2c[arm].push(await measure(servers[arm], () => h2c(servers[arm].ports.h2c, token)));
    }
  } finally {
    await Promise.all([stop(servers.bare), stop(servers.gateway)]);
  }
  const { loadavg } = await import('node:os');
  console.log(
    `# POST /events, one event per request: gateway (JWT HS256 + ACL, in-memory bus) vs bare server`,
  );
  console.log(
    `# ${ROUNDS} rounds x ${SECONDS} s per arm, alternating; medians. load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  for (const [proto, label] of [
    ['http1', `HTTP/1.1 autocannon, ${CONNECTIONS} connections, keep-alive, no pipelining`],
    ['h2c', `h2c own client, 1 session, ${STREAMS} streams in flight`],
  ] as const) {
    if (!PROTOCOLS.includes(proto)) continue;
    const runs = rates[proto];
    const rate = (arm: Arm) => median(runs[arm].map((r) => r.rate));
    const cpu = (arm: Arm) => median(runs[arm].map((r) => r.cpuUs));
    console.log(`${label}`);
    for (const arm of ['bare', 'gateway'] as const)
      console.log(
        `  ${arm.padEnd(8)} ${fmt(rate(arm)).padStart(8)} req/s   (${runs[arm].map((r) => fmt(r.rate)).join(', ')})   server CPU ${cpu(arm).toFixed(1)} us/req`,
      );
    // each round's two runs are neighbours in time: the median of their ratios is the steadier figure
    const paired = median(runs.gateway.map((g, i) => g.rate / runs.bare[i]!.rate));
    console.log(
      `  ratio gateway/bare ${(rate('gateway') / rate('bare')).toFixed(2)} (of medians), ${paired.toFixed(2)} (median of per-round ratios)`,
    );
    // CPU per request hardly depends on how busy the machine is: the same ratio, from cost instead of rate
    console.log(
      `  ratio by server CPU per request, bare/gateway ${(cpu('bare') / cpu('gateway')).toFixed(2)}`,
    );
  }
}

if (process.argv[2] === 'serve') await serve(process.argv[3] as Arm);
else await main();
