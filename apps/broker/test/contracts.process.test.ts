/**
 * #16 in the broker: contracts from a schema directory (CONTRACTS_SCHEMA_PATH)
 * checked on every publish, projects from a file (PROJECTS_FILE), the shared
 * audit log served to admins at /audit, and refusals on the dashboard. A real
 * broker process on the real Redis; a second process's worth of bus in this
 * test sends cross-project messages through the same Redis.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContractRegistry, CrossProjectMessenger, hashCredential } from '@qe/contracts';
import { QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { deletePrefix, REDIS_URL, until } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type SpawnedBroker, startBroker } from './spawn-broker.js';

const prefix = `qe-test:broker-contracts:${Math.random().toString(36).slice(2, 10)}`;
const dir = mkdtempSync(join(tmpdir(), 'qe-broker-contracts-'));
let broker: SpawnedBroker | undefined;

afterAll(async () => {
  if (broker && broker.child.exitCode === null) {
    broker.child.kill('SIGTERM');
    await broker.exited;
  }
  await deletePrefix(prefix, REDIS_URL);
  rmSync(dir, { recursive: true, force: true });
});

describe('broker with contracts and projects (CONTRACTS_SCHEMA_PATH, PROJECTS_FILE)', () => {
  it('refuses a publish that breaks its contract, audits cross-project refusals, shows them on the dashboard', async () => {
    mkdirSchemas();
    const SHOP_SECRET = 'shop-credential-0123456789abcdef';
    writeFileSync(
      join(dir, 'projects.json'),
      JSON.stringify([
        {
          projectId: 'shop',
          namespace: 'shop',
          allowedEventTypes: ['order.**'],
          allowedTargets: ['billing'],
          credentialHash: hashCredential(SHOP_SECRET),
        },
        {
          projectId: 'billing',
          namespace: 'billing',
          allowedEventTypes: ['invoice.**'],
          allowedTargets: ['shop'],
          acceptedEventTypes: ['order.**'],
          credentialHash: hashCredential('billing-credential-0123456789abcd'),
        },
      ]),
    );
    const u = new URL(REDIS_URL);
    broker = await startBroker({
      REDIS_HOST: u.hostname,
      REDIS_PORT: u.port || '6379',
      EVENTBUS_KEY_PREFIX: prefix,
      CONTRACTS_SCHEMA_PATH: join(dir, 'schemas'),
      PROJECTS_FILE: join(dir, 'projects.json'),
      METRICS_COLLECTION_INTERVAL: '200',
    });
    const gw = broker.logs.find((l) => l.msg === 'broker listening')!.httpGateway as string;
    const post = (data: unknown) =>
      fetch(`${gw}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'order.created', agentId: 'shop-web', data }),
      });
    expect((await post({ orderId: 'o-1', amount: 12.5 })).status).toBe(202);
    const bad = await post({ orderId: 7 });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('VALIDATION');

    // a project's process on the same Redis sends through the shared projects and audit log
    const bus = new QEEventBus({
      nodeId: 'shop-process',
      transport: createRedisTransport({ url: REDIS_URL, keyPrefix: prefix }),
    });
    await bus.start();
    const redis = new Redis(REDIS_URL);
    const contracts = new ContractRegistry({ redis, keyPrefix: `${prefix}:contracts` });
    await contracts.start();
    const messenger = new CrossProjectMessenger({ bus, redis, contracts, keyPrefix: `${prefix}:xp` });
    await messenger.start();
    try {
      await messenger.send({
        from: 'shop',
        to: 'billing',
        type: 'order.created',
        data: { orderId: 'o-2', amount: 3 },
        credential: SHOP_SECRET,
      });
      await expect(
        messenger.send({
          from: 'shop',
          to: 'billing',
          type: 'invoice.paid',
          data: {},
          credential: SHOP_SECRET,
        }),
      ).rejects.toMatchObject({ code: 'FORBIDDEN' });
      await expect(
        messenger.send({
          from: 'shop',
          to: 'billing',
          type: 'order.created',
          data: {},
          credential: 'wrong-credential-0123456789',
        }),
      ).rejects.toMatchObject({ code: 'UNAUTHORIZED' });

      const audit = await until(
        async () =>
          (await (await fetch(`${broker!.url}/audit?project=shop`)).json()) as {
            entries: { outcome: string }[];
          },
        (a) => a.entries?.length === 3,
        'three audit entries',
        20_000,
      );
      expect(audit.entries.map((e) => e.outcome)).toEqual(['delivered', 'forbidden_type', 'bad_credential']);
      const dash = await until(
        async () =>
          (await (await fetch(`${broker!.url}/api/dashboard`)).json()) as {
            contracts: {
              validation: { publishRefused: number };
              crossProject: { messages: Record<string, number> };
            };
          },
        (d) => (d.contracts?.crossProject?.messages.forbidden_type ?? 0) === 1,
        'the refusal on the dashboard',
        20_000,
      );
      expect(dash.contracts.validation.publishRefused).toBe(1);
      expect(dash.contracts.crossProject.messages).toMatchObject({
        delivered: 1,
        forbidden_type: 1,
        bad_credential: 1,
      });
    } finally {
      await messenger.close();
      await contracts.close();
      await bus.stop({ leave: true });
      redis.disconnect();
    }
  }, 60_000);
});

function mkdirSchemas() {
  const schemas = join(dir, 'schemas');
  mkdirSync(schemas, { recursive: true });
  writeFileSync(
    join(schemas, 'order.created.json'),
    JSON.stringify({
      type: 'order.created',
      version: '1.0.0',
      owner: 'shop',
      compatibility: 'backward',
      schema: {
        type: 'object',
        required: ['orderId', 'amount'],
        properties: { orderId: { type: 'string' }, amount: { type: 'number' } },
      },
    }),
  );
}
