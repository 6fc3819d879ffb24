import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentEvent, ConfigError, type Logger, QEEventBus, ValidationError } from '@qe/core';
import { describe, expect, it } from 'vitest';
import {
  type CompatibilityMode,
  ContractDefinitionError,
  ContractRegistry,
  ContractViolationError,
  compatibilityProblems,
  contractValidation,
  IncompatibleSchemaError,
  SchemaValidationError,
  VersionRange,
} from './index.js';

const ORDER = {
  type: 'order.created',
  version: '1.0.0',
  owner: 'shop',
  schema: {
    type: 'object',
    required: ['orderId', 'amount'],
    additionalProperties: false,
    properties: {
      orderId: { type: 'string' },
      amount: { type: 'number', minimum: 0 },
      email: { type: 'string', format: 'email' },
    },
  },
};

const obj = (props: Record<string, unknown>, required: string[] = [], closed = true) => ({
  type: 'object',
  required,
  ...(closed ? { additionalProperties: false } : {}),
  properties: props,
});

describe('compatibility (as schema registries define it)', () => {
  const S = { type: 'string' };
  const N = { type: 'number' };
  const cases: [string, object, object, Record<CompatibilityMode, boolean>][] = [
    [
      'optional field added (closed)',
      obj({ a: S }, ['a']),
      obj({ a: S, b: N }, ['a']),
      { backward: true, forward: false, full: false, none: true },
    ],
    [
      'optional field added (open)',
      obj({ a: S }, ['a'], false),
      obj({ a: S, b: N }, ['a'], false),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'required field added (closed: old readers refuse it too)',
      obj({ a: S }, ['a']),
      obj({ a: S, b: N }, ['a', 'b']),
      { backward: false, forward: false, full: false, none: true },
    ],
    [
      'required field added (open)',
      obj({ a: S }, ['a'], false),
      obj({ a: S, b: N }, ['a', 'b'], false),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'field removed (closed)',
      obj({ a: S, b: N }, ['a']),
      obj({ a: S }, ['a']),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'type narrowed',
      obj({ a: { type: ['string', 'number'] } }),
      obj({ a: S }),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'integer to number',
      obj({ a: { type: 'integer' } }),
      obj({ a: N }),
      { backward: true, forward: false, full: false, none: true },
    ],
    [
      'enum widened',
      obj({ a: { enum: ['x'] } }),
      obj({ a: { enum: ['x', 'y'] } }),
      { backward: true, forward: false, full: false, none: true },
    ],
    [
      'minimum raised',
      obj({ a: { type: 'number', minimum: 0 } }),
      obj({ a: { type: 'number', minimum: 1 } }),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'description only',
      obj({ a: S }),
      obj({ a: { ...S, description: 'x' } }),
      { backward: true, forward: true, full: true, none: true },
    ],
    [
      'nested array items narrowed',
      obj({ a: { type: 'array', items: N } }),
      obj({ a: { type: 'array', items: { type: 'integer' } } }),
      { backward: false, forward: true, full: false, none: true },
    ],
    [
      'unknown keyword changed',
      obj({ a: { oneOf: [S] } }),
      obj({ a: { oneOf: [N] } }),
      { backward: false, forward: false, full: false, none: true },
    ],
  ];
  for (const [name, before, after, expected] of cases)
    it(name, () => {
      for (const mode of ['backward', 'forward', 'full', 'none'] as CompatibilityMode[])
        expect([mode, compatibilityProblems(before, after, mode).length === 0]).toEqual([
          mode,
          expected[mode],
        ]);
    });
  it('names the path that broke', () => {
    expect(
      compatibilityProblems(obj({ a: obj({ b: S }) }), obj({ a: obj({ b: S, c: S }, ['c']) }), 'backward'),
    ).toEqual(['backward: /a/c: now required']);
  });
});

describe('version ranges', () => {
  it('caret, tilde, x, comparators, exact, any', () => {
    const t = (r: string, v: string) => new VersionRange(r).test(v);
    expect([t('^1', '1.9.3'), t('^1', '2.0.0'), t('^1.2', '1.1.9')]).toEqual([true, false, false]);
    expect([t('~1.2', '1.2.7'), t('~1.2', '1.3.0')]).toEqual([true, false]);
    expect([t('1.x', '1.4'), t('1.2.x', '1.3.0'), t('*', '7')]).toEqual([true, false, true]);
    expect([t('>=1.0.0 <3', '2.9.9'), t('>=1.0.0 <3', '3.0.0'), t('2', '2.0.0'), t('2', '2.0.1')]).toEqual([
      true,
      false,
      true,
      false,
    ]);
    expect(t('^1', 'not-a-version')).toBe(false);
    expect(() => new VersionRange('^one')).toThrow(ValidationError);
    expect(() => new VersionRange('')).toThrow(ValidationError);
  });
});

