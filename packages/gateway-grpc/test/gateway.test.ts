import net from 'node:net';
import { type ServiceError, status } from '@grpc/grpc-js';
import { type AgentEvent, QEEventBus } from '@qe/core';
import { testCertificate, waitFor } from '@qe/test-utils';
import { describe, expect, it } from 'vitest';
import type { GrpcClientError } from '../src/client.js';
import { createGrpcGateway } from '../src/index.js';
import { onCleanup, rawClient, setup, unaryRaw } from './helpers.js';

describe('gRPC gateway', () => {
  it('publishes with the id in the reply and delivers to a subscriber on another client, payload and metadata intact', async () => {
    const { client } = await setup();
    const a = client();
    const b = client();
    const got: AgentEvent[] = [];
    const sub = b.subscribe('task.*', (e) => void got.push(e));
    const subId = await sub.ready;
    expect(subId).toEqual(expect.any(String));
    const id = await a.publish({
      type: 'task.create',
      agentId: 'grpc-agent',
      priority: 1,
      data: { n: 1, nested: { ok: true }, list: [1, 'two'] },
      metadata: { correlationId: 'c-1', tags: ['x', 'y'], custom: 'kept' } as never,
    });
    await waitFor(() => got.length === 1, 'the event');
    expect(got[0]).toMatchObject({
      id,
      type: 'task.create',
      agentId: 'grpc-agent',
      priority: 1,
      data: { n: 1, nested: { ok: true }, list: [1, 'two'] },
      metadata: { correlationId: 'c-1', tags: ['x', 'y'], custom: 'kept' },
    });
    await a.publish({ type: 'agent.spawn', agentId: 'grpc-agent', data: null }); // not matched by task.*
    await a.publish({ type: 'task.done', agentId: 'grpc-agent', data: null });
    await waitFor(() => got.length === 2, 'the second matching event');
    expect(got.map((e) => e.type)).toEqual(['task.create', 'task.done']);
  });

  it('publishes a batch all or nothing', async () => {
    const { bus, client } = await setup();
    const c = client();
    const got: string[] = [];
    bus.subscribe('batch.*', (e) => void got.push(e.type));
    const ids = await c.publishBatch([
      { type: 'batch.a', agentId: 'x', data: 1 },
      { type: 'batch.b', agentId: 'x', data: 2 },
    ]);
    expect(ids).toHaveLength(2);
    await waitFor(() => got.length === 2, 'both events');
    const err = (await c
      .publishBatch([
        { type: 'batch.c', agentId: 'x', data: 1 },
        { type: 'Bad', agentId: 'x', data: 2 },
      ])
      .catch((e) => e)) as GrpcClientError;
    expect(err).toMatchObject({
      code: 'VALIDATION',
      grpcCode: status.INVALID_ARGUMENT,
      details: { field: 'events[1].type' },
    });
    await expect(c.publishBatch([])).rejects.toMatchObject({ code: 'VALIDATION' });
    const history = await c.history({ pattern: 'batch.*' });
    expect(history.map((e) => e.type)).toEqual(['batch.a', 'batch.b']); // batch.c was not published
  });

  it('a publish stream answers every event with its id or its typed error, in order, and stays open', async () => {
    const { bus, client } = await setup();
    const got: AgentEvent[] = [];
    bus.subscribe('stream.*', (e) => void got.push(e));
    const s = client().publishStream();
    const results = await Promise.allSettled([
      s.publish({ type: 'stream.one', agentId: 'p', data: 1 }),
      s.publish({ type: 'stream.Two', agentId: 'p', data: 2 }),
      s.publish({ type: 'stream.three', agentId: '', data: 3 }),
      s.publish({ type: 'stream.four', agentId: 'p', data: 4 }),
    ]);
    await s.end();
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({
      code: 'VALIDATION',
      details: { field: 'type' },
    });
    expect((results[2] as PromiseRejectedResult).reason).toMatchObject({
      code: 'VALIDATION',
      details: { field: 'agentId' },
    });
    await waitFor(() => got.length === 2, 'the two valid events');
    expect(got.map((e) => e.id)).toEqual([
      (results[0] as PromiseFulfilledResult<string>).value,
      (results[3] as PromiseFulfilledResult<string>).value,
    ]);
  });

  it('group deliveries wait for the ack; a nack is retried and an unacked delivery moves on when its holder leaves', async () => {
    const { bus, client, gw } = await setup({ ackTimeoutMs: 60_000 });
    const heldByA: number[] = [];
    const byB: number[] = [];
    let nacked = false;
    const holder = client().subscribe(
      'job.*',
      (e) => {
        heldByA.push((e.data as { i: number }).i);
        return new Promise<void>(() => {}); // never acked
      },
      { group: 'workers' },
    );
    const worker = client().subscribe(
      'job.*',
      (e) => {
        const i = (e.data as { i: number }).i;
        if (i === 0 && !nacked) {
          nacked = true;
          throw new Error('first try fails'); // nacked: the bus retries it
        }
        byB.push(i);
      },
      { group: 'workers' },
    );
    await Promise.all([holder.ready, worker.ready]);
    expect(gw.stats().subscriptions).toBe(2);
    for (let i = 0; i < 6; i++) await bus.publish({ type: 'job.run', agentId: 'p', data: { i } });
    await waitFor(() => heldByA.length + byB.length >= 6 && heldByA.length > 0, 'deliveries to both members');
    holder.close(); // gone without acking
    await waitFor(
      () => [0, 1, 2, 3, 4, 5].every((i) => byB.includes(i)),
      `every job handled by the remaining member (B has ${JSON.stringify(byB)}, A held ${JSON.stringify(heldByA)})`,
    );
    expect(nacked).toBe(true);
    await waitFor(() => gw.stats().subscriptions === 1, 'the holder’s stream counted out');
  });

  it('resumes a subscription after an event id: the later history first, then live events, each once', async () => {
    const { bus, client } = await setup();
    const c = client();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++)
      ids.push((await bus.publish({ type: 'feed.item', agentId: 'p', data: { i } })).id);
    await bus.publish({ type: 'other.item', agentId: 'p', data: null });
    const got: { i: number; replayed: boolean }[] = [];
    const sub = c.subscribe(
      'feed.*',
      (e, info) => void got.push({ i: (e.data as { i: number }).i, replayed: info.replayed }),
      {
        resumeAfterId: ids[1]!,
      },
    );
    await sub.ready;
    await waitFor(() => got.length === 2, 'the two events after the resume point');
    await bus.publish({ type: 'feed.item', agentId: 'p', data: { i: 4 } });
    await waitFor(() => got.length === 3, 'the live event');
    expect(got).toEqual([
      { i: 2, replayed: true },
      { i: 3, replayed: true },
      { i: 4, replayed: false },
    ]);
    const unknown = c.subscribe('feed.*', () => {}, { resumeAfterId: 'no-such-id' });
    await expect(unknown.done).rejects.toMatchObject({ code: 'NOT_FOUND', grpcCode: status.NOT_FOUND });
    const grouped = c.subscribe('feed.*', () => {}, { resumeAfterId: ids[0]!, group: 'g' });
    await expect(grouped.done).rejects.toMatchObject({
      code: 'VALIDATION',
      details: { field: 'start.resumeAfterId' },
    });
  });

  it('answers History with the most recent events of a pattern, oldest first', async () => {
    const { bus, client } = await setup();
    for (let i = 0; i < 5; i++) await bus.publish({ type: 'hist.x', agentId: 'p', data: { i } });
    await bus.publish({ type: 'elsewhere.x', agentId: 'p', data: null });
    const events = await client().history({ pattern: 'hist.*', limit: 3 });
    expect(events.map((e) => (e.data as { i: number }).i)).toEqual([2, 3, 4]);
    await expect(client().history({ limit: 0 })).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(client().history({ pattern: 'a..b' })).rejects.toMatchObject({ code: 'INVALID_PATTERN' });
  });

  it('serves the standard health service: SERVING, NOT_FOUND for an unknown service, NOT_SERVING once the bus is down', async () => {
    const { bus, gw, client } = await setup({ healthIntervalMs: 20 });
    const c = client();
    expect(await c.health()).toBe('SERVING');
    expect(await c.health('qe.v1.EventBus')).toBe('SERVING');
    await expect(c.health('nope.Service')).rejects.toMatchObject({ grpcCode: status.NOT_FOUND });
    const { health } = rawClient(gw.port);
    const seen: string[] = [];
    const watch = (health.Watch as (req: unknown) => NodeJS.ReadableStream & { cancel(): void }).call(
      health,
      {
        service: '',
      },
    );
    watch.on('data', (m: { status: string }) => seen.push(m.status));
    watch.on('error', () => {});
    onCleanup(() => watch.cancel());
    await waitFor(() => seen.includes('SERVING'), 'the first Watch status');
    await bus.stop();
    expect(await c.health()).toBe('NOT_SERVING');
    await waitFor(() => seen.at(-1) === 'NOT_SERVING', 'the change pushed to the watcher');
    expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
  });

  it('serves TLS with a certificate; a cleartext client is refused', async () => {
    const cert = testCertificate();
    onCleanup(() => cert.cleanup());
    const { client, gw } = await setup({ tls: { key: cert.key, cert: cert.cert } });
    const secure = client({ url: `grpcs://localhost:${gw.port}`, tls: { ca: cert.cert } });
    expect(await secure.publish({ type: 'tls.ok', agentId: 'p', data: 1 })).toEqual(expect.any(String));
    const plain = client({ deadlineMs: 2000 });
    await expect(plain.publish({ type: 'tls.no', agentId: 'p', data: 1 })).rejects.toMatchObject({
      grpcCode: status.UNAVAILABLE,
    });
    const untrusted = client({ url: `grpcs://localhost:${gw.port}`, deadlineMs: 2000 });
    await expect(untrusted.publish({ type: 'tls.no', agentId: 'p', data: 1 })).rejects.toMatchObject({
      grpcCode: status.UNAVAILABLE,
    });
  });

  it('refuses unknown or bad options with CONFIG, and a port in use with the bind error', async () => {
    const bus = new QEEventBus({ nodeId: 'grpc-cfg' });
    await expect(createGrpcGateway({ bus, port: 0, maxSubscribers: 3 } as never)).rejects.toMatchObject({
      code: 'CONFIG',
      details: { setting: 'maxSubscribers' },
    });
    await expect(
      createGrpcGateway({ bus, port: 0, slowClientPolicy: 'ignore' as never }),
    ).rejects.toMatchObject({
      code: 'CONFIG',
    });
    await expect(createGrpcGateway({ bus, port: 0, maxBufferedBytes: 0 })).rejects.toMatchObject({
      code: 'CONFIG',
    });
    await expect(
      createGrpcGateway({ bus, port: 0, rateLimit: { windowMs: 0, maxMessages: 5 } }),
    ).rejects.toMatchObject({ code: 'CONFIG' });
    await expect(
      createGrpcGateway({ bus, port: 0, tls: { key: 'k', cert: 'c', pem: 'x' } as never }),
    ).rejects.toMatchObject({ code: 'CONFIG', details: { setting: 'tls.pem' } });
    await expect(createGrpcGateway({} as never)).rejects.toMatchObject({ code: 'CONFIG' });
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    onCleanup(() => new Promise((r) => blocker.close(r)));
    const taken = (blocker.address() as net.AddressInfo).port;
    await expect(createGrpcGateway({ bus, port: taken })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('ends open streams with UNAVAILABLE on close', async () => {
    const { gw, client } = await setup();
    const sub = client().subscribe('x.*', () => {});
    await sub.ready;
    await gw.close();
    await expect(sub.done).rejects.toMatchObject({ code: 'CLOSED', grpcCode: status.UNAVAILABLE });
    const { rpc } = rawClient(gw.port);
    const { err } = await unaryRaw(rpc.Publish!, rpc, {}, undefined, { deadline: Date.now() + 2000 });
    expect((err as ServiceError).code).toBe(status.UNAVAILABLE);
  });
});
