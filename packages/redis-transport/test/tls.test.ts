import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QEEventBus } from '@qe/core';
import { type RedisProcess, startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamsTransport } from '../src/index.js';
import { uniquePrefix } from './helpers.js';

const PORT = 7140;
let dir: string;
let server: RedisProcess;
let ca: Buffer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'qe-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  ca = readFileSync(join(dir, 'cert.pem'));
  server = await startRedis(PORT, [
    '--port',
    '0',
    '--tls-port',
    String(PORT),
    '--tls-cert-file',
    join(dir, 'cert.pem'),
    '--tls-key-file',
    join(dir, 'key.pem'),
    '--tls-ca-cert-file',
    join(dir, 'cert.pem'),
    '--tls-auth-clients',
    'no',
  ]);
}, 30_000);
afterAll(async () => {
  await server?.stop();
  server?.cleanup();
  rmSync(dir, { recursive: true, force: true });
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