describe('ContractRegistry (in memory)', () => {
  it('registers versions, checks compatibility, refuses breaking changes unless forced, emits changes', async () => {
    const reg = new ContractRegistry();
    const changes: string[] = [];
    reg.on('change', (c) => changes.push(`${c.type}@${c.version}:${c.local}`));
    await reg.register(ORDER);
    expect(await reg.register(ORDER)).toMatchObject({ version: '1.0.0', compatibility: 'backward' }); // idempotent
    await expect(reg.register({ ...ORDER, schema: { type: 'object' } })).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'version',
    });
    await expect(reg.register({ ...ORDER, version: '0.9.0' })).rejects.toBeInstanceOf(
      ContractDefinitionError,
    );
    const breaking = {
      ...ORDER,
      version: '2.0.0',
      schema: { ...ORDER.schema, required: ['orderId', 'amount', 'email'] },
    };
    const err = await reg.register(breaking).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncompatibleSchemaError);
    expect((err as IncompatibleSchemaError).reasons).toEqual(['backward: /email: now required']);
    expect(reg.versions('order.created')).toEqual(['1.0.0']);
    await reg.register(breaking, { force: true });
    expect(reg.versions('order.created')).toEqual(['1.0.0', '2.0.0']);
    expect(reg.get('order.created')?.version).toBe('2.0.0');
    expect(reg.get('order.created', '1.0.0')?.owner).toBe('shop');
    expect(changes).toEqual(['order.created@1.0.0:true', 'order.created@2.0.0:true']);
  });

  it('checks data by path against the version the event names (or the latest); patterns, most specific wins', async () => {
    const reg = new ContractRegistry();
    await reg.register(ORDER);
    await reg.register({
      type: 'order.*',
      version: '1',
      owner: 'shop',
      schema: { type: 'object', required: ['orderId'] },
    });
    await reg.register({ type: '**', version: '1', owner: 'platform', schema: true });
    const r = reg.check({ type: 'order.created', data: { orderId: 5, amount: -1, email: 'nope', extra: 1 } });
    expect(r.contract?.version).toBe('1.0.0');
    expect(r.issues.map((i) => [i.path, i.keyword])).toEqual([
      ['/data/extra', 'additionalProperties'],
      ['/data/orderId', 'type'],
      ['/data/amount', 'minimum'],
      ['/data/email', 'format'],
    ]);
    expect(reg.check({ type: 'order.paid', data: {} }).issues.map((i) => i.path)).toEqual(['/data/orderId']);
    expect(reg.contractTypeFor('order.paid')).toBe('order.*');
    expect(reg.contractTypeFor('user.created')).toBe('**');
    expect(
      reg.check({ type: 'order.created', data: { orderId: 'a', amount: 1 }, metadata: { version: '9.0.0' } })
        .issues,
    ).toMatchObject([{ path: '/metadata/version', keyword: 'contractVersion' }]);
  });

  it('withVersion stamps the latest version on an input that names none', async () => {
    const reg = new ContractRegistry();
    await reg.register(ORDER);
    await reg.register({ ...ORDER, version: '1.1.0' });
    const input = { type: 'order.created', agentId: 'a', data: {}, metadata: { correlationId: 'c' } };
    expect(reg.withVersion(input)).toEqual({ ...input, metadata: { correlationId: 'c', version: '1.1.0' } });
    expect(input.metadata).toEqual({ correlationId: 'c' });
    const pinned = { ...input, metadata: { version: '1.0.0' } };
    expect(reg.withVersion(pinned)).toBe(pinned);
    const other = { type: 'user.created', agentId: 'a', data: {} };
    expect(reg.withVersion(other)).toBe(other);
    expect(() => reg.withVersion({} as never)).toThrow(ValidationError);
  });

  it("formats: 'full' checks dates exactly, 'fast' only their shape", async () => {
    const def = { type: 'a.b', version: '1', owner: 'x', schema: { type: 'string', format: 'date' } };
    const full = new ContractRegistry();
    const fast = new ContractRegistry({ formats: 'fast' });
    await full.register(def);
    await fast.register(def);
    expect(full.check({ type: 'a.b', data: '2023-02-30' }).issues).toHaveLength(1);
    expect(fast.check({ type: 'a.b', data: '2023-02-30' }).issues).toHaveLength(0);
    expect(fast.check({ type: 'a.b', data: 'yesterday' }).issues).toHaveLength(1);
  });

  it('validates metadata when the contract has a metadata schema', async () => {
    const reg = new ContractRegistry();
    await reg.register({
      ...ORDER,
      metadataSchema: { type: 'object', required: ['correlationId'] },
    });
    expect(reg.check({ type: 'order.created', data: { orderId: 'a', amount: 1 } }).issues).toMatchObject([
      { path: '/metadata/correlationId', keyword: 'required' },
    ]);
  });

  it('refuses malformed definitions with typed errors naming the field', async () => {
    const reg = new ContractRegistry();
    const bad: [unknown, string][] = [
      [{ ...ORDER, type: 'Order..x' }, 'type'],
      [{ ...ORDER, version: 'v1' }, 'version'],
      [{ ...ORDER, schema: 'x' }, 'schema'],
      [{ ...ORDER, schema: { type: 'no-such-type' } }, 'schema'],
      [{ ...ORDER, owner: '' }, 'owner'],
      [{ ...ORDER, compatibility: 'sideways' }, 'compatibility'],
      [{ ...ORDER, colour: 'red' }, 'contract.colour'],
      [null, 'contract'],
    ];
    for (const [def, field] of bad)
      await expect(reg.register(def as never)).rejects.toMatchObject({
        code: 'VALIDATION',
        details: { field },
      });
    expect(() => new ContractRegistry({ prefix: 'x' } as never)).toThrow(ConfigError);
    expect(() => new ContractRegistry({ formats: 'quick' as never })).toThrow(ConfigError);
    await expect(reg.declare('', [])).rejects.toBeInstanceOf(ValidationError);
  });

  it('loads a directory of schema files (schemaPath) and takes contracts services declare', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qe-contracts-'));
    try {
      await writeFile(join(dir, 'order.json'), JSON.stringify([{ ...ORDER, version: '1.1.0' }, ORDER]));
      await writeFile(join(dir, 'notes.txt'), 'not a contract');
      const reg = new ContractRegistry();
      expect((await reg.loadDirectory(dir)).map((c) => c.version)).toEqual(['1.0.0', '1.1.0']);
      const declared = await reg.declare('billing', [
        { type: 'invoice.issued', version: '1', schema: { type: 'object' } },
      ]);
      expect(declared[0]).toMatchObject({ owner: 'billing', compatibility: 'backward' });
      await expect(reg.loadDirectory(join(dir, 'missing'))).rejects.toMatchObject({
        code: 'CONFIG',
        setting: 'schemaPath',
      });
      await writeFile(join(dir, 'broken.json'), '{ nope');
      await expect(new ContractRegistry().loadDirectory(dir)).rejects.toMatchObject({
        code: 'VALIDATION',
        details: { field: join(dir, 'broken.json') },
      });
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});

