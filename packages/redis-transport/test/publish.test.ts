import { type AgentEvent, EventPriority, QEEventBus, TransportError } from '@qe/core';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisStreamsTransport } from '../src/index.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function bus(keyPrefix: string, nodeId: string, partitions = 1) {
  const b = new QEEventBus({
    nodeId,
    transport: new RedisStreamsTransport({ url: REDIS_URL, keyPrefix, partitions, blockMs: 200 }),
  });
  await b.start();
  cleanups.push(() => b.stop().catch(() => {}));
  return b;
}

describe('publish-5: batched appends', () => {
  it('thousands of events over several partitions and priorities, in chunks: every one arrives once, each agent and priority in publish order', async () => {
    const keyPrefix = uniquePrefix('pub');
    cleanups.push(() => deletePrefix(keyPrefix));
    const producer = await bus(keyPrefix, 'pub-producer', 4);
    const consumer = await bus(keyPrefix, 'pub-consumer', 4);
    const got: AgentEvent[] = [];
    await consumer.subscribe('pub.*', (e) => void got.push(e), { maxConcurrency: 1 }).ready;
    const priorities = [EventPriority.CRITICAL, EventPriority.NORMAL, EventPriority.BULK];
    const n = 1500; // more than five 256-event chunks, spread over partitions
    const inputs = Array.from({ length: n }, (_, i) => ({
      type: 'pub.item',
      agentId: `agent-${i % 7}`,
      priority: priorities[i % 3]!,
      data: { i },
    }));
    // one publishBatch and a burst of single publishes in the same tick: both coalesce into the chunks
    await Promise.all([
      producer.publishBatch(inputs.slice(0, 1000)),
      ...inputs.slice(1000).map((e) => producer.publish(e)),
    ]);
    await waitFor(() => got.length === n, `${n} events`, 20_000);
    const seen = new Set(got.map((e) => (e.data as { i: number }).i));
    expect(seen.size).toBe(n);
    // per agent and priority, publish order holds
    const last = new Map<string, number>();
    for (const e of got) {
      const key = `${e.agentId}/${e.priority}`;
      const i = (e.data as { i: number }).i;
      expect(i).toBeGreaterThan(last.get(key) ?? -1);
      last.set(key, i);
    }
    // the entries are plain stream entries: readable as written, with the publish time
    const r = new Redis(REDIS_URL);
    cleanups.push(() => void r.disconnect());
    const t = producer.transport as RedisStreamsTransport;
    let entries = 0;
    for (const key of t.keys.allStreams()) entries += await r.xlen(key);
    expect(entries).toBe(n);
    const first = (await r.xrange(t.keys.stream(t.keys.partitionFor('agent-0'), 0), '-', '+', 'COUNT', 1))[0];
    const fields = first?.[1] ?? [];
    expect(fields[0]).toBe('e');
    expect(fields[1]!.startsWith('QEj-{')).toBe(true);
    expect(fields[2]).toBe('t');
    expect(Number(fields[3])).toBeGreaterThan(Date.now() - 60_000);
  });

  it('a publish Redis refuses rejects with a TransportError and the bus keeps working', async () => {
    const keyPrefix = uniquePrefix('pubfail');
    cleanups.push(() => deletePrefix(keyPrefix));
    const producer = await bus(keyPrefix, 'pubfail-producer');
    const t = producer.transport as RedisStreamsTransport;
    const r = new Redis(REDIS_URL);
    cleanups.push(() => void r.disconnect());
    // a key of the wrong type where the NORMAL stream should be: XADD fails inside the script
    await r.set(t.keys.stream(0, EventPriority.NORMAL), 'not a stream');
    const err = await producer.publish({ type: 'pub.x', agentId: 'a', data: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).code).toBe('TRANSPORT');
    expect(String((err as Error).message)).toMatch(/WRONGTYPE/);
    // other priorities are other streams: unaffected
    await producer.publish({ type: 'pub.x', agentId: 'a', priority: EventPriority.HIGH, data: {} });
    await r.del(t.keys.stream(0, EventPriority.NORMAL));
    await producer.publish({ type: 'pub.x', agentId: 'a', data: {} });
    expect(await r.xlen(t.keys.stream(0, EventPriority.NORMAL))).toBe(1);
    expect(t.stats().pendingPublishes).toBe(0);
  });

  it('publishes on after Redis forgot its scripts (SCRIPT FLUSH, as after a restart): EVALSHA falls back to EVAL', async () => {
    const keyPrefix = uniquePrefix('noscript');
    cleanups.push(() => deletePrefix(keyPrefix));
    const producer = await bus(keyPrefix, 'noscript-producer');
    const consumer = await bus(keyPrefix, 'noscript-consumer');
    const got: number[] = [];
    await consumer.subscribe('ns.*', (e) => void got.push((e.data as { i: number }).i)).ready;
    await producer.publish({ type: 'ns.x', agentId: 'a', data: { i: 1 } });
    const r = new Redis(REDIS_URL);
    cleanups.push(() => void r.disconnect());
    await r.script('FLUSH');
    await producer.publishBatch([2, 3].map((i) => ({ type: 'ns.x', agentId: 'a', data: { i } })));
    await waitFor(() => got.length === 3, 'three events');
    expect(got).toEqual([1, 2, 3]);
  });
});
