import type { ChildProcess } from 'node:child_process';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, startFixture, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RedisSagaStore, SagaOrchestrator, SagaWorker, TERMINAL_STATUSES } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const r = new Redis(URL_);
const prefixes: string[] = [];
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(async () => {
  for (const p of prefixes) await deletePrefix(p, URL_);
  r.disconnect();
});

const newPrefix = () => {
  const p = `qe-test:saga:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  prefixes.push(p);
  return p;
};

interface Proc {
  proc: ChildProcess;
  lines: string[];
  send(line: string): void;
  /** Resolves when the process printed `line` (or a line starting with it). */
  waitLine(prefix: string, timeoutMs?: number): Promise<string>;
  kill(): Promise<void>;
}

function child(args: string[]): Proc {
  const lines: string[] = [];
  const proc = startFixture(new URL('./fixtures/proc.ts', import.meta.url), [...args], {
    stdin: 'pipe',
    onLine: (line) => lines.push(line),
  });
  children.push(proc);
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  return {
    proc,
    lines,
    send: (line) => proc.stdin!.write(`${line}\n`),
    async waitLine(prefix, timeoutMs = 15_000) {
      await waitFor(
        () => lines.some((l) => l.startsWith(prefix)),
        `${args[0]} ${args[3]} printing "${prefix}"`,
        timeoutMs,
      );
      return lines.find((l) => l.startsWith(prefix))!;
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

const worker = (p: string, id: string, slow: string[] = []) => child(['worker', URL_, p, id, ...slow]);
const orch = (p: string, id: string, leaseMs = 600) => child(['orch', URL_, p, id, String(leaseMs)]);

async function finalState(store: RedisSagaStore, tx: string, timeoutMs = 20_000) {
  await waitFor(
    async () => {
      const s = await store.load(tx);
      return s !== undefined && TERMINAL_STATUSES.includes(s.status);
    },
    `saga ${tx} to end`,
    timeoutMs,
  );
  return (await store.load(tx))!;
}

const ledger = (p: string, tx: string) => r.lrange(`${p}:ledger:${tx}`, 0, -1);

const COMPLETED = ['s1', 's2', 's3', 's4'];
const COMPENSATED = ['s1', 's2', 'undo_s2', 'undo_s1'];

describe('sagas over Redis, workers and orchestrators in separate processes', () => {
  it('a 4-step saga completes; a failing step 3 compensates step 2, then step 1, once each', async () => {
    const p = newPrefix();
    const store = new RedisSagaStore(r, `${p}:saga`);
    const procs = [worker(p, 'w1'), worker(p, 'w2'), orch(p, 'o1')];
    await Promise.all(procs.map((x) => x.waitLine('ready')));
    const o = procs[2]!;
    o.send('begin tx-ok -');
    o.send('begin tx-bad s3');
    const ok = await finalState(store, 'tx-ok');
    const bad = await finalState(store, 'tx-bad');
    expect(ok.status).toBe('completed');
    expect(ok.context).toMatchObject({ s1Done: true, s2Done: true, s3Done: true, s4Done: true });
    expect(await ledger(p, 'tx-ok')).toEqual(COMPLETED);
    expect(bad.status).toBe('compensated');
    expect(bad.failedStep).toBe('s3');
    expect(await ledger(p, 'tx-bad')).toEqual(COMPENSATED);
    // both worker processes took part (the group shares the commands)
    const ran = (x: Proc) => x.lines.filter((l) => l.startsWith('started')).length;
    expect(ran(procs[0]!) + ran(procs[1]!)).toBe(4 + 2 + 1 + 2);
  });

  it('SIGKILL of the orchestrator at random points: every saga ends completed or fully compensated, each effect once', async () => {
    const p = newPrefix();
    const store = new RedisSagaStore(r, `${p}:saga`);
    const survivor = orch(p, 'survivor');
    const workers = [worker(p, 'w1'), worker(p, 'w2')];
    let victim = orch(p, 'victim-0');
    await Promise.all([survivor, ...workers, victim].map((x) => x.waitLine('ready')));
    const txs: { id: string; fail: boolean }[] = [];
    const ROUNDS = 10;
    for (let i = 0; i < ROUNDS; i++) {
      const round = [
        { id: `k${i}-ok`, fail: false },
        { id: `k${i}-bad`, fail: true },
      ];
      for (const t of round) victim.send(`begin ${t.id} ${t.fail ? 's3' : '-'}`);
      txs.push(...round);
      await victim.waitLine(`begun k${i}-bad`);
      // a random point: after 0-8 of the round's 9 commands (4 steps; 3 steps and 2 compensations)
      // started on the workers, plus up to 20 ms
      const after = Math.floor(Math.random() * 9);
      const started = () =>
        workers.reduce((n, w) => n + w.lines.filter((l) => l.startsWith(`started k${i}-`)).length, 0);
      await waitFor(() => started() >= after, `${after} commands of round ${i}`);
      await new Promise((res) => setTimeout(res, Math.floor(Math.random() * 20)));
      await victim.kill();
      const next = orch(p, `victim-${i + 1}`);
      for (const t of round) await finalState(store, t.id);
      await next.waitLine('ready');
      victim = next;
    }
    let takenOver = 0;
    let compensatingTakenOver = 0;
    for (const t of txs) {
      const s = (await store.load(t.id))!;
      expect(s.status, t.id).toBe(t.fail ? 'compensated' : 'completed');
      expect(await ledger(p, t.id), t.id).toEqual(t.fail ? COMPENSATED : COMPLETED);
      if (s.owners.length > 1) takenOver++;
      if (s.owners.length > 1 && t.fail) compensatingTakenOver++;
    }
    // the kills did land mid-saga (a saga finished before its owner died is not taken over),
    // compensating ones included
    expect(takenOver).toBeGreaterThanOrEqual(ROUNDS / 2);
    expect(compensatingTakenOver).toBeGreaterThanOrEqual(1);
    console.log(
      `orchestrator kills: ${takenOver} of ${txs.length} sagas taken over (${compensatingTakenOver} failing ones)`,
    );
    expect(await store.active(10)).toEqual([]);
  }, 60_000);

  it('a worker SIGKILLed mid-command: the command is redelivered to another instance and takes effect once', async () => {
    const p = newPrefix();
    const store = new RedisSagaStore(r, `${p}:saga`);
    const slow = worker(p, 'slow', ['s2', '600000']);
    const o = orch(p, 'o1', 1000);
    await Promise.all([slow, o].map((x) => x.waitLine('ready')));
    o.send('begin tx-w -');
    await slow.waitLine('started tx-w:s2:1');
    await slow.kill();
    const fresh = worker(p, 'fresh');
    const end = await finalState(store, 'tx-w');
    expect(end.status).toBe('completed');
    expect(await ledger(p, 'tx-w')).toEqual(COMPLETED);
    // the new instance ran the same command (same id), not a new attempt
    expect(fresh.lines).toContain('started tx-w:s2:1');
    expect(end.steps.s2!.attempt).toBe(1);
  });
});

describe('the Redis saga store', () => {
  it('fences writes by lease: after a takeover the old owner can neither write nor renew', async () => {
    const p = newPrefix();
    const store = new RedisSagaStore(r, `${p}:saga`);
    const st = {
      transactionId: 'f1',
      correlationId: 'f1',
      sagaName: 'x',
      status: 'running' as const,
      input: {},
      context: {},
      stage: 0,
      steps: {},
      completed: [],
      toCompensate: [],
      compensationTotal: 0,
      createdAt: Date.now(),
      updatedAt: Date.now(),
      owners: ['A'],
    };
    expect(await store.create(st, 'A', 100)).toBe(true);
    expect(await store.create(st, 'B', 100)).toBe(false);
    expect(await store.orphans(10)).toEqual([]);
    expect(await store.acquire('f1', 'B', 1000)).toBe(false);
    await waitFor(async () => (await store.orphans(10)).includes('f1'), 'the lease to expire');
    expect(await store.acquire('f1', 'B', 1000)).toBe(true);
    expect(await store.save({ ...st, stage: 1 }, 'A')).toBe(false);
    expect(await store.renew(['f1'], 'A', 1000)).toEqual(['f1']);
    expect(await store.renew(['f1'], 'B', 1000)).toEqual([]);
    expect(await store.save({ ...st, stage: 2, owners: ['A', 'B'] }, 'B')).toBe(true);
    expect((await store.load('f1'))!.stage).toBe(2);
    expect(await store.save({ ...st, status: 'completed' }, 'B')).toBe(true);
    // the end releases the lease and moves the index
    expect(await store.active(10)).toEqual([]);
    expect(await store.counts()).toMatchObject({ running: 0, completed: 1 });
    expect((await store.list('completed', 10)).map((s) => s.transactionId)).toEqual(['f1']);
  });

  it('lets an ended saga expire after retainFinishedMs, with its index entry', async () => {
    const p = newPrefix();
    const store = new RedisSagaStore(r, `${p}:saga`, { retainFinishedMs: 150 });
    const base = {
      correlationId: 'c',
      sagaName: 'x',
      status: 'running' as const,
      input: {},
      context: {},
      stage: 0,
      steps: {},
      completed: [],
      toCompensate: [],
      compensationTotal: 0,
      createdAt: Date.now(),
      updatedAt: Date.now(),
      owners: ['A'],
    };
    for (const id of ['old', 'new']) {
      expect(await store.create({ ...base, transactionId: id }, 'A', 10_000)).toBe(true);
      expect(
        await store.save({ ...base, transactionId: id, status: 'completed', finishedAt: Date.now() }, 'A'),
      ).toBe(true);
      if (id === 'old')
        await waitFor(async () => (await store.load('old')) === undefined, 'the old saga to expire');
    }
    // saving 'new' trimmed the expired 'old' from the index
    expect(await r.zrange(`${p}:saga:{${p}:saga}:idx:completed`, 0, -1)).toEqual(['new']);
    expect(() => new RedisSagaStore(r, p, { retainFinishedMs: -1 })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }),
    );
  });
});

describe('the API over Redis in this process', () => {
  it('status, list, counts, history by correlation id, and the Redis requirement', async () => {
    const p = newPrefix();
    const bus = new QEEventBus({
      nodeId: 'api',
      transport: new RedisStreamsTransport({ url: URL_, keyPrefix: `${p}:bus`, blockMs: 50 }),
    });
    await bus.start();
    try {
      expect(() => new SagaOrchestrator({ bus })).toThrow(
        expect.objectContaining({ code: 'CONFIG', setting: 'redis' }),
      );
      expect(() => new SagaWorker({ bus, name: 'x', handler: () => ({}) })).toThrow(
        expect.objectContaining({ code: 'CONFIG', setting: 'redis' }),
      );
      const w = new SagaWorker({
        bus,
        redis: r,
        keyPrefix: `${p}:saga`,
        name: 'pay',
        handler: () => ({ paid: 1 }),
      });
      await w.start();
      const o = new SagaOrchestrator({ bus, redis: r, keyPrefix: `${p}:saga`, leaseMs: 1000 });
      o.define({ name: 'one', steps: [{ name: 'pay', worker: 'pay' }] });
      await o.start();
      const end = await o.execute('one', { amount: 5 }, { transactionId: 'api-1', correlationId: 'corr-1' });
      expect(end).toMatchObject({
        status: 'completed',
        correlationId: 'corr-1',
        context: { amount: 5, paid: 1 },
      });
      expect((await o.status('api-1')).status).toBe('completed');
      expect((await o.list({ status: 'completed' })).map((v) => v.transactionId)).toEqual(['api-1']);
      expect(await o.counts()).toMatchObject({ completed: 1, running: 0 });
      const types = (await o.history('api-1')).map((e) => e.type);
      expect(types).toEqual(
        expect.arrayContaining(['saga.status.one', 'saga.command.pay', 'saga.result.pay']),
      );
      await expect(o.status('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await o.stop();
      await w.stop();
    } finally {
      await bus.stop();
    }
  });
});