describe('contractValidation middleware (memory transport)', () => {
  async function setup(options: Partial<Parameters<typeof contractValidation>[0]> = {}) {
    const registry = new ContractRegistry();
    await registry.register(ORDER);
    const warnings: string[] = [];
    const logger: Logger = { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} };
    const mw = contractValidation({ registry, logger, ...options });
    const bus = new QEEventBus({ nodeId: 'n', middleware: [mw], retryDelay: 1 });
    await bus.start();
    return { registry, mw, bus, warnings };
  }

  it('strict: refuses an invalid event (all of a batch) with ajv errors by path', async () => {
    const { bus, mw } = await setup();
    const seen: string[] = [];
    bus.subscribe('order.**', (e) => void seen.push(e.id));
    const err = await bus
      .publish({ type: 'order.created', agentId: 'a', data: { orderId: 'o', amount: -3 } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaValidationError);
    expect(err).toMatchObject({ code: 'VALIDATION', field: '/data/amount', contractVersion: '1.0.0' });
    expect((err as SchemaValidationError).issues).toMatchObject([
      { path: '/data/amount', keyword: 'minimum' },
    ]);
    await expect(
      bus.publishBatch([
        { type: 'order.created', agentId: 'a', data: { orderId: 'o', amount: 1 } },
        { type: 'order.created', agentId: 'a', data: { amount: 1 } },
      ]),
    ).rejects.toMatchObject({ field: '/data/orderId' });
    const ok = await bus.publish({ type: 'order.created', agentId: 'a', data: { orderId: 'o', amount: 1 } });
    await expect.poll(() => seen).toEqual([ok.id]);
    expect(mw.stats()).toMatchObject({ publishRefused: 2 });
    await bus.stop();
  });

  it('non-strict: publishes, counts and logs; the consumer dead-letters it with the issues and never handles it', async () => {
    const { bus, mw, warnings } = await setup({ strict: false });
    const handled: string[] = [];
    bus.subscribe('order.**', (e) => void handled.push(e.id));
    const bad = await bus.publish({ type: 'order.created', agentId: 'a', data: { orderId: 1, amount: 1 } });
    const good = await bus.publish({
      type: 'order.created',
      agentId: 'a',
      data: { orderId: '1', amount: 1 },
    });
    await expect.poll(() => handled).toEqual([good.id]);
    await expect.poll(async () => (await bus.deadLetters!.list()).length).toBe(1);
    const [dl] = await bus.deadLetters!.list();
    expect(dl!.event.id).toBe(bad.id);
    expect(dl!.reason).toBe('permanent');
    expect(dl!.attempts).toBe(1);
    expect(dl!.error).toMatchObject({ name: 'ContractViolationError', code: 'PERMANENT' });
    expect(dl!.error!.message).toContain('/data/orderId must be string');
    expect(mw.stats()).toMatchObject({ publishInvalid: 1, consumeRejected: 1 });
    expect(warnings).toEqual(['event failing its contract published (non-strict)']);
    await bus.stop();
  });

  it('an event it passed on publish is not checked again on consume in this process, unless the contracts changed in between', async () => {
    const { bus, mw, registry } = await setup();
    const handled: string[] = [];
    const sub = bus.subscribe('order.**', (e) => void handled.push(e.id));
    await sub.ready;
    const first = await bus.publish({
      type: 'order.created',
      agentId: 'a',
      data: { orderId: 'o', amount: 1 },
    });
    await expect.poll(() => handled).toEqual([first.id]);
    expect(mw.stats()).toMatchObject({ checked: 2, passedOnPublish: 1, consumeRejected: 0 });
    // held back; meanwhile a breaking version becomes the latest: the event is checked again, and fails
    expect(bus.pause(sub)).toBe(true);
    const second = await bus.publish({
      type: 'order.created',
      agentId: 'a',
      data: { orderId: 'o', amount: 1 },
    });
    await registry.register(
      { ...ORDER, version: '2.0.0', schema: { type: 'object', required: ['total'] } },
      { force: true },
    );
    bus.resume(sub);
    await expect
      .poll(async () => (await bus.deadLetters!.list()).map((d) => d.event.id))
      .toEqual([second.id]);
    expect(handled).toEqual([first.id]);
    expect(mw.stats()).toMatchObject({ passedOnPublish: 1, consumeRejected: 1 });
    await bus.stop();
  });

  it('consumers accept a version range; requireContract refuses uncovered types; bad options are ConfigErrors', async () => {
    const { bus, registry } = await setup({ publish: false, accept: { 'order.created': '^1' } });
    await registry.register({ ...ORDER, version: '2.0.0', schema: true }, { force: true });
    const handled: AgentEvent[] = [];
    bus.subscribe('**', (e) => void handled.push(e));
    const v2 = await bus.publish({
      type: 'order.created',
      agentId: 'a',
      data: {},
      metadata: { version: '2.0.0' },
    });
    const v1 = await bus.publish({
      type: 'order.created',
      agentId: 'a',
      data: { orderId: 'x', amount: 0 },
      metadata: { version: '1.0.0' },
    });
    const other = await bus.publish({ type: 'user.created', agentId: 'a', data: 1 });
    await expect.poll(() => handled.map((e) => e.id)).toEqual([v1.id, other.id]);
    await expect.poll(async () => (await bus.deadLetters!.list()).map((d) => d.event.id)).toEqual([v2.id]);
    await bus.stop();

    const strictAll = await setup({ requireContract: true });
    await expect(
      strictAll.bus.publish({ type: 'user.created', agentId: 'a', data: 1 }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      field: '/type',
    });
    await strictAll.bus.stop();

    const registry2 = new ContractRegistry();
    expect(() => contractValidation({ registry: registry2, strict: 'yes' as never })).toThrow(ConfigError);
    expect(() => contractValidation({ registry: registry2, accept: { 'order.created': 'one' } })).toThrow(
      ConfigError,
    );
    expect(() => contractValidation({ registry: {} as never })).toThrow(ConfigError);
    expect(() => contractValidation(undefined as never)).toThrow(ConfigError);
    expect(() => registry2.check(null as never)).toThrow(ValidationError);
    expect(() => contractValidation({ registry: registry2, strcit: true } as never)).toThrow(ConfigError);
  });

  it('ContractViolationError is a PermanentError with the issues in details', () => {
    const e = new ContractViolationError('a.b', '1', [
      { path: '/data/x', message: 'bad', keyword: 'type', params: {} },
    ]);
    expect(e.toJSON()).toMatchObject({ code: 'PERMANENT', details: { issues: [{ path: '/data/x' }] } });
  });
});
