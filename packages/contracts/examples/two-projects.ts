// Spec 003's cross-project example: user-service tells notification-service
// that a user was created. Each project has its own bus (own process in real
// life); contracts come from a directory of schema files; every message and
// every refusal lands in the audit log.
//
//   tsx --conditions=@qe/source packages/contracts/examples/two-projects.ts
//   REDIS_URL=redis://127.0.0.1:6379 tsx --conditions=@qe/source packages/contracts/examples/two-projects.ts
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MemoryBroker, MemoryTransport, QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { Redis } from 'ioredis';
import {
  type AuditEntry,
  ContractRegistry,
  type CrossProjectMessage,
  CrossProjectMessenger,
  contractValidation,
  generateCredential,
} from '../src/index.js';

export async function main(
  redisUrl = process.env.REDIS_URL,
  log: (...args: unknown[]) => void = console.log,
) {
  const redis = redisUrl ? new Redis(redisUrl) : undefined;
  const keyPrefix = `qe-example:${Date.now().toString(36)}`;
  const broker = new MemoryBroker();
  const transport = () =>
    redisUrl
      ? createRedisTransport({ url: redisUrl, keyPrefix: `${keyPrefix}:bus` })
      : new MemoryTransport({ broker });

  // contracts: shared by every process on Redis (validation.schemaPath of spec 000)
  const contracts = new ContractRegistry(redis ? { redis, keyPrefix: `${keyPrefix}:contracts` } : {});
  await contracts.start();
  await contracts.loadDirectory(fileURLToPath(new URL('./schemas', import.meta.url)));

  // two projects, each with its bus and messenger (projects, limits and audit shared on Redis)
  // In memory, projects live in one messenger (a process-local directory); on Redis each
  // process has its own and they all see the same projects, rate limits and audit log.
  const project = async (nodeId: string, inMemoryShare?: CrossProjectMessenger) => {
    const bus = new QEEventBus({
      nodeId,
      transport: transport(),
      middleware: [contractValidation({ registry: contracts })],
    });
    await bus.start();
    if (inMemoryShare && !redis) return { bus, messenger: inMemoryShare, shared: true };
    const messenger = new CrossProjectMessenger({
      bus,
      contracts,
      ...(redis ? { redis, keyPrefix: `${keyPrefix}:xp` } : {}),
    });
    await messenger.start();
    return { bus, messenger, shared: false };
  };
  const users = await project('user-service');
  const notifications = await project('notification-service', users.messenger);

  const usersKey = generateCredential();
  const notificationsKey = generateCredential();
  await users.messenger.registerProject({
    projectId: 'user-service',
    name: 'User Service',
    namespace: 'users',
    allowedEventTypes: ['user.created', 'user.updated'],
    allowedTargets: ['notification-service', 'analytics-service'],
    credential: usersKey,
    rateLimit: { windowMs: 1000, maxMessages: 100 },
  });
  await notifications.messenger.registerProject({
    projectId: 'notification-service',
    namespace: 'notifications',
    allowedEventTypes: [],
    allowedTargets: [],
    acceptedEventTypes: ['user.*'],
    credential: notificationsKey,
  });

  // notification-service receives what is sent to it
  const received: CrossProjectMessage[] = [];
  const arrived = new Promise<void>((resolve) => {
    void notifications.messenger.receive('notification-service', notificationsKey, (m) => {
      log(`notification-service got ${m.type} v${m.version} from ${m.from}:`, m.data);
      received.push(m);
      resolve();
    });
  });

  const messageId = await users.messenger.sendCrossProjectMessage(
    'user-service',
    'notification-service',
    'user.created',
    { userId: 'user-123', email: 'test@example.com' },
    { credential: usersKey },
  );
  await arrived;

  // refused: a type it may not send, and data that breaks the contract
  const refusals: string[] = [];
  for (const attempt of [
    { type: 'user.deleted', data: { userId: 'user-123' } },
    { type: 'user.created', data: { userId: 'bob', email: 'not-an-email' } },
  ])
    await users.messenger
      .send({ from: 'user-service', to: 'notification-service', credential: usersKey, ...attempt })
      .catch((e: { code: string; message: string }) => {
        log(`refused: ${e.code} ${e.message}`);
        refusals.push(e.code);
      });

  const audit: AuditEntry[] = await users.messenger.audit.query({ project: 'user-service' });
  for (const e of audit)
    log(`audit ${new Date(e.at).toISOString()} ${e.from} -> ${e.to} ${e.type} ${e.outcome}`);

  for (const p of [users, notifications]) {
    if (!p.shared) await p.messenger.close();
    await p.bus.stop();
  }
  await contracts.close();
  if (redis) {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  return { messageId, received, refusals, audit };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
