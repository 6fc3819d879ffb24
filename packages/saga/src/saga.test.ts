import {
  type AgentEvent,
  ConfigError,
  EventBusError,
  MemoryBroker,
  MemoryTransport,
  QEEventBus,
} from '@qe/core';
import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CommandLedger,
  InvalidNameError,
  InvalidSagaDefinitionError,
  MemoryCommandLedger,
  MemorySagaStore,
  type SagaDefinition,
  SagaOrchestrator,
  SagaWorker,
  type StatusEvent,
  sagaEvents,
  UnknownSagaError,
  UnknownTransactionError,
  type WorkerHandler,
} from './index.js';

const stops: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

async function makeBus(nodeId: string, broker?: MemoryBroker) {
  const bus = new QEEventBus({
    nodeId,
    retryDelay: 10,
    ...(broker ? { transport: new MemoryTransport({ broker }) } : {}),
  });
  await bus.start();
  stops.push(() => bus.stop());
  return bus;
}

async function worker(bus: QEEventBus, name: string, handler: WorkerHandler, busyRetryMs = 20) {
  const w = new SagaWorker({ bus, name, handler, busyRetryMs });
  await w.start();
  stops.unshift(() => w.stop());
  return w;
}

async function orchestrator(
  bus: QEEventBus,
  defs: SagaDefinition[],
  extra: { store?: MemorySagaStore } = {},
) {
  const o = new SagaOrchestrator({ bus, leaseMs: 300, ...extra });
  for (const d of defs) o.define(d);
  await o.start();
  stops.unshift(() => o.stop());
  return o;
}

/** Four steps, each with a compensation; every run and undo is written to `ledger`. */
function fourSteps(name = 'order'): SagaDefinition {
  return {
    name,
    steps: ['reserve', 'charge', 'ship', 'notify'].map((s) => ({
      name: s,
      worker: `do_${s}`,
      compensate: `undo_${s}`,
    })),
  };
}

async function fourWorkers(bus: QEEventBus, ledger: string[], failAt?: string) {
  for (const s of ['reserve', 'charge', 'ship', 'notify']) {
    await worker(bus, `do_${s}`, (ctx) => {
      if (s === failAt) throw new Error(`${s} refused`);
      ledger.push(`${ctx.transactionId}:${s}`);
      return { [`${s}Id`]: `${s}-1`, seen: Object.keys(ctx.context).sort() };
    });
    await worker(bus, `undo_${s}`, (ctx) => {
      ledger.push(`${ctx.transactionId}:undo_${s}`);
      return { undone: ctx.stepName, failedStep: ctx.failedStep };
    });
  }
}

