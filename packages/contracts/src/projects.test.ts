import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, QEEventBus, UnauthorizedError, ValidationError } from '@qe/core';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ContractRegistry,
  CrossProjectForbiddenError,
  type CrossProjectMessage,
  CrossProjectMessenger,
  CrossProjectUnauthorizedError,
  contractValidation,
  createAuditHandler,
  generateCredential,
  hashCredential,
  MemoryAuditLog,
  RedisAuditLog,
} from './index.js';
import { registerContractMetrics } from './prometheus.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  for (const b of buses.splice(0)) await b.stop();
});

async function setup() {
  const bus = new QEEventBus({ nodeId: 'n', retryDelay: 1 });
  buses.push(bus);
  await bus.start();
  const contracts = new ContractRegistry();
  await contracts.register({
    type: 'user.created',
    version: '1.0.0',
    owner: 'users',
    schema: { type: 'object', required: ['userId'], properties: { userId: { type: 'string' } } },
  });
  const m = new CrossProjectMessenger({ bus, contracts });
  const users = generateCredential();
  const notify = generateCredential();
  await m.registerProject({
    projectId: 'user-service',
    name: 'User Service',
    namespace: 'users',
    allowedEventTypes: ['user.created', 'user.updated'],
    allowedTargets: ['notification-service'],
    credential: users,
    principals: ['svc:users'],
  });
  await m.registerProject({
    projectId: 'notification-service',
    namespace: 'notifications',
    allowedEventTypes: [],
    allowedTargets: [],
    acceptFrom: ['user-service'],
    credential: notify,
  });
  return { bus, m, users, notify, contracts };
}

