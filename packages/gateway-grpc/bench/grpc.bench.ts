/**
 * Unary Publish calls/s through the gRPC gateway (to an in-memory bus), beside
 * a bare grpc-js server with the same proto that decodes the request, parses
 * the same JSON payload and answers with an id: what the gateway costs on top
 * of gRPC itself. Same client, same payload, same run.
 *
 *   pnpm --filter @qe/gateway-grpc bench
 */
import { randomUUID } from 'node:crypto';
import {
  type ChannelCredentials,
  type Client,
  credentials,
  loadPackageDefinition,
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { QEEventBus } from '@qe/core';
import { createGrpcGateway } from '../src/index.js';
import { EVENT_BUS_SERVICE, packageDefinition, serviceDefinition } from '../src/proto.js';

const N = Number(process.env.QE_BENCH_CALLS ?? 20_000);
const WINDOW = 64; // calls in flight
const event = {
  type: 'bench.x',
  agentId: 'a',
  dataJson: JSON.stringify({ task: 'summarise', tokens: 1234 }),
};

type Publish = (req: unknown, md: Metadata, cb: (err: Error | null) => void) => void;

/** Calls/s of N unary Publish calls with WINDOW in flight, from one client on its own connection. */
async function drive(port: number): Promise<number> {
  const pkg = loadPackageDefinition(packageDefinition()) as unknown as {
    qe: { v1: { EventBus: new (t: string, c: ChannelCredentials, o: object) => Client } };
  };
  const client = new pkg.qe.v1.EventBus(`127.0.0.1:${port}`, credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1,
  }) as unknown as Client & { Publish: Publish };
  const one = () =>
    new Promise<void>((resolve, reject) =>
      client.Publish({ event }, new Metadata(), (err) => (err ? reject(err) : resolve())),
    );
  for (let i = 0; i < 500; i++) await one(); // warm up the connection and the JIT
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next++ < N) await one();
    }),
  );
  const rate = (N / (performance.now() - t0)) * 1000;
  client.close();
  return rate;
}

async function bare(): Promise<number> {
  const server = new Server();
  server.addService(serviceDefinition(EVENT_BUS_SERVICE), {
    Publish: (
      call: ServerUnaryCall<{ event: { dataJson: string } }, unknown>,
      cb: sendUnaryData<unknown>,
    ) => {
      JSON.parse(call.request.event.dataJson);
      cb(null, { ids: [randomUUID()] });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  const rate = await drive(port);
  server.forceShutdown();
  return rate;
}

async function throughGateway(): Promise<number> {
  const bus = new QEEventBus({ nodeId: 'bench', backpressure: { maxQueueSize: 100_000 } });
  await bus.start();
  const gw = await createGrpcGateway({ bus, port: 0 });
  const rate = await drive(gw.port);
  await gw.close();
  await bus.stop();
  return rate;
}

// alternating rounds, median of each: a shared two-core machine's load and the JIT warming up hit both sides alike
const ROUNDS = Number(process.env.QE_BENCH_ROUNDS ?? 3);
const plainRuns: number[] = [];
const gwRuns: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  plainRuns.push(await bare());
  gwRuns.push(await throughGateway());
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const plain = median(plainRuns);
const gw = median(gwRuns);
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
console.log(
  `# gRPC gateway unary Publish throughput (${fmt(N)} calls, ${WINDOW} in flight, one grpc-js client, median of ${ROUNDS} alternating rounds)`,
);
console.log(
  `bare grpc-js server (decode + JSON.parse + reply) ${fmt(plain).padStart(8)} calls/s   runs ${plainRuns.map(fmt).join(', ')}`,
);
console.log(
  `gateway -> in-memory bus                          ${fmt(gw).padStart(8)} calls/s   runs ${gwRuns.map(fmt).join(', ')}   ratio ${(gw / plain).toFixed(2)}`,
);
