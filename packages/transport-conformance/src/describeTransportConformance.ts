import {
  type AgentEvent,
  compilePattern,
  ErrorCodes,
  type EventHandler,
  type EventInput,
  EventPriority,
  QEEventBus,
  type QEEventBusConfig,
  type Transport,
  type TransportCapabilities,
} from '@qe/core';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from './waitFor.js';

/** One isolated namespace: every transport from `createTransport` shares it, as processes sharing one backend would. */
export interface ConformanceNamespace {
  /** A new, unconnected transport in this namespace. */
  createTransport(): Transport;
  /** Remove everything the namespace left behind (keys, brokers, processes). */
  teardown?(): Promise<void>;
  /**
   * Make `transport` die as a crashed process would: connections dropped with no
   * acks and no clean-up. Required when the transport declares `durable`.
   */
  crash?(transport: Transport): Promise<void>;
}

export interface ConformanceOptions {
  /** Shown in the suite name. */
  name: string;
  /** What the transport declares. Each case checks that the transports it creates declare exactly this. */
  capabilities: TransportCapabilities;
  /** Called once per case. */
  setup(): Promise<ConformanceNamespace>;
  /** How long redelivery after a crash may take with this transport's test settings. Default 10 s. */
  redeliveryTimeoutMs?: number;
  /** How long any single expected outcome may take. Default 10 s. */
  timeoutMs?: number;
  /** Extra config for every bus the kit creates. */
  busConfig?: Partial<QEEventBusConfig>;
}

type Data = Record<string, unknown>;
const ev = (type: string, data: unknown = {}, priority?: EventPriority): EventInput =>
  priority === undefined
    ? { type, agentId: 'conformance', data }
    : { type, agentId: 'conformance', data, priority };
const idx = (e: AgentEvent) => (e.data as { i: number }).i;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * Registers the universal transport suite (in the spirit of Watermill's
 * universal pub/sub tests). Every case gets its own namespace from `setup()` and
 * its own buses, and checks behaviour through the `QEEventBus` API.
 *
 * Cases that need a capability are registered only for transports declaring
 * it, so nothing shows up as skipped; the excluded groups are printed once.
 */