describe('CrossProjectMessenger (in memory)', () => {
  it("spec 003's example: registerProject, sendCrossProjectMessage, receive; the stored record has no credential", async () => {
    const { m, users, notify } = await setup();
    const got: CrossProjectMessage[] = [];
    await m.receive('notification-service', notify, (msg) => void got.push(msg));
    const id = await m.sendCrossProjectMessage(
      'user-service',
      'notification-service',
      'user.created',
      { userId: 'user-123', email: 'test@example.com' },
      { credential: users },
    );
    await expect.poll(() => got.length).toBe(1);
    expect(got[0]).toMatchObject({
      id,
      from: 'user-service',
      to: 'notification-service',
      type: 'user.created',
      version: '1.0.0',
      data: { userId: 'user-123' },
    });
    expect(got[0]!.event.type).toBe('xp.notifications.user.created');
    const rec = m.getProject('user-service')!;
    expect(JSON.stringify(rec)).not.toContain(users);
    expect(rec.credentialHash).toMatch(/^[0-9a-f]{64}$/);
    expect(m.listProjects().map((p) => p.projectId)).toEqual(['user-service', 'notification-service']);
  });

  it('a project registered with a credential hash (a projects file) authenticates with the credential', async () => {
    const { m, users } = await setup();
    const secret = generateCredential();
    const rec = await m.registerProject({
      projectId: 'from-file',
      namespace: 'file',
      allowedEventTypes: ['user.created'],
      allowedTargets: ['user-service'],
      credentialHash: hashCredential(secret),
    });
    expect(JSON.stringify(rec)).not.toContain(secret);
    const got: string[] = [];
    await m.receive('user-service', users, (msg) => void got.push(msg.from));
    await m.send({
      from: 'from-file',
      to: 'user-service',
      type: 'user.created',
      data: { userId: 'u' },
      credential: secret,
    });
    await expect.poll(() => got).toEqual(['from-file']);
    await expect(
      m.send({
        from: 'from-file',
        to: 'user-service',
        type: 'user.created',
        data: { userId: 'u' },
        credential: users,
      }),
    ).rejects.toBeInstanceOf(CrossProjectUnauthorizedError);
    expect(() => hashCredential('short')).toThrow(ValidationError);
  });

  it('a verified gateway principal acts as the project it maps to, and only as that one', async () => {
    const { m, notify } = await setup();
    const got: string[] = [];
    await m.receive('notification-service', notify, (msg) => void got.push(msg.id));
    const id = await m.send({
      to: 'notification-service',
      type: 'user.updated',
      data: {},
      principal: { sub: 'svc:users' },
    } as never);
    await expect.poll(() => got).toEqual([id]);
    await expect(
      m.send({
        from: 'notification-service',
        to: 'user-service',
        type: 'x.y',
        data: {},
        principal: { sub: 'svc:users' },
      }),
    ).rejects.toBeInstanceOf(CrossProjectUnauthorizedError);
    const audit = await m.audit.query();
    expect(audit.map((e) => [e.from, e.outcome, e.principal])).toEqual([
      ['user-service', 'delivered', 'svc:users'],
      ['notification-service', 'bad_credential', 'svc:users'],
    ]);
  });

  it('a message published on the bus around the policy is dead-lettered by the receiver, never handled', async () => {
    const { bus, m, notify } = await setup();
    const got: string[] = [];
    await m.receive('notification-service', notify, (msg) => void got.push(msg.id));
    const forged = await bus.publish({
      type: 'xp.notifications.user.deleted',
      agentId: 'user-service',
      data: {},
    });
    const invalid = await bus.publish({
      type: 'xp.notifications.user.created',
      agentId: 'user-service',
      data: { userId: 7 },
    });
    await expect
      .poll(async () => (await bus.deadLetters!.list()).map((d) => d.event.id).sort())
      .toEqual([forged.id, invalid.id].sort());
    expect(got).toEqual([]);
    expect(m.stats().receiveRejected).toBe(2);
  });

  it('bad input gets typed errors', async () => {
    const { bus, m, users } = await setup();
    const base = { projectId: 'p', namespace: 'p', allowedEventTypes: [], allowedTargets: [] };
    const bad: [object, string][] = [
      [{ ...base, projectId: 'bad id' }, 'projectId'],
      [{ ...base, namespace: 'Has.Caps' }, 'namespace'],
      [{ ...base, allowedEventTypes: ['a..b'] }, 'allowedEventTypes[0]'],
      [{ ...base, allowedTargets: 'x' }, 'allowedTargets'],
      [{ ...base, credential: 'short' }, 'credential'],
      [{ ...base, rateLimit: { windowMs: 0, maxMessages: 1 } }, 'rateLimit.windowMs'],
      [{ ...base, role: 'admin' }, 'project.role'],
      [{ ...base, credentialHash: { hash: 'xyz', salt: '00'.repeat(16) } }, 'credentialHash.hash'],
      [{ ...base, credentialHash: hashCredential(users), credential: users }, 'credentialHash'],
    ];
    for (const [c, field] of bad)
      await expect(m.registerProject(c as never)).rejects.toMatchObject({
        code: 'VALIDATION',
        details: { field },
      });
    const send = {
      from: 'user-service',
      to: 'notification-service',
      type: 'user.created',
      data: {},
      credential: users,
    };
    await expect(m.send({ ...send, type: 'user.*' })).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'type',
    });
    await expect(m.send({ ...send, to: '' })).rejects.toMatchObject({ code: 'VALIDATION', field: 'to' });
    await expect(m.send({ ...send, extra: 1 } as never)).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(m.send({ ...send, credential: undefined })).rejects.toBeInstanceOf(
      CrossProjectUnauthorizedError,
    );
    await expect(m.receive('nobody', 'x', () => {})).rejects.toBeInstanceOf(CrossProjectForbiddenError);
    await expect(m.receive('user-service', 'wrong-credential', () => {})).rejects.toBeInstanceOf(
      UnauthorizedError,
    );
    expect(() => new CrossProjectMessenger({ bus, channelPrefix: 'a.b' })).toThrow(ConfigError);
    expect(() => new CrossProjectMessenger({ bus: {} as never })).toThrow(ConfigError);
    expect(() => new CrossProjectMessenger(undefined as never)).toThrow(ConfigError);
    expect(() => new RedisAuditLog(undefined as never)).toThrow(ConfigError);
    expect(() => new RedisAuditLog({} as never)).toThrow(ConfigError);
    await expect(m.receive('user-service', users, 'not a function' as never)).rejects.toMatchObject({
      code: 'VALIDATION',
    });
    expect(() => new CrossProjectMessenger({ bus, nope: 1 } as never)).toThrow(ConfigError);
  });

  it('the in-memory audit log is bounded and queryable; bad queries are ValidationErrors', async () => {
    const log = new MemoryAuditLog({ maxEntries: 3 });
    for (const n of [1, 2, 3, 4])
      await log.append({ from: 'a', to: 'b', type: `t.n${n}`, messageId: String(n), outcome: 'delivered' });
    expect(await log.size()).toBe(3);
    expect((await log.query()).map((e) => e.messageId)).toEqual(['2', '3', '4']);
    expect((await log.query({ type: 't.n3' })).map((e) => e.messageId)).toEqual(['3']);
    expect((await log.query({ limit: 1 })).map((e) => e.messageId)).toEqual(['2']);
    await expect(log.query({ limit: 0 })).rejects.toMatchObject({ code: 'VALIDATION', field: 'limit' });
    await expect(log.query({ outcome: 'maybe' as never })).rejects.toMatchObject({ field: 'outcome' });
    await expect(log.query({ since: -1 })).rejects.toMatchObject({ field: 'since' });
    await expect(log.query({ colour: 1 } as never)).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'colour',
    });
    expect(() => new MemoryAuditLog({ maxEntries: 0 })).toThrow(ConfigError);
  });
});

