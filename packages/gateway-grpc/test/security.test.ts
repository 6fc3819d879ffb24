/**
 * The attack classes the other gateways are tested against, over real gRPC:
 * bad and expired tokens, forbidden subjects, oversized and malformed
 * messages, slow consumers, rate limits, subscription caps and deadlines.
 * Each attack is followed by a check that another client is unaffected.
 */
import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { RedisTokenBuckets } from '@qe/reliability';
import { deferred, deletePrefix, REDIS_URL, sleep, uniquePrefix, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  auth,
  bearer,
  bytesClient,
  everything,
  onCleanup,
  rawClient,
  setup,
  token,
  unaryRaw,
} from './helpers.js';

const ok = { type: 'sec.ok', agentId: 'p', data: 1 };

describe('gRPC gateway under attack', () => {
  it('refuses a missing, forged, expired or alg:none token with UNAUTHENTICATED; health stays open', async () => {
    const { gw, client } = await setup({ auth });
    const expired = await token(everything, Math.floor(Date.now() / 1000) - 30);
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ ...everything, exp: 9999999999 })).toString('base64url')}.`;
    const forged = `${(await token(everything)).slice(0, -4)}AAAA`;
    for (const t of [undefined, expired, none, forged, 'not-a-jwt']) {
      const c = client(t === undefined ? {} : { token: t });
      await expect(c.publish(ok)).rejects.toMatchObject({
        code: 'UNAUTHORIZED',
        grpcCode: status.UNAUTHENTICATED,
      });
      const sub = c.subscribe('sec.*', () => {});
      await expect(sub.done).rejects.toMatchObject({ grpcCode: status.UNAUTHENTICATED });
      const s = c.publishStream();
      await expect(s.publish(ok)).rejects.toMatchObject({ grpcCode: status.UNAUTHENTICATED });
    }
    expect(gw.stats().refused.unauthenticated).toBe(15);
    expect(await client().health()).toBe('SERVING');
    const good = client({ token: await token(everything) });
    expect(await good.publish(ok)).toEqual(expect.any(String));
    expect(gw.stats().published).toBe(1);
  });

  it('ends a subscription with UNAUTHENTICATED when its token expires', async () => {
    const { client } = await setup({ auth });
    const c = client({ token: await token(everything, Math.floor(Date.now() / 1000) + 1) });
    const sub = c.subscribe('sec.*', () => {});
    await sub.ready;
    await expect(sub.done).rejects.toMatchObject({ grpcCode: status.UNAUTHENTICATED });
  });

  it('enforces publish and subscribe permissions: PERMISSION_DENIED, and a wider subscription is refused, not narrowed', async () => {
    const { gw, client } = await setup({ auth });
    const c = client({
      token: await token({
        qe: { pub: { allow: ['task.*'], deny: ['task.delete'] }, sub: { allow: ['task.**'] } },
      }),
    });
    expect(await c.publish({ type: 'task.create', agentId: 'a', data: {} })).toEqual(expect.any(String));
    for (const type of ['task.delete', 'agent.spawn'])
      await expect(c.publish({ type, agentId: 'a', data: {} })).rejects.toMatchObject({
        code: 'FORBIDDEN',
        grpcCode: status.PERMISSION_DENIED,
      });
    await expect(
      c.publishBatch([
        { type: 'task.create', agentId: 'a', data: {} },
        { type: 'agent.spawn', agentId: 'a', data: {} },
      ]),
    ).rejects.toMatchObject({ code: 'FORBIDDEN' });
    const s = c.publishStream();
    await expect(s.publish({ type: 'agent.spawn', agentId: 'a', data: {} })).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
    expect(await s.publish({ type: 'task.create', agentId: 'a', data: {} })).toEqual(expect.any(String));
    await s.end();
    const wide = c.subscribe('**', () => {});
    await expect(wide.done).rejects.toMatchObject({ code: 'FORBIDDEN', grpcCode: status.PERMISSION_DENIED });
    const mixed = c.subscribe(['task.*', 'agent.*'], () => {});
    await expect(mixed.done).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(c.history({ pattern: 'agent.*' })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(c.history()).rejects.toMatchObject({ code: 'FORBIDDEN' }); // '**' is wider than task.**
    expect(await c.subscribe('task.*', () => {}).ready).toEqual(expect.any(String));
    expect((await c.history({ pattern: 'task.**' })).length).toBe(2);
    expect(gw.stats().errors.forbidden).toBe(8);
  });

  it('refuses a message over maxMessageBytes with RESOURCE_EXHAUSTED; other clients are unaffected', async () => {
    const { bus, client } = await setup({ maxMessageBytes: 4096 });
    const got: string[] = [];
    bus.subscribe('sec.*', (e) => void got.push(e.id));
    const big = client();
    await expect(
      big.publish({ type: 'sec.big', agentId: 'p', data: 'x'.repeat(10_000) }),
    ).rejects.toMatchObject({
      grpcCode: status.RESOURCE_EXHAUSTED,
    });
    const s = big.publishStream();
    await expect(
      s.publish({ type: 'sec.big', agentId: 'p', data: 'x'.repeat(10_000) }),
    ).rejects.toMatchObject({
      grpcCode: status.RESOURCE_EXHAUSTED,
    });
    const id = await client().publish(ok);
    await waitFor(() => got.includes(id), 'the small event');
    expect(got).toEqual([id]); // the oversized ones were never published
  });

  it('answers malformed input with INVALID_ARGUMENT naming the field, counts it, and keeps serving', async () => {
    const { gw, client } = await setup();
    const { rpc } = rawClient(gw.port);
    const publish = (event: unknown) => unaryRaw(rpc.Publish!, rpc, { event });
    const cases: [unknown, string][] = [
      [{ type: 'sec.x', agentId: 'p', dataJson: '{not json' }, 'event.dataJson'],
      [{ type: 'sec.x', agentId: 'p', dataJson: '{"__proto__":{"polluted":true}}' }, 'event.dataJson'],
      [{ type: 'sec.x', agentId: 'p' }, 'event.dataJson'],
      [{ agentId: 'p', dataJson: '1' }, 'type'],
      [{ type: 'sec.x', dataJson: '1' }, 'agentId'],
      [{ type: 'sec.x', agentId: 'p', dataJson: '1', priority: 9 }, 'priority'],
      [
        { type: 'sec.x', agentId: 'p', dataJson: '1', metadata: { extraJson: '[1]' } },
        'event.metadata.extraJson',
      ],
      [
        { type: 'sec.x', agentId: 'p', dataJson: '1', metadata: { traceparent: 'zz' } },
        'metadata.traceparent',
      ],
      [undefined, 'event'],
    ];
    for (const [event, field] of cases) {
      const { err } = await publish(event);
      expect(err?.code, JSON.stringify(event)).toBe(status.INVALID_ARGUMENT);
      expect(err!.metadata.get('qe-error-code')).toEqual(['VALIDATION']);
      expect(JSON.parse(String(err!.metadata.get('qe-error-details')[0]))).toMatchObject({ field });
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // bytes that are no protobuf message at all: a field of wire type 7, a length past the end
    const raw = bytesClient(gw.port);
    for (const bytes of [Buffer.from([0x0f, 0x01]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01])]) {
      const err = await new Promise<ServiceError | null>((r) => raw.Publish(bytes, bearer(), (e) => r(e)));
      expect(err?.code).toBe(status.INVALID_ARGUMENT);
      expect(err!.metadata.get('qe-error-code')).toEqual(['VALIDATION']);
    }
    // ...and inside a publish stream: an error reply for that message, and the stream goes on
    const stream = raw.PublishStream(bearer());
    const replies: Buffer[] = [];
    stream.on('data', (b: Buffer) => replies.push(b));
    stream.on('error', () => {});
    stream.write(Buffer.from([0x0f, 0x01]));
    await waitFor(() => replies.length === 1, 'the reply to the bad message');
    stream.end();
    expect(replies[0]!.toString('latin1')).toContain('VALIDATION');
    // a subscribe stream that starts with something other than start is refused
    const sub = (rpc.Subscribe as (md: unknown) => ClientDuplexStream<unknown, unknown>).call(rpc, bearer());
    const ended = deferred<ServiceError>();
    sub.on('error', (e: ServiceError) => ended.resolve(e));
    sub.on('data', () => {});
    sub.write({ ack: 'd1' });
    expect((await ended.promise).code).toBe(status.INVALID_ARGUMENT);
    expect(gw.stats().errors.malformed).toBeGreaterThanOrEqual(6);
    expect(await client().publish(ok)).toEqual(expect.any(String));
  });

  it('drops events for a subscriber that stops reading (bounded, counted, then reported to it) while a reading one gets everything', async () => {
    const { bus, gw, client } = await setup({ maxBufferedBytes: 256 * 1024 });
    const { rpc } = rawClient(gw.port);
    const slow = (rpc.Subscribe as (md: unknown) => ClientDuplexStream<unknown, unknown>).call(rpc, bearer());
    const slowInbox: Record<string, unknown>[] = [];
    slow.on('data', (m: Record<string, unknown>) => slowInbox.push(m));
    slow.on('error', () => {});
    slow.write({ start: { patterns: ['flood.*'] } });
    await waitFor(() => slowInbox.some((m) => m.subscribed !== undefined), 'the slow subscription');
    slow.pause(); // stops reading: HTTP/2 flow control backs up to the gateway
    let fast = 0;
    await client().subscribe('flood.*', () => void fast++).ready;
    const blob = 'y'.repeat(4 * 1024);
    // at a pace a reading subscriber keeps up with (the publisher is in this process, so without a pause it
    // never lets the gateway's writes complete); the one that stopped reading falls behind
    for (let i = 0; i < 300; i++) {
      await bus.publish({ type: 'flood.x', agentId: 'p', data: { i, blob } });
      if (i % 2 === 1) await sleep(1); // pacing the load
    }
    await waitFor(
      () => fast === 300,
      `the reading subscriber to get all 300 (got ${fast}, ${JSON.stringify(gw.stats())})`,
      15_000,
    );
    await waitFor(() => gw.stats().dropped > 0, 'drops for the slow subscriber');
    const dropped = gw.stats().dropped;
    slow.resume();
    await waitFor(() => slowInbox.some((m) => m.dropped !== undefined), 'the dropped notice');
    const notice = slowInbox.find((m) => m.dropped !== undefined) as { dropped: { count: number } };
    expect(notice.dropped.count).toBe(dropped);
    const events = slowInbox.filter((m) => m.event !== undefined).length;
    expect(events + dropped).toBe(300);
  });

  it('ends the stream of a subscriber that stops reading with RESOURCE_EXHAUSTED under slowClientPolicy disconnect', async () => {
    const { bus, gw, client } = await setup({ maxBufferedBytes: 256 * 1024, slowClientPolicy: 'disconnect' });
    const { rpc } = rawClient(gw.port);
    const slow = (rpc.Subscribe as (md: unknown) => ClientDuplexStream<unknown, unknown>).call(rpc, bearer());
    let subscribed = false;
    const ended = deferred<ServiceError>();
    slow.on('data', (m: Record<string, unknown>) => {
      if (m.subscribed !== undefined) {
        subscribed = true;
        slow.pause();
      }
    });
    slow.on('error', (e: ServiceError) => ended.resolve(e));
    slow.write({ start: { patterns: ['flood.*'] } });
    await waitFor(() => subscribed, 'the slow subscription');
    let fast = 0;
    await client().subscribe('flood.*', () => void fast++).ready;
    const blob = 'y'.repeat(4 * 1024);
    // at a pace a reading subscriber keeps up with (the publisher is in this process, so without a pause it
    // never lets the gateway's writes complete); the one that stopped reading falls behind
    for (let i = 0; i < 300; i++) {
      await bus.publish({ type: 'flood.x', agentId: 'p', data: { i, blob } });
      if (i % 2 === 1) await sleep(1); // pacing the load
    }
    await waitFor(
      () => gw.stats().slowDisconnects === 1,
      `the slow subscriber cut off (fast ${fast}, ${JSON.stringify(gw.stats())})`,
    );
    slow.resume();
    const e = await ended.promise;
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(e.metadata.get('qe-error-code')).toEqual(['QUEUE_FULL']);
    await waitFor(() => fast === 300, 'the reading subscriber to get everything');
    expect(gw.stats().subscriptions).toBe(1);
  });

  it('rate-limits per connection and per principal with RESOURCE_EXHAUSTED and a retry-after', async () => {
    const { gw, client } = await setup({
      auth,
      rateLimit: { windowMs: 60_000, maxMessages: 3, perPrincipal: { windowMs: 60_000, maxMessages: 4 } },
    });
    const t = await token({ sub: 'greedy', ...everything });
    const a = client({ token: t });
    for (let i = 0; i < 3; i++) await a.publish(ok);
    await expect(a.publish(ok)).rejects.toMatchObject({
      code: 'RATE_LIMITED',
      grpcCode: status.RESOURCE_EXHAUSTED,
      details: { retryAfterMs: expect.any(Number) },
    });
    // the same principal on a second connection: its own connection bucket, the shared principal budget (4)
    const a2 = client({ token: t });
    expect(await a2.publish(ok)).toEqual(expect.any(String));
    await expect(a2.publish(ok)).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    const polite = client({ token: await token({ sub: 'polite', ...everything }) });
    expect(await polite.publish(ok)).toEqual(expect.any(String));
    expect(gw.stats().errors.rateLimited).toBeGreaterThanOrEqual(1);
  });

  it('shares per-principal limits between two gateways through Redis', async () => {
    const prefix = uniquePrefix('grpc-rl');
    const redis = new Redis(REDIS_URL);
    onCleanup(async () => {
      await deletePrefix(prefix, REDIS_URL);
      redis.disconnect();
    });
    const rateLimit = {
      windowMs: 600_000,
      maxMessages: 100,
      perPrincipal: { windowMs: 600_000, maxMessages: 4 },
      store: new RedisTokenBuckets(redis, prefix),
    };
    const one = await setup({ auth, rateLimit });
    const two = await setup({ auth, rateLimit });
    const t = await token({ ...everything, sub: 'alice' });
    const [ca, cb] = [one.client({ token: t }), two.client({ token: t })];
    const outcomes: string[] = [];
    for (const c of [ca, cb, ca, cb, ca, cb])
      outcomes.push(
        await c.publish(ok).then(
          () => 'ok',
          (e) => e.code,
        ),
      );
    expect(outcomes).toEqual(['ok', 'ok', 'ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED']);
  });

  it('caps subscriptions per principal and per gateway with RESOURCE_EXHAUSTED; a closed one frees its slot', async () => {
    const { gw, client } = await setup({ auth, maxSubscriptionsPerPrincipal: 2, maxSubscriptions: 3 });
    const alice = client({ token: await token({ sub: 'alice', ...everything }) });
    const bob = client({ token: await token({ sub: 'bob', ...everything }) });
    const s1 = alice.subscribe('a.*', () => {});
    await alice.subscribe('b.*', () => {}).ready;
    await s1.ready;
    const third = alice.subscribe('c.*', () => {});
    await expect(third.done).rejects.toMatchObject({
      code: 'QUEUE_FULL',
      grpcCode: status.RESOURCE_EXHAUSTED,
    });
    await bob.subscribe('a.*', () => {}).ready;
    await expect(bob.subscribe('b.*', () => {}).done).rejects.toMatchObject({
      grpcCode: status.RESOURCE_EXHAUSTED,
    });
    expect(gw.stats().refused.maxSubscriptions).toBe(2);
    s1.close();
    await waitFor(() => gw.stats().subscriptions === 2, 'the closed subscription counted out');
    expect(await alice.subscribe('c.*', () => {}).ready).toEqual(expect.any(String));
  });

  it('honours deadlines: a publish stuck past its deadline gets DEADLINE_EXCEEDED, and a subscription ends at its deadline with nothing left behind', async () => {
    const { bus, gw, client } = await setup();
    const gate = deferred();
    bus.use({
      name: 'slow-publish',
      publish: (next) => async (events, context) => {
        if (events.some((e) => e.type === 'slow.x')) await gate.promise;
        return next(events, context);
      },
    });
    await expect(
      client().publish({ type: 'slow.x', agentId: 'p', data: 1 }, { deadlineMs: 200 }),
    ).rejects.toMatchObject({
      code: 'TIMEOUT',
      grpcCode: status.DEADLINE_EXCEEDED,
    });
    await waitFor(
      () => gw.stats().errors.deadline === 1,
      'the gateway to give up on the call at its deadline',
    );
    gate.resolve();
    expect(await client().publish(ok)).toEqual(expect.any(String));

    const { rpc } = rawClient(gw.port);
    const sub = (rpc.Subscribe as (md: unknown, o: unknown) => ClientDuplexStream<unknown, unknown>).call(
      rpc,
      bearer(),
      { deadline: Date.now() + 500 },
    );
    const ended = deferred<ServiceError>();
    let subscribed = false;
    sub.on('data', (m: Record<string, unknown>) => (subscribed ||= m.subscribed !== undefined));
    sub.on('error', (e: ServiceError) => ended.resolve(e));
    sub.write({ start: { patterns: ['dl.*'] } });
    await waitFor(() => subscribed && gw.stats().subscriptions === 1, 'the subscription');
    expect(bus.getSubscriberStats().subscribers.length).toBe(1);
    expect((await ended.promise).code).toBe(status.DEADLINE_EXCEEDED);
    await waitFor(() => gw.stats().subscriptions === 0, 'the gateway to count it out');
    await waitFor(() => bus.getSubscriberStats().subscribers.length === 0, 'the bus subscription removed');
  });

  it('ends a subscribe stream that never sends its start message', async () => {
    const { gw } = await setup({ startTimeoutMs: 100 });
    const { rpc } = rawClient(gw.port);
    const sub = (rpc.Subscribe as (md: unknown) => ClientDuplexStream<unknown, unknown>).call(rpc, bearer());
    const ended = deferred<ServiceError>();
    sub.on('error', (e: ServiceError) => ended.resolve(e));
    sub.on('data', () => {});
    expect((await ended.promise).code).toBe(status.DEADLINE_EXCEEDED);
  });
});