export function describeTransportConformance(options: ConformanceOptions): void {
  const caps = options.capabilities;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const redeliveryTimeoutMs = options.redeliveryTimeoutMs ?? 10_000;
  const excluded: string[] = [];
  const gate = (cap: keyof TransportCapabilities, title: string, body: () => void) => {
    if (caps[cap]) describe(title, body);
    else excluded.push(`${title} (needs ${cap})`);
  };

  describe(`transport conformance: ${options.name}`, () => {
    let ns: ConformanceNamespace | undefined;
    let buses: QEEventBus[] = [];
    let seq = 0;
    const run = `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

    async function bus(config: Partial<QEEventBusConfig> = {}): Promise<QEEventBus> {
      ns ??= await options.setup();
      const transport = ns.createTransport();
      expect(transport.capabilities).toEqual(caps);
      const b = new QEEventBus({
        nodeId: `${run}-n${++seq}`,
        retryDelay: 10,
        maxRetryDelay: 40,
        ...options.busConfig,
        ...config,
        transport,
      });
      buses.push(b);
      await b.start();
      return b;
    }
    /** Subscribe and wait until the binding is live. */
    async function sub(
      b: QEEventBus,
      pattern: string | string[],
      handler: EventHandler,
      opts: Parameters<QEEventBus['subscribe']>[2] = {},
    ) {
      const u = b.subscribe(pattern, handler, opts);
      await u.ready;
      return u;
    }
    const until = (cond: () => boolean, what: string, ms = timeoutMs) => waitFor(cond, what, ms);

    afterEach(async () => {
      const all = buses;
      buses = [];
      await Promise.all(all.map((b) => b.stop().catch(() => {})));
      await ns?.teardown?.();
      ns = undefined;
    });

    describe('broadcast', () => {
      it('every subscription on every bus receives every event exactly once', async () => {
        const bs = [await bus(), await bus(), await bus()];
        const got = bs.map(() => [] as number[]);
        const twice: number[] = [];
        for (const [k, b] of bs.entries()) {
          await sub(b, 'conf.bc.*', (e) => void got[k]!.push(idx(e)));
          if (k === 0) await sub(b, 'conf.**', (e) => void twice.push(idx(e)));
        }
        for (const i of range(30)) await bs[1]!.publish(ev('conf.bc.x', { i }));
        await until(() => got.every((g) => g.length >= 30) && twice.length >= 30, 'all buses to receive 30');
        await sleep(50);
        for (const g of got) expect([...g].sort((a, b) => a - b)).toEqual(range(30));
        expect(twice).toHaveLength(30);
      });

      it('a subscription only sees events published after it is ready', async () => {
        const a = await bus();
        const b = await bus();
        const got: number[] = [];
        await a.publish(ev('conf.late.x', { i: -1 }));
        await sub(b, 'conf.late.*', (e) => void got.push(idx(e)));
        await a.publish(ev('conf.late.x', { i: 1 }));
        await until(() => got.length >= 1, 'the later event');
        await sleep(50);
        expect(got).toEqual([1]);
      });
    });

    gate('groups', 'groups', () => {
      it('each event is handled by exactly one member of the group; broadcast still sees all', async () => {
        const bs = [await bus(), await bus(), await bus()];
        const byMember = bs.map(() => [] as string[]);
        const all: string[] = [];
        for (const [k, b] of bs.entries())
          await sub(b, 'conf.job.*', (e) => void byMember[k]!.push(e.id), {
            group: 'workers',
            maxConcurrency: 8,
          });
        await sub(bs[0]!, 'conf.job.*', (e) => void all.push(e.id));
        const ids: string[] = [];
        for (const i of range(90)) ids.push((await bs[2]!.publish(ev('conf.job.run', { i }))).id);
        const handled = () => byMember.reduce((n, m) => n + m.length, 0);
        await until(() => handled() >= 90 && all.length >= 90, '90 group deliveries');
        await sleep(100);
        const flat = byMember.flat();
        expect(flat).toHaveLength(90);
        expect(new Set(flat)).toEqual(new Set(ids));
        // how the events spread is the transport's business (a Redis consumer group gives them to whoever reads first)
        expect(new Set(all)).toEqual(new Set(ids));
      });

      it('groups with the same name but different patterns are separate groups', async () => {
        const a = await bus();
        const b = await bus();
        const x: string[] = [];
        const y: string[] = [];
        await sub(a, 'conf.gx.*', (e) => void x.push(e.type), { group: 'g' });
        await sub(b, 'conf.gy.*', (e) => void y.push(e.type), { group: 'g' });
        await a.publish(ev('conf.gx.one'));
        await a.publish(ev('conf.gy.one'));
        await until(() => x.length === 1 && y.length === 1, 'both groups');
      });
    });

    describe('patterns', () => {
      const types = [
        'task',
        'task.create',
        'task.dependency.resolve',
        'agent.task.complete',
        'agent.complete',
        'agent.a.b.complete',
        'swarm.phase.transition',
      ];
      const patterns = [
        'task.*',
        'task.**',
        'agent.*.complete',
        'agent.**.complete',
        '*',
        '**',
        'swarm.phase.transition',
      ];

      it('applies every SEMANTICS rule (*, ** incl. zero segments, lone * and **)', async () => {
        const pub = await bus();
        const subBus = await bus();
        const got = new Map<string, string[]>(patterns.map((p) => [p, []]));
        for (const p of patterns) await sub(subBus, p, (e) => void got.get(p)!.push(e.type));
        for (const t of types) await pub.publish(ev(t));
        const expected = new Map(patterns.map((p) => [p, types.filter((t) => compilePattern(p).matches(t))]));
        // the rules as SEMANTICS states them, independent of the matcher under test
        expect(expected.get('task.*')).toEqual(['task.create']);
        expect(expected.get('task.**')).toEqual(['task', 'task.create', 'task.dependency.resolve']);
        expect(expected.get('agent.*.complete')).toEqual(['agent.task.complete']);
        expect(expected.get('agent.**.complete')).toEqual([
          'agent.task.complete',
          'agent.complete',
          'agent.a.b.complete',
        ]);
        expect(expected.get('*')).toEqual(types);
        expect(expected.get('**')).toEqual(types);
        const total = [...expected.values()].reduce((n, v) => n + v.length, 0);
        await until(
          () => [...got.values()].reduce((n, v) => n + v.length, 0) >= total,
          'all pattern deliveries',
        );
        await sleep(50);
        for (const p of patterns) expect([...got.get(p)!].sort()).toEqual([...expected.get(p)!].sort());
      });

      it('takes an array of patterns and delivers an event matching several of them once', async () => {
        const b = await bus();
        const got: string[] = [];
        await sub(b, ['conf.billing.*', 'conf.payment.**', 'conf.*.charge'], (e) => void got.push(e.type));
        await b.publish(ev('conf.billing.charge'));
        await b.publish(ev('conf.payment.card.ok'));
        await b.publish(ev('conf.other.thing'));
        await until(() => got.length >= 2, 'two deliveries');
        await sleep(50);
        expect(got.sort()).toEqual(['conf.billing.charge', 'conf.payment.card.ok']);
      });

      it('rejects invalid patterns at subscribe with INVALID_PATTERN', async () => {
        const b = await bus();
        for (const bad of ['', 'a..b', '***', 'a.b*', 'UPPER.case', 'sp ace'])
          expect(() => b.subscribe(bad, () => {})).toThrow(
            expect.objectContaining({ code: ErrorCodes.INVALID_PATTERN }),
          );
      });
    });

    gate('ordering', 'ordering', () => {
      it('one publisher’s events of one priority arrive in publish order', async () => {
        const a = await bus();
        const b = await bus();
        const got: number[] = [];
        await sub(b, 'conf.ord.*', (e) => void got.push(idx(e)));
        await Promise.all(range(300).map((i) => a.publish(ev('conf.ord.x', { i }))));
        await until(() => got.length >= 300, '300 ordered events');
        expect(got).toEqual(range(300));
      });
    });

    gate('priorities', 'priority', () => {
      it('a CRITICAL event overtakes a BULK backlog, and BULK still drains', async () => {
        const a = await bus();
        const order: string[] = [];
        const gate_ = { open: false };
        await sub(
          a,
          'conf.prio.*',
          async (e) => {
            while (!gate_.open) await sleep(2);
            order.push(e.type);
          },
          { maxConcurrency: 1 },
        );
        await a.publishBatch(range(600).map((i) => ev('conf.prio.bulk', { i }, EventPriority.BULK)));
        await a.publish(ev('conf.prio.critical', {}, EventPriority.CRITICAL));
        // let the transport hand its backlog over before the handler starts taking events
        await sleep(200);
        gate_.open = true;
        await until(() => order.length >= 601, 'the backlog to drain', Math.max(timeoutMs, 20_000));
        const pos = order.indexOf('conf.prio.critical');
        expect(pos).toBeGreaterThanOrEqual(0);
        expect(pos).toBeLessThan(300);
      });
    });

    describe('batches', () => {
      it('publishBatch delivers every event, in order', async () => {
        const a = await bus();
        const got: number[] = [];
        await sub(a, 'conf.batch.*', (e) => void got.push(idx(e)));
        await a.publishBatch(range(50).map((i) => ev('conf.batch.x', { i })));
        await until(() => got.length >= 50, '50 batch events');
        expect(caps.ordering ? got : [...got].sort((x, y) => x - y)).toEqual(range(50));
      });

      it('an invalid batch is rejected whole and nothing is delivered', async () => {
        const a = await bus();
        const got: number[] = [];
        await sub(a, 'conf.badbatch.*', (e) => void got.push(idx(e)));
        const err = await a
          .publishBatch([ev('conf.badbatch.x', { i: 1 }), { type: 'conf.badbatch.x', agentId: '', data: 2 }])
          .catch((e: unknown) => e);
        expect(err).toMatchObject({ code: ErrorCodes.VALIDATION, field: 'events[1].agentId' });
        await a.publish(ev('conf.badbatch.x', { i: 3 }));
        await until(() => got.length >= 1, 'the valid event');
        await sleep(50);
        expect(got).toEqual([3]);
      });

      it('subscribeBatch hands over arrays by size and by timeout', async () => {
        const a = await bus();
        const sizes: number[] = [];
        const u = a.subscribeBatch('conf.sb.*', (events) => void sizes.push(events.length), {
          batchSize: 10,
          batchTimeoutMs: 50,
        });
        await u.ready;
        await a.publishBatch(range(25).map((i) => ev('conf.sb.x', { i })));
        await until(() => sizes.reduce((x, y) => x + y, 0) >= 25, '25 events in batches');
        expect(sizes.reduce((x, y) => x + y, 0)).toBe(25);
        expect(Math.max(...sizes)).toBeLessThanOrEqual(10);
      });
    });

    describe('subscription control', () => {
      it('unsubscribe returns true once, then false, and stops deliveries', async () => {
        const a = await bus();
        const got: number[] = [];
        const u = await sub(a, 'conf.unsub.*', (e) => void got.push(idx(e)));
        await a.publish(ev('conf.unsub.x', { i: 1 }));
        await until(() => got.length === 1, 'first event');
        expect(a.unsubscribe(u.id)).toBe(true);
        expect(a.unsubscribe(u.id)).toBe(false);
        await a.publish(ev('conf.unsub.x', { i: 2 }));
        await sleep(150);
        expect(got).toEqual([1]);
      });

      it('pause holds events and resume delivers all of them', async () => {
        const a = await bus();
        const b = await bus();
        const got: number[] = [];
        const u = await sub(b, 'conf.pause.*', (e) => void got.push(idx(e)));
        expect(b.pause(u.id)).toBe(true);
        for (const i of range(10)) await a.publish(ev('conf.pause.x', { i }));
        await sleep(150);
        expect(got).toEqual([]);
        expect(b.resume(u.id)).toBe(true);
        await until(() => got.length >= 10, '10 events after resume');
        expect([...got].sort((x, y) => x - y)).toEqual(range(10));
      });

      it('once, filter and minPriority', async () => {
        const a = await bus();
        const once: string[] = [];
        const filtered: number[] = [];
        const urgent: number[] = [];
        await sub(a, 'conf.opt.*', (e) => void once.push(e.id), { once: true });
        await sub(a, 'conf.opt.*', (e) => void filtered.push(idx(e)), {
          filter: (e) => idx(e) % 2 === 0,
        });
        await sub(a, 'conf.opt.*', (e) => void urgent.push(idx(e)), { minPriority: EventPriority.HIGH });
        for (const i of range(6))
          await a.publish(ev('conf.opt.x', { i }, i === 3 ? EventPriority.CRITICAL : EventPriority.NORMAL));
        await until(() => filtered.length >= 3 && urgent.length >= 1, 'filtered deliveries');
        await sleep(100);
        expect(once).toHaveLength(1);
        expect(filtered.sort()).toEqual([0, 2, 4]);
        expect(urgent).toEqual([3]);
      });

      it('stop() drains handlers in flight before it resolves', async () => {
        const a = await bus();
        let started = 0;
        let finished = 0;
        await sub(
          a,
          'conf.stop.*',
          async () => {
            started++;
            await sleep(100);
            finished++;
          },
          { maxConcurrency: 5 },
        );
        for (const i of range(5)) await a.publish(ev('conf.stop.x', { i }));
        await until(() => started === 5, 'five handlers to start');
        await a.stop();
        expect(finished).toBe(5);
        expect(a.isConnected()).toBe(false);
      });
    });

    describe('payloads and scale', () => {
      it('large and odd payloads round-trip intact', async () => {
        const a = await bus();
        const b = await bus();
        const payloads: unknown[] = [
          { blob: 'x'.repeat(1024 * 1024) },
          { text: 'héllo wörld ✓ 日本語 🚀 \u0000 \u2028 "quoted" \\ back' },
          { nested: { a: [1, { b: [2, { c: [3, null] }] }] } },
          null,
          {},
          [],
          { n: [Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 1e-7, 1.5e300, 0, -1] },
          'a plain string',
          true,
        ];
        const got = new Map<number, unknown>();
        await sub(
          b,
          'conf.payload.*',
          (e) => void got.set((e.metadata?.tags as string[] | undefined)?.length ?? -1, e.data),
        );
        for (const [k, data] of payloads.entries())
          await a.publish({
            type: 'conf.payload.x',
            agentId: 'conformance',
            data,
            metadata: { tags: range(k).map(String) },
          });
        await until(() => got.size >= payloads.length, 'every payload');
        for (const [k, data] of payloads.entries()) expect(got.get(k)).toEqual(data as Data);
      });

      it('2,000 subscriptions each get their own events', async () => {
        const a = await bus();
        const hits = new Map<string, number>();
        const us = [];
        for (const i of range(2000))
          us.push(a.subscribe(`conf.many${i}.*`, (e) => void hits.set(e.type, (hits.get(e.type) ?? 0) + 1)));
        await Promise.all(us.map((u) => u.ready));
        for (let i = 0; i < 2000; i += 99) await a.publish(ev(`conf.many${i}.ping`));
        await until(() => hits.size >= 21, '21 distinct deliveries');
        await sleep(50);
        expect([...hits.values()].every((n) => n === 1)).toBe(true);
      });
    });

    gate('deadLetters', 'retries and dead letters', () => {
      it('retries a failing handler, dead-letters it with error and attempts, redrives once, purges', async () => {
        const a = await bus({ retryAttempts: 2 });
        const attempts: number[] = [];
        let fail = true;
        let ok = 0;
        const u = await sub(a, 'conf.dlq.*', (_e) => {
          attempts.push(attempts.length + 1);
          if (fail) throw new Error('poison');
          ok++;
        });
        const e = await a.publish(ev('conf.dlq.x', { keep: 'payload' }));
        const store = a.deadLetters!;
        await until(() => attempts.length >= 3, 'three attempts');
        await waitFor(async () => (await store.count()) >= 1, 'a dead letter', timeoutMs);
        const [dl] = await store.list({ pattern: 'conf.dlq.*' });
        expect(dl).toMatchObject({
          attempts: 3,
          subscriptionId: u.id,
          error: { message: 'poison' },
          event: { id: e.id, data: { keep: 'payload' } },
        });
        expect(attempts).toHaveLength(3);
        fail = false;
        expect(await store.redrive({ ids: [dl!.id] })).toBe(1);
        await until(() => ok === 1, 'the redriven event');
        await sleep(100);
        expect(ok).toBe(1);
        fail = true;
        await a.publish(ev('conf.dlq.x'));
        await waitFor(async () => (await store.count()) >= 1, 'a second dead letter', timeoutMs);
        expect(await store.purge()).toBeGreaterThanOrEqual(1);
        expect(await store.count()).toBe(0);
      });
    });

    gate('replay', 'history', () => {
      it('getRecentEvents filters by pattern, limit and since, oldest first', async () => {
        const a = await bus();
        const before = Date.now() - 1;
        for (const i of range(5)) await a.publish(ev('conf.hist.user', { i }));
        await a.publish(ev('conf.hist.other', { i: 99 }));
        const recent = await a.getRecentEvents({ pattern: 'conf.hist.user', limit: 3, since: before });
        expect(recent.map(idx)).toEqual([2, 3, 4]);
        expect(await a.getRecentEvents({ pattern: 'conf.hist.*', since: Date.now() + 60_000 })).toEqual([]);
      });
    });

    gate('durable', 'durability', () => {
      it('an acknowledged event is not delivered again after the node restarts', async () => {
        const nodeId = `${run}-durable-ack`;
        const a = await bus({ nodeId });
        const got: number[] = [];
        await sub(a, 'conf.ack.*', (e) => void got.push(idx(e)), { group: 'ackers' });
        await a.publish(ev('conf.ack.x', { i: 1 }));
        await until(() => got.length === 1, 'first delivery');
        await a.stop();
        const again = await bus({ nodeId });
        await sub(again, 'conf.ack.*', (e) => void got.push(idx(e)), { group: 'ackers' });
        await again.publish(ev('conf.ack.x', { i: 2 }));
        await until(() => got.length >= 2, 'second delivery');
        await sleep(300);
        expect(got).toEqual([1, 2]);
      });

      it('events a crashed member held are redelivered to a live member with a higher attempt number', async () => {
        if (!ns) ns = await options.setup();
        expect(ns.crash, 'a durable transport must provide crash()').toBeTypeOf('function');
        // its handlers never finish: do not let the clean-up wait for them
        const a = await bus({ shutdownTimeoutMs: 100 });
        const b = await bus();
        const heldByA: string[] = [];
        const handledByB = new Set<string>();
        const attempts = new Map<string, number>();
        await sub(
          a,
          'conf.crash.*',
          (e) => {
            heldByA.push(e.id);
            return new Promise(() => {}); // never finishes: the process "dies" holding it
          },
          { group: 'crashers', maxConcurrency: 50 },
        );
        const ids: string[] = [];
        for (const i of range(20)) ids.push((await a.publish(ev('conf.crash.x', { i }))).id);
        await until(() => heldByA.length === 20, 'the first member to hold all 20');
        // the survivor joins the group only now, so every event is held by the member that dies
        await sub(
          b,
          'conf.crash.*',
          (e, ctx) => {
            attempts.set(e.id, ctx.delivery.attempt);
            handledByB.add(e.id);
          },
          { group: 'crashers', maxConcurrency: 50 },
        );
        await ns.crash!(a.transport);
        await until(
          () => ids.every((id) => handledByB.has(id)),
          'every held event redelivered to B',
          redeliveryTimeoutMs,
        );
        for (const id of heldByA) expect(attempts.get(id)).toBeGreaterThanOrEqual(2);
      });
    });

    it('lists excluded capability groups', () => {
      if (excluded.length > 0)
        console.info(`[conformance] ${options.name}: not registered: ${excluded.join('; ')}`);
      expect(Object.keys(caps).sort()).toEqual(
        ['crossProcess', 'deadLetters', 'durable', 'groups', 'ordering', 'priorities', 'replay'].sort(),
      );
    });
  });
}
