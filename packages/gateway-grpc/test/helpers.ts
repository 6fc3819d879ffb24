import {
  type ChannelCredentials,
  type Client,
  credentials,
  loadPackageDefinition,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { QEEventBus, type QEEventBusConfig } from '@qe/core';
import { SignJWT } from 'jose';
import { afterEach } from 'vitest';
import { createGrpcClient, type GrpcClientOptions } from '../src/client.js';
import { createGrpcGateway, type GrpcGatewayOptions } from '../src/index.js';
import { packageDefinition } from '../src/proto.js';

export const SECRET = 'grpc-gateway-test-secret-long-enough-0123456789';
export const auth = { jwt: { algorithms: ['HS256'], secret: SECRET } };
export const everything = { qe: { pub: { allow: ['**'] }, sub: { allow: ['**'] } } };

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
export const onCleanup = (fn: () => Promise<unknown> | unknown) => cleanups.push(fn);

export const token = (claims: Record<string, unknown>, exp: string | number = '5m') =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));

/** grpc-js shares one connection between clients of the same target unless told otherwise. */
export const OWN_CONNECTION = { 'grpc.use_local_subchannel_pool': 1 };

let seq = 0;
/** A started bus and a gateway on a free port, both closed after the test; `client()` opens closed-after-test clients. */
export async function setup(
  extra: Partial<GrpcGatewayOptions> = {},
  busConfig: Partial<QEEventBusConfig> = {},
) {
  const bus = new QEEventBus({ nodeId: `grpc-${++seq}`, retryDelay: 10, maxRetryDelay: 20, ...busConfig });
  await bus.start();
  onCleanup(() => bus.stop());
  const gw = await createGrpcGateway({ bus, port: 0, ...extra });
  onCleanup(() => gw.close());
  const client = (opts: Partial<GrpcClientOptions> = {}) => {
    // each client on its own connection, as separate processes would be (grpc-js shares one per target otherwise)
    const c = createGrpcClient({ url: `127.0.0.1:${gw.port}`, channelOptions: OWN_CONNECTION, ...opts });
    onCleanup(() => c.close());
    return c;
  };
  return { bus, gw, client };
}

type RawCall = (...args: unknown[]) => unknown;
/** A plain grpc-js client of `qe.v1.EventBus`, for what the small client does not expose (raw streams, deadlines). */
export function rawClient(port: number, creds: ChannelCredentials = credentials.createInsecure()) {
  const pkg = loadPackageDefinition(packageDefinition()) as unknown as {
    qe: { v1: { EventBus: new (t: string, c: ChannelCredentials, o: object) => Client } };
    grpc: { health: { v1: { Health: new (t: string, c: ChannelCredentials, o: object) => Client } } };
  };
  const c = new pkg.qe.v1.EventBus(`127.0.0.1:${port}`, creds, OWN_CONNECTION) as unknown as Record<
    string,
    RawCall
  > &
    Client;
  const h = new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, creds, OWN_CONNECTION) as unknown as Record<
    string,
    RawCall
  > &
    Client;
  onCleanup(() => {
    c.close();
    h.close();
  });
  return { rpc: c, health: h };
}

/** A client that sends whatever bytes it is given to a method: for requests that are not valid messages. */
export function bytesClient(port: number) {
  const Ctor = makeGenericClientConstructor(
    {
      Publish: {
        path: '/qe.v1.EventBus/Publish',
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
      PublishStream: {
        path: '/qe.v1.EventBus/PublishStream',
        requestStream: true,
        responseStream: true,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    },
    'RawEventBus',
  );
  const c = new Ctor(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as Client & {
    Publish(req: Buffer, md: Metadata, cb: (err: ServiceError | null, res?: Buffer) => void): void;
    PublishStream(md: Metadata): import('@grpc/grpc-js').ClientDuplexStream<Buffer, Buffer>;
  };
  onCleanup(() => c.close());
  return c;
}

export function bearer(t?: string): Metadata {
  const md = new Metadata();
  if (t) md.set('authorization', `Bearer ${t}`);
  return md;
}

/** Calls a unary method of a raw client and resolves with its error or reply. */
export function unaryRaw<T = unknown>(
  fn: RawCall,
  self: unknown,
  req: unknown,
  md: Metadata = new Metadata(),
  opts: Record<string, unknown> = {},
): Promise<{ err: ServiceError | null; res: T | undefined }> {
  return new Promise((resolve) =>
    fn.call(self, req, md, opts, (err: ServiceError | null, res: T) => resolve({ err, res })),
  );
}
