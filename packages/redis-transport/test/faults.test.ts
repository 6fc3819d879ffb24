import { type AgentEvent, EventPriority, QEEventBus } from '@qe/core';
import { type RedisProcess, startProxy, startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStreamsTransport, type RedisTransportOptions } from '../src/index.js';
import { deletePrefix, REDIS_URL, startFixture, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let nodeSeq = 0;
async function bus(options: RedisTransportOptions, config: { nodeId?: string; retryAttempts?: number } = {}) {
  const b = new QEEventBus({
    nodeId: config.nodeId ?? `fault-${process.pid}-${++nodeSeq}`,
    transport: new RedisStreamsTransport({ claimIdleMs: 500, blockMs: 200, ...options }),
    retryDelay: 10,
    retryAttempts: config.retryAttempts ?? 3,
    shutdownTimeoutMs: 500,
  });
  b.on('error', () => {}); // connection errors are expected in fault tests
  await b.start();
  cleanups.push(() => b.stop().catch(() => {}));
  return b;
}
const ev = (type: string, data: unknown = {}, priority?: EventPriority) =>
  priority === undefined ? { type, agentId: 'fault', data } : { type, agentId: 'fault', data, priority };

/** A producer and a consumer bus whose group `late` is subscribed to `lag.*` and paused: it reads nothing until resumed. */
async function lateGroup(tag: string, retention: RedisTransportOptions) {
  const keyPrefix = uniquePrefix(tag);
  cleanups.push(() => deletePrefix(keyPrefix));
  const r = new Redis(REDIS_URL);
  cleanups.push(() => void r.disconnect());
  const opts = { url: REDIS_URL, keyPrefix, ...retention };
  const producer = await bus(opts);
  const consumer = await bus(opts);
  const seen = new Set<number>();
  const sub = consumer.subscribe('lag.*', (e) => void seen.add((e.data as { i: number }).i), {
    group: 'late',
    maxConcurrency: 64,
  });
  await sub.ready;
  consumer.pause(sub.id);
  const stream = (producer.transport as RedisStreamsTransport).keys.stream(0, EventPriority.NORMAL);
  return { r, producer, consumer, sub, seen, stream };
}

describe('redis faults', () => {
  it('a poison event that kills its consumer lands in the dead-letter stream after exactly maxDeliveries', async () => {
    const keyPrefix = uniquePrefix('poison');
    cleanups.push(() => deletePrefix(keyPrefix));
    const opts = { url: REDIS_URL, keyPrefix, maxDeliveries: 3 };
    const producer = await bus(opts);
    let calls = 0;
    // each incarnation of the consumer "crashes" (drops its connections) on the poison event
    const incarnate = async () => {
      const b = await bus(opts);
      await b.subscribe(
        'poison.*',
        async () => {
          calls++;
          await (b.transport as RedisStreamsTransport).kill();
          return new Promise(() => {});
        },
        { group: 'victims', maxConcurrency: 1 },
      ).ready;
    };
    await incarnate();
    await producer.publish(ev('poison.pill', { payload: 'x' }));
    for (let i = 1; i < 3; i++) {
      await waitFor(() => calls === i, `delivery ${i}`);
      await incarnate();
    }
    await waitFor(() => calls === 3, 'delivery 3');
    // a fourth consumer claims it once more: the transport dead-letters it instead of calling the handler
    const last = await bus(opts);
    let lastCalls = 0;
    await last.subscribe('poison.*', () => void lastCalls++, { group: 'victims' }).ready;
    await waitFor(async () => (await last.deadLetters!.count()) === 1, 'the dead letter', 15_000);
    const [dl] = await last.deadLetters!.list();
    expect(dl).toMatchObject({
      reason: 'max_attempts',
      attempts: 3,
      event: { type: 'poison.pill', data: { payload: 'x' } },
    });
    expect(calls).toBe(3);
    expect(lastCalls).toBe(0);
  });

  it('SIGKILL of a consumer process holding unacked events: every event handled by another member, none lost', async () => {
    const keyPrefix = uniquePrefix('sigkill');
    cleanups.push(() => deletePrefix(keyPrefix));
    const handledByChild = new Set<string>();
    let ready = false;
    const child = startFixture(
      'consumer.ts',
      [REDIS_URL, keyPrefix, `child-${process.pid}`, '20'],
      (line) => {
        if (line === 'ready') ready = true;
        else if (line.startsWith('handled ')) handledByChild.add(line.slice(8));
      },
    );
    cleanups.push(() => void child.kill('SIGKILL'));
    await waitFor(() => ready, 'the child consumer', 20_000);
    const local = await bus({ url: REDIS_URL, keyPrefix, claimIdleMs: 1000 });
    const handledHere = new Map<string, number>();
    await local.subscribe(
      'fault.*',
      async (e) => {
        await new Promise((r) => setTimeout(r, 20));
        handledHere.set(e.id, (handledHere.get(e.id) ?? 0) + 1);
      },
      { group: 'g', maxConcurrency: 10 },
    ).ready;
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) ids.push((await local.publish(ev('fault.work', { i }))).id);
    await waitFor(() => handledByChild.size >= 30, 'the child to handle some');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const childDone = new Set(handledByChild);
    await waitFor(
      () => ids.every((id) => childDone.has(id) || handledHere.has(id)),
      'every event handled',
      30_000,
    );
    const duplicates = ids.filter((id) => childDone.has(id) && handledHere.has(id)).length;
    // at-least-once: duplicates are possible only for events the child finished but had not acked yet
    expect(duplicates).toBeLessThanOrEqual(20);
    console.info(
      `[sigkill] child handled ${childDone.size}, survivor ${handledHere.size}, duplicates ${duplicates}`,
    );
  });

  it('redis-server killed and restarted with AOF under load: nothing acknowledged is lost, consumption resumes', async () => {
    const server: RedisProcess = await startRedis(7110, ['--appendonly', 'yes', '--appendfsync', 'always']);
    cleanups.push(async () => {
      await server.stop();
      server.cleanup();
    });
    const url = `redis://127.0.0.1:${server.port}`;
    const keyPrefix = uniquePrefix('restart');
    const producer = await bus({ url, keyPrefix });
    const consumer = await bus({ url, keyPrefix });
    const handled = new Set<string>();
    await consumer.subscribe('load.*', (e) => void handled.add(e.id), { group: 'g', maxConcurrency: 20 })
      .ready;
    const acknowledged: string[] = [];
    let failed = 0;
    let stop = false;
    const load = (async () => {
      let i = 0;
      while (!stop) {
        try {
          acknowledged.push((await producer.publish(ev('load.tick', { i: i++ }))).id);
        } catch {
          failed++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    })();
    await waitFor(() => handled.size >= 200, 'traffic before the crash');
    await server.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await server.restart();
    const after = acknowledged.length;
    await waitFor(() => acknowledged.length >= after + 200, 'publishing to resume', 20_000);
    stop = true;
    await load;
    await waitFor(
      () => acknowledged.every((id) => handled.has(id)),
      'every acknowledged event handled',
      30_000,
    );
    console.info(`[restart] acknowledged ${acknowledged.length}, rejected while down ${failed}`);
    expect(consumer.isConnected()).toBe(true);
  });

  it('redis-server restarted without persistence: the lost group is re-created, counted, logged and reported, and new events flow', async () => {
    const server: RedisProcess = await startRedis(7111, ['--appendonly', 'no', '--save', '']);
    cleanups.push(async () => {
      await server.stop();
      server.cleanup();
    });
    const url = `redis://127.0.0.1:${server.port}`;
    const keyPrefix = uniquePrefix('wipe');
    const producer = await bus({ url, keyPrefix });
    const consumer = await bus({ url, keyPrefix });
    const errors: Error[] = [];
    consumer.on('error', (e) => void errors.push(e as Error));
    const handled = new Set<string>();
    await consumer.subscribe('wipe.*', (e) => void handled.add(e.id), { group: 'g' }).ready;
    const before = await producer.publish(ev('wipe.x', { n: 1 }));
    await waitFor(() => handled.has(before.id), 'an event before the wipe');
    expect(consumer.transport.stats().groupsLost).toBe(0);
    await server.stop('SIGKILL');
    await server.restart();
    await waitFor(
      () => (consumer.transport.stats().groupsLost as number) >= 1,
      'the lost group counted',
      20_000,
    );
    expect(errors.some((e) => /consumer group .* was missing .* Redis lost its data/.test(e.message))).toBe(
      true,
    );
    let after: AgentEvent | undefined;
    await waitFor(
      async () =>
        (after = await producer.publish(ev('wipe.x', { n: 2 })).catch(() => undefined)) !== undefined,
      'publishing again',
      20_000,
    );
    await waitFor(() => handled.has(after!.id), 'an event after the wipe handled', 20_000);
  });

  it('publishes in flight when the connection is cut are stored once: the calls ioredis sends again are recognised', async () => {
    const server: RedisProcess = await startRedis(7112, ['--appendonly', 'no', '--save', '']);
    const proxy = await startProxy(server.port);
    const admin = new Redis({ port: server.port });
    cleanups.push(async () => {
      admin.disconnect();
      await proxy.close();
      await server.stop();
      server.cleanup();
    });
    const keyPrefix = uniquePrefix('resend');
    const producer = await bus({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix });
    let acked = 0;
    const sends: Promise<unknown>[] = [];
    // bursts of publishes, each cut 2 ms in: Redis has run some scripts whose replies the cut loses
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 300; i++)
        sends.push(producer.publish(ev('resend.x', { i: round * 300 + i })).then(() => acked++));
      await new Promise((r) => setTimeout(r, 2));
      proxy.cut();
      await Promise.allSettled(sends);
    }
    const copies = new Map<string, number>();
    for (const key of await admin.keys(`${keyPrefix}*`)) {
      if ((await admin.type(key)) !== 'stream') continue;
      for (const [, fields] of (await admin.xrange(key, '-', '+')) as [string, string[]][]) {
        const id = /"id":"([^"]+)"/.exec(fields[fields.indexOf('e') + 1] ?? '')?.[1] ?? '?';
        copies.set(id, (copies.get(id) ?? 0) + 1);
      }
    }
    const twice = [...copies.values()].filter((n) => n > 1).length;
    const repeated = producer.transport.stats().repeatedPublishes as number;
    console.info(
      `[resend] acknowledged ${acked} of 3000, ${repeated} events in calls sent again, stored twice ${twice}`,
    );
    // the cuts did make ioredis send applied calls again, and none of them wrote twice
    expect(repeated).toBeGreaterThan(0);
    expect(twice).toBe(0);
    expect(copies.size).toBeGreaterThanOrEqual(acked);
  });

  it('a connection cut by a TCP proxy: consumption resumes by itself and nothing acknowledged is lost', async () => {
    const proxy = await startProxy(6379);
    cleanups.push(() => proxy.close());
    const keyPrefix = uniquePrefix('proxy');
    cleanups.push(() => deletePrefix(keyPrefix));
    const producer = await bus({ url: REDIS_URL, keyPrefix });
    const consumer = await bus({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix });
    const handled = new Set<string>();
    await consumer.subscribe('cut.*', (e) => void handled.add(e.id), { group: 'g' }).ready;
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) ids.push((await producer.publish(ev('cut.x', { i }))).id);
    await waitFor(() => handled.size === 50, 'first half');
    proxy.cut();
    for (let i = 50; i < 100; i++) ids.push((await producer.publish(ev('cut.x', { i }))).id);
    await waitFor(() => ids.every((id) => handled.has(id)), 'second half after the cut', 20_000);
    await waitFor(() => consumer.isConnected(), 'reconnected');
  });

  it('producer and consumer with different codecs interoperate; JSON frames are readable with XRANGE', async () => {
    const keyPrefix = uniquePrefix('codec');
    cleanups.push(() => deletePrefix(keyPrefix));
    const json = await bus({ url: REDIS_URL, keyPrefix, serialization: 'json' });
    const mp = await bus({ url: REDIS_URL, keyPrefix, serialization: 'compressed' });
    const got: AgentEvent[] = [];
    await json.subscribe('codec.*', (e) => void got.push(e)).ready;
    await mp.publish(ev('codec.big', { blob: 'z'.repeat(5000) }));
    await json.publish(ev('codec.small', { hello: 'world' }));
    await waitFor(() => got.length === 2, 'both events');
    expect(got.find((e) => e.type === 'codec.big')!.data).toEqual({ blob: 'z'.repeat(5000) });
    const r = new Redis(REDIS_URL);
    cleanups.push(() => void r.disconnect());
    const stream = (json.transport as RedisStreamsTransport).keys.stream(0, EventPriority.NORMAL);
    const rows = await r.xrange(stream, '-', '+');
    const frames = rows.map(([, f]) => f[f.indexOf('e') + 1]!);
    expect(frames.some((f) => f.startsWith('QEj-{') && f.includes('"hello":"world"'))).toBe(true);
    expect(frames.some((f) => f.startsWith('QEmz'))).toBe(true);
  });

  it('retention: MAXLEN and ttl (MINID) bound the streams; entries trimmed while pending are counted and reported', async () => {
    const keyPrefix = uniquePrefix('trim');
    cleanups.push(() => deletePrefix(keyPrefix));
    const r = new Redis(REDIS_URL);
    cleanups.push(() => void r.disconnect());
    const small = await bus({ url: REDIS_URL, keyPrefix, maxLen: 100 });
    const holder = await bus({ url: REDIS_URL, keyPrefix, maxLen: 100 });
    let held = 0;
    await holder.subscribe(
      'trim.*',
      () => {
        held++;
        return new Promise(() => {});
      },
      { group: 'slow', maxConcurrency: 50 },
    ).ready;
    for (let i = 0; i < 50; i++) await small.publish(ev('trim.x', { i }));
    await waitFor(() => held === 50, 'the slow member to hold 50');
    await (holder.transport as RedisStreamsTransport).kill();
    await small.publishBatch(Array.from({ length: 1000 }, (_, i) => ev('trim.x', { i })));
    const stream = (small.transport as RedisStreamsTransport).keys.stream(0, EventPriority.NORMAL);
    expect(await r.xlen(stream)).toBeLessThan(400);
    const survivor = await bus({ url: REDIS_URL, keyPrefix, maxLen: 100 });
    await survivor.subscribe('trim.*', () => {}, { group: 'slow' }).ready;
    const t = survivor.transport as RedisStreamsTransport;
    await waitFor(() => t.counters.trimmedWhilePending > 0, 'trimmed pending entries to be noticed', 15_000);
    const health = await survivor.healthCheck();
    expect(health.status).toBe('degraded');
    expect(health.reasons.join(' ')).toMatch(/trimmed while still pending/);

    const ttlPrefix = uniquePrefix('ttl');
    cleanups.push(() => deletePrefix(ttlPrefix));
    const withTtl = await bus({ url: REDIS_URL, keyPrefix: ttlPrefix, ttl: 1 });
    await withTtl.publishBatch(Array.from({ length: 300 }, (_, i) => ev('lag.x', { i })));
    await new Promise((res) => setTimeout(res, 1200));
    await withTtl.publishBatch(Array.from({ length: 300 }, (_, i) => ev('lag.x', { i })));
    const ttlStream = (withTtl.transport as RedisStreamsTransport).keys.stream(0, EventPriority.NORMAL);
    expect(await r.xlen(ttlStream)).toBeLessThan(600);
  });

  it('retention waits for a group that has not read its entries, up to maxLen + retainUnread; past that the loss is counted', async () => {
    const { r, producer, consumer, sub, seen, stream } = await lateGroup('lag', {
      maxLen: 100,
      retainUnread: 400,
    });
    // 3 x maxLen while the group reads nothing: a blind MAXLEN would drop two thirds of them
    for (let k = 0; k < 3; k++)
      await producer.publishBatch(Array.from({ length: 100 }, (_, i) => ev('lag.x', { i: k * 100 + i })));
    expect(await r.xlen(stream)).toBeGreaterThanOrEqual(300);
    consumer.resume(sub.id);
    await waitFor(() => seen.size === 300, 'all 300 events to reach the late group');
    const pt = producer.transport as RedisStreamsTransport;
    expect(pt.counters.trimmedUnread).toBe(0);
    // once it has read them, the stream shrinks back towards maxLen on the next publish
    await producer.publish(ev('lag.x', { i: 300 }));
    await waitFor(() => seen.size === 301, 'event 300');
    await producer.publish(ev('lag.x', { i: 301 }));
    expect(await r.xlen(stream)).toBeLessThan(300);
    expect((await producer.healthCheck()).status).toBe('healthy');

    // past the cap (maxLen + retainUnread = 500) the oldest unread entries go, and are counted
    consumer.pause(sub.id);
    for (let k = 0; k < 10; k++)
      await producer.publishBatch(
        Array.from({ length: 100 }, (_, i) => ev('lag.y', { i: 1000 + k * 100 + i })),
      );
    expect(await r.xlen(stream)).toBeLessThan(700);
    expect(pt.counters.trimmedUnread).toBeGreaterThan(300);
    expect(pt.counters.trimmedUnread).toBeLessThanOrEqual(600);
    const health = await producer.healthCheck();
    expect(health.status).toBe('degraded');
    expect(health.reasons.join(' ')).toMatch(/trimmed before a consumer group read them/);
  });

  it('time-based retention (ttl) keeps entries a lagging group has not read; without one it trims', async () => {
    const { r, producer, consumer, sub, seen, stream } = await lateGroup('lagttl', { ttl: 1 });
    await producer.publishBatch(Array.from({ length: 300 }, (_, i) => ev('lag.x', { i })));
    await new Promise((res) => setTimeout(res, 1200));
    await producer.publishBatch(Array.from({ length: 300 }, (_, i) => ev('lag.x', { i: 300 + i })));
    expect(await r.xlen(stream)).toBe(600);
    consumer.resume(sub.id);
    await waitFor(() => seen.size === 600, 'all 600 events, the expired ones included');
    await new Promise((res) => setTimeout(res, 1200));
    await producer.publish(ev('lag.x', { i: 600 }));
    expect(await r.xlen(stream)).toBeLessThan(600);
    expect((producer.transport as RedisStreamsTransport).counters.trimmedUnread).toBe(0);
  });

  it('a CRITICAL event published behind 100,000 waiting BULK events is handled before that backlog drains', async () => {
    const keyPrefix = uniquePrefix('prio');
    cleanups.push(() => deletePrefix(keyPrefix));
    const producer = await bus({ url: REDIS_URL, keyPrefix, maxLen: 200_000 });
    const consumer = await bus({ url: REDIS_URL, keyPrefix, maxLen: 200_000 });
    let bulk = 0;
    let criticalAt = -1;
    let open = false;
    await consumer.subscribe(
      'prio.*',
      async (e) => {
        while (!open) await new Promise((r) => setTimeout(r, 5));
        if (e.priority === EventPriority.CRITICAL) criticalAt = bulk;
        else bulk++;
      },
      { group: 'g', maxConcurrency: 1 },
    ).ready;
    for (let k = 0; k < 20; k++)
      await producer.publishBatch(
        Array.from({ length: 5000 }, (_, i) => ev('prio.bulk', { i }, EventPriority.BULK)),
      );
    await producer.publish(ev('prio.critical', {}, EventPriority.CRITICAL));
    open = true;
    await waitFor(() => criticalAt >= 0, 'the CRITICAL event', 30_000);
    expect(criticalAt).toBeLessThan(20_000); // long before the 100,000 drain
    const seen = bulk;
    await waitFor(() => bulk > seen + 100, 'BULK to keep progressing');
    console.info(`[priority] CRITICAL handled after ${criticalAt} of 100,000 BULK`);
  });
});