describe('sagas in memory, one process', () => {
  it('a 4-step saga completes, passing each result forward, with one correlation id and a causation chain', async () => {
    const bus = await makeBus('mem-1');
    const ledger: string[] = [];
    await fourWorkers(bus, ledger);
    const o = await orchestrator(bus, [fourSteps()]);
    const statuses: StatusEvent[] = [];
    o.watch('*', (st) => statuses.push(st));
    const done = await o.execute('order', { orderId: 'o-1' }, { transactionId: 'tx-ok' });
    expect(done.status).toBe('completed');
    expect(done.progress).toBe(1);
    expect(ledger).toEqual(['tx-ok:reserve', 'tx-ok:charge', 'tx-ok:ship', 'tx-ok:notify']);
    expect(done.context).toMatchObject({ orderId: 'o-1', reserveId: 'reserve-1', notifyId: 'notify-1' });
    // the third step saw the input and the first two results
    expect(done.steps.find((s) => s.name === 'ship')!.result).toMatchObject({
      seen: ['chargeId', 'orderId', 'reserveId', 'seen'],
    });
    await waitFor(() => statuses.some((s) => s.status === 'completed'), 'the completed status event');
    const progress = statuses.map((s) => s.progress);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(progress.at(-1)).toBe(1);

    const history = await o.history('tx-ok');
    expect(history.every((e) => e.metadata?.correlationId === 'tx-ok')).toBe(true);
    const types = history.map((e) => e.type);
    expect(types.filter((t) => t.startsWith('saga.command.'))).toEqual([
      'saga.command.do_reserve',
      'saga.command.do_charge',
      'saga.command.do_ship',
      'saga.command.do_notify',
    ]);
    expect(types.filter((t) => t.startsWith('saga.result.'))).toHaveLength(4);
    // each result is caused by its command; each next command by the previous result
    const byId = new Map(history.map((e) => [e.id, e]));
    for (const r of history.filter((e) => e.type.startsWith('saga.result.')))
      expect(byId.get(r.metadata!.causationId!)!.type).toBe(r.type.replace('result', 'command'));
    const charge = history.find((e) => e.type === 'saga.command.do_charge')!;
    expect(byId.get(charge.metadata!.causationId!)!.type).toBe('saga.result.do_reserve');
    expect(o.stats()).toMatchObject({ started: 1, completed: 1, compensated: 0, stepsSucceeded: 4 });
    expect(o.stats().stepDurations.ship!.count).toBe(1);
    expect((await o.list({ status: 'completed' })).map((v) => v.transactionId)).toEqual(['tx-ok']);
  });

  it('a step failing for good compensates the completed steps in reverse order, once each', async () => {
    const bus = await makeBus('mem-2');
    const ledger: string[] = [];
    await fourWorkers(bus, ledger, 'ship');
    const o = await orchestrator(bus, [fourSteps()]);
    const statuses: StatusEvent[] = [];
    o.watch('tx-fail', (st) => statuses.push(st));
    const end = await o.execute('order', {}, { transactionId: 'tx-fail' });
    expect(end.status).toBe('compensated');
    expect(end.failedStep).toBe('ship');
    expect(end.error).toMatchObject({ message: 'ship refused', type: 'Error', step: 'ship' });
    expect(ledger).toEqual([
      'tx-fail:reserve',
      'tx-fail:charge',
      'tx-fail:undo_charge',
      'tx-fail:undo_reserve',
    ]);
    await waitFor(() => statuses.some((s) => s.status === 'compensated'), 'the compensated status');
    expect(statuses.find((s) => s.status === 'compensating')).toMatchObject({ currentStep: 'charge' });
    const comps = (await o.history('tx-fail')).filter((e) => e.type.startsWith('saga.compensation.'));
    expect(comps.map((e) => [e.type, (e.data as { failedStep: string }).failedStep])).toEqual([
      ['saga.compensation.undo_charge', 'ship'],
      ['saga.compensation.undo_reserve', 'ship'],
    ]);
    expect(o.stats()).toMatchObject({ compensated: 1, compensationsRun: 2, stepsFailed: 1 });
  });

  it('retries a failing step per its policy with a new command each time, then succeeds', async () => {
    const bus = await makeBus('mem-3');
    let calls = 0;
    const ids: string[] = [];
    await worker(bus, 'flaky', (ctx) => {
      ids.push(`${ctx.commandId}#${ctx.retryCount}`);
      if (++calls < 3) throw new Error('try again');
      return { ok: true };
    });
    const o = await orchestrator(bus, [
      { name: 'retrying', steps: [{ name: 'one', worker: 'flaky', retry: { attempts: 3, delayMs: 5 } }] },
    ]);
    const end = await o.execute('retrying', {}, { transactionId: 'tx-r' });
    expect(end.status).toBe('completed');
    expect(ids).toEqual(['tx-r:one:1#0', 'tx-r:one:2#1', 'tx-r:one:3#2']);
    expect(o.stats().stepRetries).toBe(2);
  });

  it('a PermanentError from a worker is not retried', async () => {
    const bus = await makeBus('mem-3b');
    let calls = 0;
    await worker(bus, 'picky', () => {
      calls++;
      throw new EventBusError('PERMANENT', 'never');
    });
    const o = await orchestrator(bus, [
      { name: 'perm', steps: [{ name: 'one', worker: 'picky', retry: { attempts: 5, delayMs: 5 } }] },
    ]);
    const end = await o.execute('perm', {});
    expect(end.status).toBe('compensated');
    expect(end.error).toMatchObject({ code: 'PERMANENT' });
    expect(calls).toBe(1);
  });

  it('parallel branches run together; the next stage gets both results; a later failure undoes both', async () => {
    const bus = await makeBus('mem-4');
    const ledger: string[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const gate: (() => void)[] = [];
    for (const n of ['a', 'b']) {
      await worker(bus, `par_${n}`, async () => {
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        if (gate.length === 0) await new Promise<void>((r) => gate.push(r));
        else gate.shift()!();
        inFlight--;
        ledger.push(n);
        return { [n]: true };
      });
      await worker(bus, `undo_${n}`, () => {
        ledger.push(`undo_${n}`);
      });
    }
    let seen: unknown;
    await worker(bus, 'last', (ctx) => {
      seen = ctx.context;
      throw new Error('no');
    });
    const o = await orchestrator(bus, [
      {
        name: 'fan',
        steps: [
          {
            parallel: [
              { name: 'a', worker: 'par_a', compensate: 'undo_a' },
              { name: 'b', worker: 'par_b', compensate: 'undo_b' },
            ],
          },
          { name: 'c', worker: 'last' },
        ],
      },
    ]);
    const end = await o.execute('fan', { x: 1 });
    expect(maxInFlight).toBe(2);
    expect(seen).toMatchObject({ x: 1, a: true, b: true });
    expect(end.status).toBe('compensated');
    // undone in the reverse of the order they completed
    const done = ledger.slice(0, 2);
    expect(ledger.slice(2)).toEqual(done.reverse().map((n) => `undo_${n}`));
  });

  it('a step that times out is sent again with the same command id and runs once', async () => {
    const bus = await makeBus('mem-5');
    let runs = 0;
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    const w = await worker(bus, 'slow', async () => {
      runs++;
      await slow;
      return { slow: 'done' };
    });
    const o = await orchestrator(bus, [
      { name: 'patient', steps: [{ name: 's', worker: 'slow', timeoutMs: 80, retry: { attempts: 20 } }] },
    ]);
    const { transactionId } = await o.begin('patient', {});
    await waitFor(() => o.stats().stepTimeouts >= 2, 'two timeouts');
    await waitFor(() => w.stats().busy >= 1, 'a re-send finding the command running');
    release();
    const end = await o.wait(transactionId);
    expect(end.status).toBe('completed');
    expect(runs).toBe(1);
  });

  it('a step whose tries all time out fails and is compensated too (it may have taken effect)', async () => {
    const bus = await makeBus('mem-6');
    const ledger: string[] = [];
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    stops.unshift(async () => release());
    await worker(bus, 'first', () => {
      ledger.push('first');
    });
    await worker(bus, 'undo_first', () => {
      ledger.push('undo_first');
    });
    await worker(bus, 'hangs', async () => {
      await hang;
    });
    await worker(bus, 'undo_hangs', () => {
      ledger.push('undo_hangs');
    });
    const o = await orchestrator(bus, [
      {
        name: 'timing',
        steps: [
          { name: 'first', worker: 'first', compensate: 'undo_first' },
          { name: 'second', worker: 'hangs', compensate: 'undo_hangs', timeoutMs: 60 },
        ],
      },
    ]);
    const end = await o.execute('timing', {});
    expect(end.status).toBe('compensated');
    expect(end.error).toMatchObject({ code: 'TIMEOUT', step: 'second' });
    expect(ledger).toEqual(['first', 'undo_hangs', 'undo_first']);
  });

  it('the saga deadline compensates a saga that runs too long', async () => {
    const bus = await makeBus('mem-7');
    const ledger: string[] = [];
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    stops.unshift(async () => release());
    await worker(bus, 'quick', () => {
      ledger.push('quick');
    });
    await worker(bus, 'undo_quick', () => {
      ledger.push('undo_quick');
    });
    await worker(bus, 'stuck', async () => {
      await hang;
    });
    const o = await orchestrator(bus, [
      {
        name: 'hurry',
        deadlineMs: 150,
        steps: [
          { name: 'q', worker: 'quick', compensate: 'undo_quick' },
          { name: 's', worker: 'stuck' },
        ],
      },
    ]);
    const end = await o.execute('hurry', {});
    expect(end.status).toBe('compensated');
    expect(end.error).toMatchObject({ code: 'TIMEOUT' });
    expect(ledger).toEqual(['quick', 'undo_quick']);
  });

  it('the deadline holds however its timer falls against the clock (30 sagas in turn, deadlines of 20-48 ms)', async () => {
    // a timer can fire a millisecond before Date.now() reaches the deadline; that once left ~1 saga in 10 running
    const bus = await makeBus('mem-7b');
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    stops.unshift(async () => release());
    await worker(bus, 'quick', () => ({}));
    await worker(bus, 'undo_quick', () => ({}));
    await worker(bus, 'stuck', async () => {
      await hang;
    });
    const defs: SagaDefinition[] = [];
    for (let i = 0; i < 15; i++)
      defs.push({
        name: `hurry${i}`,
        deadlineMs: 20 + i * 2,
        steps: [
          { name: 'q', worker: 'quick', compensate: 'undo_quick' },
          { name: 's', worker: 'stuck' },
        ],
      });
    const o = await orchestrator(bus, defs);
    const statuses: string[] = [];
    for (const d of [...defs, ...defs])
      statuses.push((await o.execute(d.name, {}, { timeoutMs: 3000 })).status);
    expect(statuses).toEqual(statuses.map(() => 'compensated'));
  });

  it('a compensation that fails for good ends the saga failed', async () => {
    const bus = await makeBus('mem-8');
    await worker(bus, 'ok', () => ({}));
    await worker(bus, 'bad_undo', () => {
      throw new Error('cannot undo');
    });
    await worker(bus, 'boom', () => {
      throw new Error('boom');
    });
    const o = await orchestrator(bus, [
      {
        name: 'doomed',
        compensationRetry: { attempts: 2, delayMs: 5 },
        steps: [
          { name: 'a', worker: 'ok', compensate: 'bad_undo' },
          { name: 'b', worker: 'boom' },
        ],
      },
    ]);
    const end = await o.execute('doomed', {});
    expect(end.status).toBe('failed');
    expect(end.error).toMatchObject({ message: 'cannot undo', step: 'a' });
    expect(end.steps.find((s) => s.name === 'a')!.status).toBe('compensation_failed');
    expect(o.stats().failed).toBe(1);
    expect((await o.list({ status: 'failed' })).length).toBe(1);
  });

  it('a worker answers a repeated command from its record instead of running it again', async () => {
    const bus = await makeBus('mem-9');
    let runs = 0;
    const w = await worker(bus, 'once', () => {
      runs++;
      return { n: runs };
    });
    const results: AgentEvent[] = [];
    await bus.subscribe('saga.result.once', (e) => {
      results.push(e);
    }).ready;
    const cmd = {
      transactionId: 't',
      correlationId: 't',
      sagaName: 'manual',
      workerName: 'once',
      context: {},
      stepName: 'x',
      retryCount: 0,
      commandId: 't:x:1',
    };
    await bus.publish(sagaEvents.command(cmd, { agentId: 'test' }));
    await waitFor(() => results.length === 1, 'the first result');
    await bus.publish(sagaEvents.command({ ...cmd, retryCount: 1 }, { agentId: 'test' }));
    await waitFor(() => results.length === 2, 'the repeated result');
    expect(runs).toBe(1);
    expect(results.map((e) => (e.data as { result: unknown; replayed: boolean }).replayed)).toEqual([
      false,
      true,
    ]);
    expect((results[1]!.data as { result: unknown }).result).toEqual({ n: 1 });
    expect(w.stats()).toMatchObject({ ran: 1, replayed: 1 });
  });

  it('a worker that ran a command but could not record it records it on the retry instead of running again', async () => {
    const bus = await makeBus('mem-9b');
    let runs = 0;
    let failNext = true;
    const ledger = new MemoryCommandLedger();
    const flaky: CommandLedger = {
      claim: (id, h, ms) => ledger.claim(id, h, ms),
      heartbeat: (id, h, ms) => ledger.heartbeat(id, h, ms),
      complete: async (id, o, ttl) => {
        if (failNext) {
          failNext = false;
          throw new Error('ledger unreachable');
        }
        return ledger.complete(id, o, ttl);
      },
    };
    const w = new SagaWorker({ bus, name: 'rec', ledger: flaky, handler: () => ({ n: ++runs }) });
    await w.start();
    stops.unshift(() => w.stop());
    const o = await orchestrator(bus, [{ name: 'rec', steps: [{ name: 'a', worker: 'rec' }] }]);
    const end = await o.execute('rec', {});
    expect(end).toMatchObject({ status: 'completed', context: { n: 1 } });
    expect(runs).toBe(1);
    expect(failNext).toBe(false);
  });

  it('several instances of a worker share the commands (group members)', async () => {
    const broker = new MemoryBroker();
    const busA = await makeBus('mem-10a', broker);
    const busB = await makeBus('mem-10b', broker);
    const by: string[] = [];
    const gate: (() => void)[] = [];
    for (const [bus, id] of [
      [busA, 'A'],
      [busB, 'B'],
    ] as const)
      await worker(bus, 'shared', async () => {
        by.push(id);
        if (gate.length === 0) await new Promise<void>((r) => gate.push(r));
        else gate.shift()!();
        return {};
      });
    const o = await orchestrator(busA, [
      {
        name: 'two',
        steps: [
          {
            parallel: [
              { name: 'p', worker: 'shared' },
              { name: 'q', worker: 'shared' },
            ],
          },
        ],
      },
    ]);
    const end = await o.execute('two', {});
    expect(end.status).toBe('completed');
    expect(by.sort()).toEqual(['A', 'B']);
  });

  for (const crash of [false, true])
    it(`another orchestrator in the process takes a saga over when its owner ${crash ? 'dies (lease left to expire)' : 'stops'}, and each step runs once`, async () => {
      const bus = await makeBus(`mem-11-${crash}`);
      const ledger: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      await worker(bus, 'w1', () => {
        ledger.push('w1');
      });
      const w2 = await worker(bus, 'w2', async () => {
        await gate;
        ledger.push('w2');
      });
      await worker(bus, 'w3', () => {
        ledger.push('w3');
      });
      const store = new MemorySagaStore();
      const def: SagaDefinition = {
        name: 'handover',
        steps: [
          { name: 's1', worker: 'w1' },
          { name: 's2', worker: 'w2' },
          { name: 's3', worker: 'w3' },
        ],
      };
      const a = new SagaOrchestrator({ bus, store, leaseMs: 200, instanceId: 'A' }).define(def);
      const b = new SagaOrchestrator({ bus, store, leaseMs: 200, instanceId: 'B' }).define(def);
      await a.start();
      const { transactionId } = await a.begin('handover', {});
      await waitFor(() => w2.stats().ran === 1, 'step 2 running');
      await a.stop({ release: !crash });
      await b.start();
      stops.unshift(() => b.stop());
      await waitFor(() => b.stats().takenOver === 1, 'the takeover');
      // B sent step 2 again under the same command id; the worker still runs the first one
      await waitFor(() => w2.stats().busy >= 1, 'the re-send finding the command running');
      release();
      const end = await b.wait(transactionId);
      expect(end.status).toBe('completed');
      expect(end.owners).toEqual(['A', 'B']);
      expect(ledger).toEqual(['w1', 'w2', 'w3']);
      expect(w2.stats()).toMatchObject({ ran: 1 });
    });
});

describe('the memory store', () => {
  it('keeps at most maxFinished ended sagas (the oldest go first), never a running one', async () => {
    const bus = await makeBus('mem-evict');
    await worker(bus, 'quick', () => ({}));
    const store = new MemorySagaStore({ maxFinished: 2 });
    const o = await orchestrator(bus, [{ name: 'q', steps: [{ name: 'a', worker: 'quick' }] }], { store });
    for (const id of ['e1', 'e2', 'e3']) await o.execute('q', {}, { transactionId: id });
    expect((await o.list()).map((v) => v.transactionId)).toEqual(['e3', 'e2']);
    await expect(o.status('e1')).rejects.toBeInstanceOf(UnknownTransactionError);
  });
});

describe('bad input gives typed errors', () => {
  it('names, definitions, unknown sagas and transactions', async () => {
    const bus = await makeBus('mem-bad');
    const o = new SagaOrchestrator({ bus });
    await expect(o.begin('x', {})).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    expect(() => new SagaWorker({ bus, name: 'Bad Name', handler: () => ({}) })).toThrow(InvalidNameError);
    expect(() => new SagaWorker({ bus, name: 'a.b', handler: () => ({}) })).toThrow(
      expect.objectContaining({ code: 'VALIDATION', field: 'name' }),
    );
    expect(() => new SagaWorker({ bus, name: 'ok', handler: 'nope' as never })).toThrow(
      expect.objectContaining({ code: 'VALIDATION', field: 'handler' }),
    );
    expect(() => new SagaWorker({ bus, name: 'ok', handler: () => ({}), concurrency: 0 })).toThrow(
      ConfigError,
    );
    expect(() => o.define({ name: 'empty', steps: [] })).toThrow(InvalidSagaDefinitionError);
    expect(() =>
      o.define({
        name: 'dup',
        steps: [
          { name: 'a', worker: 'w' },
          { name: 'a', worker: 'w' },
        ],
      }),
    ).toThrow(expect.objectContaining({ code: 'VALIDATION', field: 'steps[1].name' }));
    expect(() => o.define({ name: 'w', steps: [{ name: 'a', worker: 'NO' }] })).toThrow(
      expect.objectContaining({ field: 'steps[0].worker' }),
    );
    expect(() => o.define({ name: 'p', steps: [{ parallel: [] }] })).toThrow(
      expect.objectContaining({ field: 'steps[0].parallel' }),
    );
    expect(() => o.define({ name: 't', steps: [{ name: 'a', worker: 'w', timeoutMs: -1 }] })).toThrow(
      expect.objectContaining({ field: 'steps[0].timeoutMs' }),
    );
    expect(() =>
      o.define({ name: 'r', steps: [{ name: 'a', worker: 'w', retry: { attempts: 0 } }] }),
    ).toThrow(expect.objectContaining({ field: 'steps[0].retry.attempts' }));
    o.define({ name: 'fine', steps: [{ name: 'a', worker: 'w' }] });
    expect(() => o.define({ name: 'fine', steps: [{ name: 'a', worker: 'w' }] })).toThrow(
      expect.objectContaining({ code: 'VALIDATION' }),
    );
    await o.start();
    stops.unshift(() => o.stop());
    await expect(o.begin('nope', {})).rejects.toBeInstanceOf(UnknownSagaError);
    await expect(o.begin('nope', {})).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(o.begin('fine', [] as never)).rejects.toMatchObject({ field: 'input' });
    await expect(o.begin('fine', {}, { transactionId: 'a b' })).rejects.toMatchObject({
      field: 'transactionId',
    });
    await o.begin('fine', {}, { transactionId: 'same' });
    await expect(o.begin('fine', {}, { transactionId: 'same' })).rejects.toMatchObject({
      field: 'transactionId',
    });
    await expect(o.status('missing')).rejects.toBeInstanceOf(UnknownTransactionError);
    await expect(o.history('missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(o.list({ status: 'bogus' as never })).rejects.toMatchObject({ field: 'status' });
    expect(() => sagaEvents.command({ workerName: 'X!' } as never, { agentId: 'a' })).toThrow(
      InvalidNameError,
    );
    for (const e of [
      new UnknownSagaError('x'),
      new UnknownTransactionError('y'),
      new InvalidNameError('f', 1),
    ])
      expect(e).toBeInstanceOf(EventBusError);
  });
});
