import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, startFixture, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  ContractRegistry,
  CrossProjectMessenger,
  createAuditHandler,
  generateCredential,
  IncompatibleSchemaError,
  RedisAuditLog,
} from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const r = new Redis(URL_);
const prefixes: string[] = [];
const children: ChildProcess[] = [];
const closers: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of closers.splice(0).reverse()) await c().catch(() => {});
});
afterAll(async () => {
  for (const p of prefixes) await deletePrefix(p, URL_);
  r.disconnect();
});

const newPrefix = () => {
  const p = `qe-test:contracts:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  prefixes.push(p);
  return p;
};

interface Proc {
  lines: string[];
  send(line: string): void;
  waitLine(prefix: string, timeoutMs?: number): Promise<string>;
}

function project(p: string, id: string, credential: string): Proc {
  const lines: string[] = [];
  const proc = startFixture(new URL('./fixtures/project.ts', import.meta.url), [URL_, p, id, credential], {
    stdin: 'pipe',
    onLine: (line) => lines.push(line),
  });
  children.push(proc);
  return {
    lines,
    send: (line) => proc.stdin!.write(`${line}\n`),
    async waitLine(prefix, timeoutMs = 20_000) {
      await waitFor(() => lines.some((l) => l.startsWith(prefix)), `${id} printing "${prefix}"`, timeoutMs);
      return lines.find((l) => l.startsWith(prefix))!;
    },
  };
}

const V2 = {
  type: 'object',
  required: ['orderId', 'amount', 'currency'],
  additionalProperties: false,
  properties: { orderId: { type: 'string' }, amount: { type: 'number' }, currency: { type: 'string' } },
};
const ORDER_V1 = {
  type: 'order.created',
  version: '1.0.0',
  owner: 'shop-team',
  compatibility: 'backward' as const,
  schema: {
    type: 'object',
    required: ['orderId', 'amount'],
    additionalProperties: false,
    properties: { orderId: { type: 'string', minLength: 1 }, amount: { type: 'number', minimum: 0 } },
  },
};

describe('two projects in two processes over Redis', () => {
  it('allowed messages arrive; each forbidden case is refused, counted and audited; contracts are enforced; the audit query returns exactly what happened', async () => {
    const p = newPrefix();
    const contracts = new ContractRegistry({ redis: r, keyPrefix: `${p}:contracts` });
    await contracts.start();
    closers.push(() => contracts.close());
    await contracts.register(ORDER_V1);
    const bus = new QEEventBus({
      nodeId: 'test',
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${p}:bus`, blockMs: 100 }),
    });
    await bus.start();
    closers.push(() => bus.stop());
    const admin = new CrossProjectMessenger({ bus, redis: r, keyPrefix: `${p}:xp` });
    await admin.start();
    closers.push(() => admin.close());
    const shopCred = generateCredential();
    const billingCred = generateCredential();
    await admin.registerProject({
      projectId: 'shop',
      namespace: 'shop',
      allowedEventTypes: ['order.*'],
      allowedTargets: ['billing'],
      credential: shopCred,
      rateLimit: { windowMs: 600_000, maxMessages: 3 },
    });
    await admin.registerProject({
      projectId: 'billing',
      namespace: 'billing',
      allowedEventTypes: ['invoice.*'],
      allowedTargets: ['shop'],
      acceptedEventTypes: ['order.created', 'order.cancelled'],
      credential: billingCred,
    });
    await admin.registerProject({
      projectId: 'analytics',
      namespace: 'analytics',
      allowedEventTypes: [],
      allowedTargets: [],
      credential: generateCredential(),
    });
    const t0 = Date.now();
    const shop = project(p, 'shop', shopCred);
    const billing = project(p, 'billing', billingCred);
    await Promise.all([shop.waitLine('ready'), billing.waitLine('ready')]);

    // allowed: arrives at billing, with the id the sender got
    shop.send('send 1 billing order.created {"orderId":"o-1","amount":12.5}');
    const sent1 = (await shop.waitLine('sent 1 ')).split(' ')[2]!;
    expect(await billing.waitLine(`got ${sent1} `)).toBe(
      `got ${sent1} shop order.created {"orderId":"o-1","amount":12.5}`,
    );
    billing.send('send 2 shop invoice.issued {"invoiceId":"i-1"}');
    const sent2 = (await billing.waitLine('sent 2 ')).split(' ')[2]!;
    await shop.waitLine(`got ${sent2} billing invoice.issued`);

    // each forbidden case
    shop.send('send 3 billing invoice.issued {"invoiceId":"x"}'); // type
    expect(await shop.waitLine('refused 3 ')).toBe('refused 3 FORBIDDEN forbidden_type');
    shop.send('send 4 analytics order.created {"orderId":"o-2","amount":1}'); // target
    expect(await shop.waitLine('refused 4 ')).toBe('refused 4 FORBIDDEN forbidden_target');
    shop.send('send 5 warehouse order.created {"orderId":"o-3","amount":1}'); // unknown project
    expect(await shop.waitLine('refused 5 ')).toBe('refused 5 FORBIDDEN unknown_project');
    shop.send(`send 6 billing order.created {"orderId":"o-4","amount":1} ${billingCred}`); // bad credential
    expect(await shop.waitLine('refused 6 ')).toBe('refused 6 UNAUTHORIZED bad_credential');
    shop.send('send 7 billing order.shipped {"orderId":"o-5"}'); // billing does not accept it
    expect(await shop.waitLine('refused 7 ')).toBe('refused 7 FORBIDDEN not_accepted');
    shop.send('send 8 billing order.created {"orderId":"o-6","amount":-1}'); // fails the contract
    expect(await shop.waitLine('refused 8 ')).toBe('refused 8 VALIDATION ');
    // the rate: 3 per window, one used by message 1
    const rateLines: string[] = [];
    for (const n of [9, 10, 11]) {
      shop.send(`send ${n} billing order.created {"orderId":"o-${n}","amount":${n}}`);
      rateLines.push(await answer(shop, n));
    }
    expect(rateLines).toEqual([
      expect.stringMatching(/^sent 9 /),
      expect.stringMatching(/^sent 10 /),
      'refused 11 RATE_LIMITED rate_limited',
    ]);
    const sentLater = rateLines.filter((l) => l.startsWith('sent')).map((l) => l.split(' ')[2]!);
    for (const id of sentLater) await billing.waitLine(`got ${id} shop order.created`);

    // counted: the sender's Prometheus counters
    shop.send('metrics 12');
    const text = JSON.parse((await shop.waitLine('metrics 12 ')).slice('metrics 12 '.length)) as string;
    for (const [outcome, n] of Object.entries({
      delivered: 3,
      forbidden_type: 1,
      forbidden_target: 1,
      unknown_project: 1,
      bad_credential: 1,
      not_accepted: 1,
      invalid: 1,
      rate_limited: 1,
    }))
      expect(text).toMatch(
        new RegExp(`^ossa_cross_project_messages_total\\{outcome="${outcome}"\\} ${n}$`, 'm'),
      );
    expect(text).toMatch(/^ossa_cross_project_audit_entries 11$/m);

    // audited: exactly what happened, in order
    const audit = new RedisAuditLog({ redis: r, key: `${p}:xp:audit` });
    const all = await audit.query();
    expect(all.map((e) => [e.from, e.to, e.type, e.outcome])).toEqual([
      ['shop', 'billing', 'order.created', 'delivered'],
      ['billing', 'shop', 'invoice.issued', 'delivered'],
      ['shop', 'billing', 'invoice.issued', 'forbidden_type'],
      ['shop', 'analytics', 'order.created', 'forbidden_target'],
      ['shop', 'warehouse', 'order.created', 'unknown_project'],
      ['shop', 'billing', 'order.created', 'bad_credential'],
      ['shop', 'billing', 'order.shipped', 'not_accepted'],
      ['shop', 'billing', 'order.created', 'invalid'],
      ...rateLines.map((l) => [
        'shop',
        'billing',
        'order.created',
        l.startsWith('sent') ? 'delivered' : 'rate_limited',
      ]),
    ]);
    expect(all[0]!.messageId).toBe(sent1);
    expect(all[1]!.messageId).toBe(sent2);
    expect(all.filter((e) => e.outcome !== 'delivered').every((e) => e.messageId === null && e.detail)).toBe(
      true,
    );
    expect(all.every((e) => e.at >= t0 - 5_000 && e.at <= Date.now() + 5_000)).toBe(true);
    // by project, type, outcome and time range
    expect((await audit.query({ project: 'analytics' })).map((e) => e.outcome)).toEqual(['forbidden_target']);
    expect((await audit.query({ type: 'invoice.*' })).map((e) => e.outcome)).toEqual([
      'delivered',
      'forbidden_type',
    ]);
    expect((await audit.query({ project: 'billing', outcome: 'delivered' })).length).toBe(4);
    expect(await audit.query({ since: all[2]!.at, until: all[2]!.at })).toEqual(
      all.filter((e) => e.at === all[2]!.at),
    );
    expect(await audit.query({ until: t0 - 60_000 })).toEqual([]);

    // over HTTP, for admins only
    const handler = createAuditHandler({
      audit,
      authorize: (req) => ({
        publish: { allow: [], deny: [] },
        subscribe: { allow: [], deny: [] },
        admin: req.headers.authorization === 'Bearer admin',
      }),
    });
    const server = createServer(handler);
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    closers.push(() => new Promise((res) => server.close(res)));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/audit`;
    const ok = await fetch(`${base}?project=shop&outcome=rate_limited`, {
      headers: { authorization: 'Bearer admin' },
    });
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { entries: { outcome: string }[] };
    expect(body.entries).toEqual(
      (await audit.query({ project: 'shop', outcome: 'rate_limited' })).map((e) => ({ ...e })),
    );
    const no = await fetch(base, { headers: { authorization: 'Bearer user' } });
    expect(no.status).toBe(403);
    expect(((await no.json()) as { error: { code: string } }).error.code).toBe('FORBIDDEN');
    const bad = await fetch(`${base}?since=yesterday`, { headers: { authorization: 'Bearer admin' } });
    expect(bad.status).toBe(400);
    expect(
      ((await bad.json()) as { error: { code: string; details: { field: string } } }).error,
    ).toMatchObject({
      code: 'VALIDATION',
      details: { field: 'since' },
    });

    // strict publish: refused with ajv's errors by path, nothing sent
    shop.send('publish 13 order.created {"orderId":"","amount":"12"}');
    expect(await shop.waitLine('refused 13 ')).toBe('refused 13 VALIDATION /data/orderId,/data/amount');

    // an invalid event published without validation is dead-lettered on consume, never handled
    const bad1 = await bus.publish({ type: 'order.created', agentId: 'rogue', data: { orderId: 'o-x' } });
    const dead = await waitAny2([shop, billing], `dead ${bad1.id} `);
    expect(dead).toContain('/data/amount');
    const good = await bus.publish({
      type: 'order.created',
      agentId: 'rogue',
      data: { orderId: 'o-y', amount: 1 },
    });
    await waitAny2([shop, billing], `handled ${good.id}`);
    expect([...shop.lines, ...billing.lines].some((l) => l === `handled ${bad1.id}`)).toBe(false);
    const stored = await bus.deadLetters!.list({ pattern: 'order.created' });
    expect(stored.find((d) => d.event.id === bad1.id)?.error).toMatchObject({
      name: 'ContractViolationError',
      code: 'PERMANENT',
    });

    // a breaking change is refused; a compatible one reaches every process (change events)
    await expect(
      contracts.register({
        ...ORDER_V1,
        version: '2.0.0',
        schema: V2,
      }),
    ).rejects.toBeInstanceOf(IncompatibleSchemaError);
    await contracts.register({
      ...ORDER_V1,
      version: '1.1.0',
      schema: { ...ORDER_V1.schema, properties: { ...ORDER_V1.schema.properties, note: { type: 'string' } } },
    });
    await Promise.all([
      shop.waitLine('contract order.created 1.1.0'),
      billing.waitLine('contract order.created 1.1.0'),
    ]);
    // forced: v2 exists, and a subscriber accepting ^1 dead-letters events written against it
    await contracts.register({ ...ORDER_V1, version: '2.0.0', schema: V2 }, { force: true });
    await Promise.all([
      shop.waitLine('contract order.created 2.0.0'),
      billing.waitLine('contract order.created 2.0.0'),
    ]);
    const v2 = await bus.publish({
      type: 'order.created',
      agentId: 'rogue',
      data: { orderId: 'o-z', amount: 1, currency: 'EUR' },
      metadata: { version: '2.0.0' },
    });
    expect(await waitAny2([shop, billing], `dead ${v2.id} `)).toContain('outside the accepted range ^1');
  }, 60_000);
});

describe('shared registry and audit log on Redis', () => {
  it('concurrent registrations of the next version: one wins, the other is checked against it; a late process loads everything', async () => {
    const p = newPrefix();
    const conns = [new Redis(URL_), new Redis(URL_)];
    const regs = conns.map((redis) => new ContractRegistry({ redis, keyPrefix: `${p}:contracts` }));
    await Promise.all(regs.map((x) => x.start()));
    closers.push(async () => {
      await Promise.all(regs.map((x) => x.close()));
      for (const c of conns) c.disconnect();
    });
    await regs[0]!.register(ORDER_V1);
    const attempts = await Promise.allSettled([
      regs[0]!.register({ ...ORDER_V1, version: '1.1.0' }),
      regs[1]!.register({
        ...ORDER_V1,
        version: '1.1.0',
        schema: {
          ...ORDER_V1.schema,
          properties: { ...ORDER_V1.schema.properties, note: { type: 'string' } },
        },
      }),
    ]);
    expect(attempts.filter((a) => a.status === 'fulfilled')).toHaveLength(1);
    const refused = attempts.find((a) => a.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ code: 'VALIDATION', field: 'version' });
    const late = new ContractRegistry({ redis: r, keyPrefix: `${p}:contracts` });
    await late.start();
    closers.push(() => late.close());
    expect(late.versions('order.created')).toEqual(['1.0.0', '1.1.0']);
    expect(late.get('order.created', '1.1.0')).toEqual(
      (attempts.find((a) => a.status === 'fulfilled') as PromiseFulfilledResult<unknown>).value,
    );
    // a process behind on changes still refuses a non-newer version: register reads Redis first
    await expect(late.register({ ...ORDER_V1, version: '1.0.5' })).rejects.toMatchObject({
      field: 'version',
    });
  });

  it('a message delivered but not audited is a TransportError naming it; a refusal stays a refusal', async () => {
    const p = newPrefix();
    await r.set(`${p}:broken`, 'not a stream'); // XADD on it fails with WRONGTYPE
    const bus = new QEEventBus({ nodeId: 'a' });
    await bus.start();
    closers.push(() => bus.stop());
    const m = new CrossProjectMessenger({ bus, audit: new RedisAuditLog({ redis: r, key: `${p}:broken` }) });
    const key = generateCredential();
    await m.registerProject({
      projectId: 'a',
      namespace: 'a',
      allowedEventTypes: ['x.*'],
      allowedTargets: ['a'],
      credential: key,
    });
    const got: string[] = [];
    await m.receive('a', key, (msg) => void got.push(msg.id));
    const err = await m
      .send({ from: 'a', to: 'a', type: 'x.y', data: 1, credential: key })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TRANSPORT', details: { audited: false } });
    const id = (err as { details: { messageId: string } }).details.messageId;
    await waitFor(() => got.includes(id), 'the message to arrive', 10_000);
    await expect(m.send({ from: 'a', to: 'a', type: 'z.y', data: 1, credential: key })).rejects.toMatchObject(
      {
        code: 'FORBIDDEN',
      },
    );
  });

  it('the audit stream is append-only with retention by count and by age', async () => {
    const p = newPrefix();
    const byCount = new RedisAuditLog({ redis: r, key: `${p}:a1`, maxEntries: 10 });
    for (let i = 0; i < 300; i++)
      await byCount.append({ from: 'a', to: 'b', type: 'x.y', messageId: String(i), outcome: 'delivered' });
    // approximate trimming (MAXLEN ~) keeps at least 10 and far fewer than 300
    const n = await byCount.size();
    expect(n).toBeGreaterThanOrEqual(10);
    expect(n).toBeLessThan(300);
    const kept = await byCount.query({ limit: 10_000 });
    expect(kept.at(-1)!.messageId).toBe('299');
    expect(kept.map((e) => Number(e.messageId))).toEqual(kept.map((_e, i) => 300 - kept.length + i));
    const byAge = new RedisAuditLog({ redis: r, key: `${p}:a2`, maxAgeMs: 1 });
    // entries older than 1 ms go: write old ones directly with explicit old ids, then append
    for (let i = 1; i <= 200; i++) await r.xadd(`${p}:a2`, `${i}-0`, 'e', JSON.stringify({ from: 'old' }));
    await byAge.append({ from: 'a', to: 'b', type: 'x.y', messageId: 'new', outcome: 'delivered' });
    const left = await byAge.query();
    expect(left.at(-1)!.messageId).toBe('new');
    expect(left.length).toBeLessThan(201);
    expect(() => new RedisAuditLog({ redis: r, maxAgeMs: 0 })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }),
    );
  });
});

async function answer(proc: Proc, n: number): Promise<string> {
  const is = (l: string) => l.startsWith(`sent ${n} `) || l.startsWith(`refused ${n} `);
  await waitFor(() => proc.lines.some(is), `an answer to ${n}`, 20_000);
  return proc.lines.find(is)!;
}

async function waitAny2(procs: Proc[], prefix: string): Promise<string> {
  await waitFor(() => procs.some((p) => p.lines.some((l) => l.startsWith(prefix))), prefix, 20_000);
  return procs.flatMap((p) => p.lines).find((l) => l.startsWith(prefix))!;
}