describe('audit HTTP handler', () => {
  it('GET only, authenticated, admins only, validated parameters', async () => {
    const audit = new MemoryAuditLog();
    await audit.append({ from: 'a', to: 'b', type: 'x.y', messageId: '1', outcome: 'delivered' });
    const handler = createAuditHandler({
      audit,
      authorize: (req) => {
        if (!req.headers.authorization) throw new UnauthorizedError();
        if (req.headers.authorization === 'nothing') return undefined as never;
        return { publish: {}, subscribe: {}, admin: req.headers.authorization === 'admin' };
      },
    });
    const server = createServer(handler);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      const get = (q: string, auth?: string, method = 'GET') =>
        fetch(url + q, { method, headers: auth ? { authorization: auth } : {} });
      expect((await get('', undefined)).status).toBe(401);
      expect((await get('', 'user')).status).toBe(403);
      expect((await get('', 'nothing')).status).toBe(403);
      expect((await get('', 'admin', 'POST')).status).toBe(405);
      const bad = await get('?colour=red', 'admin');
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { details: { field: string } } }).error.details.field).toBe(
        'colour',
      );
      expect((await get('?limit=ten', 'admin')).status).toBe(400);
      const ok = await get(`?project=a&since=${new Date(0).toISOString()}&type=x.*`, 'admin');
      expect(((await ok.json()) as { entries: unknown[] }).entries).toHaveLength(1);
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(() => createAuditHandler({ audit, authorize: 1 as never })).toThrow(ConfigError);
  });
});

describe('Prometheus metrics', () => {
  it('ossa_cross_project_messages_total by outcome, the audit size, validation counts; read at scrape time', async () => {
    const { m, users } = await setup();
    const validation = contractValidation({ registry: new ContractRegistry() });
    const registry = new Registry();
    registerContractMetrics(registry, { messenger: m, validation });
    const send = {
      from: 'user-service',
      to: 'notification-service',
      data: { userId: 'u' },
      credential: users,
    };
    await m.send({ ...send, type: 'user.created' });
    await expect(m.send({ ...send, type: 'user.deleted' })).rejects.toBeInstanceOf(
      CrossProjectForbiddenError,
    );
    await expect(m.send({ ...send, type: 'user.created', data: {} })).rejects.toMatchObject({
      code: 'VALIDATION',
    });
    const text = await registry.metrics();
    expect(text).toMatch(/^ossa_cross_project_messages_total\{outcome="delivered"\} 1$/m);
    expect(text).toMatch(/^ossa_cross_project_messages_total\{outcome="forbidden_type"\} 1$/m);
    expect(text).toMatch(/^ossa_cross_project_messages_total\{outcome="invalid"\} 1$/m);
    expect(text).toMatch(/^ossa_cross_project_messages_total\{outcome="rate_limited"\} 0$/m);
    expect(text).toMatch(/^ossa_cross_project_audit_entries 3$/m);
    expect(text).toMatch(/^qe_contract_validation_total\{result="checked"\} 0$/m);
    expect(await registry.metrics()).toMatch(/^ossa_cross_project_messages_total\{outcome="delivered"\} 1$/m);
    expect(() => registerContractMetrics(new Registry(), { messenger: m }, { prefix: 'bad-' })).toThrow(
      ConfigError,
    );
  });
});
