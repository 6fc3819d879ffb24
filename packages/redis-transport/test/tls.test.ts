import { QEEventBus } from '@qe/core';
import {
  type RedisProcess,
  startRedis,
  type TestCertificate,
  testCertificate,
  waitFor,
} from '@qe/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamsTransport } from '../src/index.js';
import { uniquePrefix } from './helpers.js';

const PORT = 7140;
let tls: TestCertificate;
let server: RedisProcess;
let ca: Buffer;

beforeAll(async () => {
  tls = testCertificate();
  ca = Buffer.from(tls.cert);
  server = await startRedis(PORT, [
    '--port',
    '0',
    '--tls-port',
    String(PORT),
    '--tls-cert-file',
    tls.certFile,
    '--tls-key-file',
    tls.keyFile,
    '--tls-ca-cert-file',
    tls.certFile,
    '--tls-auth-clients',
    'no',
  ]);
}, 30_000);
afterAll(async () => {
  await server?.stop();
  server?.cleanup();
  tls?.cleanup();
});

describe('TLS', () => {
  it('publishes and consumes over rediss:// with a self-signed certificate', async () => {
    const keyPrefix = uniquePrefix('tls');
    const bus = new QEEventBus({
      nodeId: 'tls',
      transport: new RedisStreamsTransport({ url: `rediss://localhost:${PORT}`, tls: { ca }, keyPrefix }),
    });
    await bus.start();
    try {
      const got: string[] = [];
      await bus.subscribe('secure.*', (e) => void got.push(e.type)).ready;
      await bus.publish({ type: 'secure.hello', agentId: 'a', data: {} });
      await waitFor(() => got.length === 1, 'the event over TLS');
      expect((await bus.healthCheck()).transport.connected).toBe(true);
    } finally {
      await bus.stop();
    }
  });

  it('refuses a server whose certificate it does not trust, with a TRANSPORT error', async () => {
    const bus = new QEEventBus({
      nodeId: 'tls-untrusted',
      transport: new RedisStreamsTransport({
        url: `rediss://localhost:${PORT}`,
        keyPrefix: uniquePrefix('tls'),
        redisOptions: { retryStrategy: () => null, maxRetriesPerRequest: 0 },
      }),
    });
    await expect(bus.start()).rejects.toMatchObject({ code: 'TRANSPORT' });
  });
});
