import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { type AgentEvent, QEEventBus } from '@qe/core';
import { createRedisTransport } from '@qe/redis-transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Broker,
  deletePrefix,
  qe,
  REDIS_URL,
  randomPrefix,
  spawnQe,
  startBroker,
  until,
} from './helpers.js';

// One real broker process on the local Redis (its own key prefix), no JWT_SECRET.
const prefix = randomPrefix();
let broker: Broker;
let b: string[]; // --broker … --gateway …
const r = ['--redis', REDIS_URL, '--prefix', prefix];

beforeAll(async () => {
  broker = await startBroker({
    REDIS_URL,
    EVENTBUS_KEY_PREFIX: prefix,
    METRICS_COLLECTION_INTERVAL: '200',
    EVENTBUS_BATCH_TIMEOUT: '200',
  });
  b = ['--broker', broker.url, '--gateway', broker.gateway];
});

afterAll(async () => {
  await broker?.stop();
  await deletePrefix(prefix);
});

describe('qe against a broker on Redis', () => {
  it('publish (arguments, stdin NDJSON) then history finds them, over the broker and straight from Redis', async () => {
    const one = await qe([
      ...b,
      'publish',
      'cli.order.created',
      '{"orderId":"o-1"}',
      '--priority',
      'high',
      '--json',
    ]);
    expect(one.code, one.stderr).toBe(0);
    const { ids } = JSON.parse(one.stdout) as { ids: string[] };
    expect(ids).toHaveLength(1);

    const ndjson = [
      '{"type":"cli.order.paid","data":{"n":1}}',
      '',
      '{"type":"cli.order.paid","data":{"n":2},"agentId":"shop","priority":"low"}',
    ];
    const many = await qe([...r, 'publish', '--agent-id', 'batcher'], { input: `${ndjson.join('\n')}\n` });
    expect(many.code, many.stderr).toBe(0);
    expect(many.stdout).toContain('published 2 events');

    const viaBroker = await qe([...b, 'history', 'cli.order.*', '--json']);
    expect(viaBroker.code, viaBroker.stderr).toBe(0);
    const events = viaBroker.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AgentEvent);
    expect(events.map((e) => e.type)).toEqual(['cli.order.created', 'cli.order.paid', 'cli.order.paid']);
    expect(events[0]).toMatchObject({ id: ids[0], priority: 1, agentId: 'qe-cli', data: { orderId: 'o-1' } });
    expect(events.map((e) => e.agentId).slice(1)).toEqual(['batcher', 'shop']);
    expect(events.map((e) => e.priority).slice(1)).toEqual([2, 3]);

    const [viaRedis, pretty] = await Promise.all([
      qe([...r, 'history', 'cli.order.paid', '--since', '10m', '--json', '--filter', 'agentId=shop']),
      qe([...b, 'history', 'cli.order.created']),
    ]);
    expect(viaRedis.code, viaRedis.stderr).toBe(0);
    expect(
      viaRedis.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).data),
    ).toEqual([{ n: 2 }]);
    expect(pretty.code, pretty.stderr).toBe(0);
    expect(pretty.stdout).toMatch(/cli\.order\.created\s+high\s+qe-cli/);
    expect(pretty.stderr).toContain('1 event in history');
  });

  it('tail receives events published meanwhile: --json over the broker WebSocket, the coloured view over Redis', async () => {
    const overWs = spawnQe([...b, 'tail', 'cli.tail.**', '--json', '--filter', 'priority=critical,high']);
    // the pretty view, coloured as on a terminal, ending by itself after two events
    const overRedis = spawnQe([...r, 'tail', 'cli.tail.*', '--count', '2'], {
      NO_COLOR: '',
      FORCE_COLOR: '1',
    });
    try {
      await Promise.all([
        overWs.waitStderr(/tailing cli\.tail\.\*\* on ws:\/\//),
        overRedis.waitStderr(/tailing cli\.tail\.\* on redis:\/\//),
      ]);
      const low = await qe([...b, 'publish', 'cli.tail.ping', '{"n":1}', '--priority', 'low']);
      expect(low.code, low.stderr).toBe(0);
      const crit = await qe([...r, 'publish', 'cli.tail.ping', '{"n":2}', '--priority', 'critical']);
      expect(crit.code, crit.stderr).toBe(0);
      const wsLine = await overWs.waitStdout((l) => l.includes('"n":2'));
      expect(JSON.parse(wsLine)).toMatchObject({ type: 'cli.tail.ping', priority: 0, data: { n: 2 } });
      // the filter dropped the low one on the WebSocket tail; the Redis tail has both, in order, and exits 0
      expect(overWs.stdoutLines.filter((l) => l.includes('"n":1'))).toHaveLength(0);
      expect(await overRedis.exited).toBe(0);
      const pretty = overRedis.stdoutLines.join('\n');
      expect(pretty).toContain('\x1b[36mcli.tail.ping');
      expect(pretty).toMatch(/low[\s\S]*\{"n":1\}[\s\S]*critical[\s\S]*\{"n":2\}/);
    } finally {
      expect(await overWs.stop()).toBe(0);
      await overRedis.stop();
    }
  });

  it('replay by correlation id and time range (Redis and broker)', async () => {
    const from = Date.now() - 1;
    const file = join(mkdtempSync(join(tmpdir(), 'qe-cli-')), 'saga.ndjson');
    writeFileSync(
      file,
      '{"type":"cli.saga.step","data":{"step":1}}\n{"type":"cli.saga.step","data":{"step":2}}\n',
    );
    const pub = await qe([...r, 'publish', '--file', file, '--correlation-id', 'saga-42']);
    rmSync(dirname(file), { recursive: true, force: true });
    expect(pub.code, pub.stderr).toBe(0);
    const other = await qe([...b, 'publish', 'cli.saga.step', '{"step":99}', '--correlation-id', 'saga-7']);
    expect(other.code, other.stderr).toBe(0);

    const [redis, viaBroker, none] = await Promise.all([
      qe([
        ...r,
        'replay',
        'cli.saga.**',
        '--from',
        String(from),
        '--to',
        'now',
        '--correlation-id',
        'saga-42',
        '--json',
      ]),
      qe([...b, 'replay', 'cli.saga.**', '--from', String(from), '--correlation-id', 'saga-7', '--json']),
      qe([...r, 'replay', 'cli.saga.**', '--to', String(from), '--correlation-id', 'saga-42', '--json']),
    ]);
    expect(redis.code, redis.stderr).toBe(0);
    const steps = redis.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AgentEvent);
    expect(steps.map((e) => (e.data as { step: number }).step)).toEqual([1, 2]);
    expect(steps.every((e) => e.metadata?.correlationId === 'saga-42')).toBe(true);
    expect(viaBroker.code, viaBroker.stderr).toBe(0);
    expect(
      viaBroker.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).data),
    ).toEqual([{ step: 99 }]);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout.trim()).toBe('');
  });

  it('dlq list / show / redrive / purge on dead letters a failing subscriber made', async () => {
    // another process's bus on the broker's prefix: a group whose handler throws, no retries
    const bus = new QEEventBus({
      nodeId: 'cli-test-failing',
      transport: createRedisTransport({ url: REDIS_URL, keyPrefix: prefix }),
    });
    await bus.start();
    let failing = true;
    const handled: string[] = [];
    const sub = bus.subscribe(
      'cli.dlq.*',
      (e) => {
        if (failing) throw new Error(`boom ${(e.data as { n: number }).n}`);
        handled.push(e.id);
      },
      { group: 'cli-failing', retryAttempts: 0 },
    );
    await sub.ready;
    try {
      const pub = await qe([...b, 'publish', '--json'], {
        input: [1, 2, 3].map((n) => JSON.stringify({ type: 'cli.dlq.job', data: { n } })).join('\n'),
      });
      expect(pub.code, pub.stderr).toBe(0);
      const { ids } = JSON.parse(pub.stdout) as { ids: string[] };

      type List = { count: number; deadLetters: { id: string; event: { id: string } }[] };
      const list = await until(async () => {
        const res = await qe([...b, 'dlq', 'list', '--pattern', 'cli.dlq.*', '--json']);
        expect(res.code, res.stderr).toBe(0);
        const l = JSON.parse(res.stdout) as List;
        return l.deadLetters.length === 3 && l;
      }, 'three dead letters');
      expect(list.deadLetters.map((d) => d.event.id).sort()).toEqual([...ids].sort());

      const pretty = await qe([...b, 'dlq', 'list']);
      expect(pretty.stdout).toMatch(/cli\.dlq\.job\s+attempts \d+\s+boom \d/);

      const first = list.deadLetters.find((d) => d.event.id === ids[0])!;
      const show = await qe([...b, 'dlq', 'show', first.id]);
      expect(show.code, show.stderr).toBe(0);
      expect(show.stdout).toMatch(/event\s+cli\.dlq\.job/);
      expect(show.stdout).toMatch(/error\s+boom 1/);

      failing = false;
      const redrive = await qe([...b, 'dlq', 'redrive', first.id, '--json']);
      expect(redrive.code, redrive.stderr).toBe(0);
      expect(JSON.parse(redrive.stdout)).toEqual({ redriven: 1 });
      await until(async () => handled.includes(ids[0]!), 'the redriven event handled');

      const second = list.deadLetters.find((d) => d.event.id === ids[1])!;
      const purgeOne = await qe([...b, 'dlq', 'purge', second.id]);
      expect(purgeOne.code, purgeOne.stderr).toBe(0);
      expect(purgeOne.stdout).toContain('purged 1');
      const purgeRest = await qe([...b, 'dlq', 'purge', '--pattern', 'cli.dlq.*', '--json']);
      expect(JSON.parse(purgeRest.stdout)).toEqual({ purged: 1 });
      const empty = await qe([...b, 'dlq', 'list', '--pattern', 'cli.dlq.*', '--json']);
      expect(JSON.parse(empty.stdout).deadLetters).toEqual([]);

      const missing = await qe([...b, 'dlq', 'show', 'no-such-id']);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('404');
    } finally {
      sub();
      await bus.stop();
    }
  });

  it('health: healthy is exit 0, with --json for scripts; stats --once shows rates, stats --json streams', async () => {
    const [health, json, redisHealth, once, onceJson] = await Promise.all([
      qe([...b, 'health']),
      qe([...b, 'health', '--json']),
      qe([...r, 'health']),
      qe([...b, 'stats', '--once']),
      qe([...b, 'stats', '--once', '--json']),
    ]);
    expect(health.code, health.stdout + health.stderr).toBe(0);
    expect(health.stdout).toMatch(/^healthy/);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: 'healthy' });
    expect(redisHealth.code, redisHealth.stdout + redisHealth.stderr).toBe(0);
    expect(once.code, once.stderr).toBe(0);
    expect(once.stdout).toMatch(/published\/s\s+[\d.,]+\s+handled\/s/);
    expect(once.stdout).toContain('BREAKERS');
    expect(JSON.parse(onceJson.stdout)).toMatchObject({ transport: expect.stringContaining('redis') });

    // stats --json without --once: one snapshot per interval (NDJSON) until stopped
    const stream = spawnQe([...b, 'stats', '--json', '--interval', '200']);
    try {
      await stream.waitStdout((_l) => stream.stdoutLines.length >= 2);
      expect(stream.stdoutLines.slice(0, 2).map((l) => (JSON.parse(l) as { now: number }).now > 0)).toEqual([
        true,
        true,
      ]);
    } finally {
      expect(await stream.stop()).toBe(0);
    }
  });
});
