import {
  type AgentEvent,
  ConfigError,
  EventBusError,
  MemoryBroker,
  MemoryTransport,
  PermanentError,
  QEEventBus,
  ValidationError,
} from '@qe/core';
import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ConsensusCoordinator,
  DuplicateAgentError,
  InvalidIdError,
  InvalidSpecError,
  InvalidTransitionError,
  MemoryConsensusStore,
  type Outcome,
  type ScaleSignal,
  SwarmNode,
  TaskFailedError,
  UnknownEntityError,
} from './index.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function makeBus(nodeId: string, broker: MemoryBroker) {
  const bus = new QEEventBus({ nodeId, transport: new MemoryTransport({ broker }), retryDelay: 10 });
  await bus.start();
  cleanups.push(() => bus.stop());
  return bus;
}

async function makeNode(nodeId: string, broker: MemoryBroker, opts: Record<string, unknown> = {}) {
  const bus = await makeBus(nodeId, broker);
  const node = new SwarmNode({ bus, heartbeatIntervalMs: 100, failureTimeoutMs: 400, ...opts });
  await node.start();
  cleanups.push(() => node.stop());
  return node;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('registry (memory transport, several nodes in one process)', () => {
  it('120 agents on 3 nodes: every node sees all; a node that starts late converges within one heartbeat interval', async () => {
    const broker = new MemoryBroker();
    const nodes = await Promise.all(['n1', 'n2', 'n3'].map((n) => makeNode(n, broker)));
    for (const [k, node] of nodes.entries())
      for (let i = 0; i < 40; i++)
        await node.registerAgent({
          id: `n${k}-a${i}`,
          type: 'worker',
          capabilities: ['x'],
          handler: () => 1,
        });
    await waitFor(
      () => nodes.every((n) => n.listAgents().length === 120),
      'all nodes seeing 120 agents',
      5000,
    );
    const late = await makeNode('late', broker);
    const t0 = Date.now();
    await waitFor(() => late.listAgents().length === 120, 'the late node to see 120 agents', 5000);
    expect(Date.now() - t0).toBeLessThanOrEqual(late.heartbeatIntervalMs + 150);
    const a = late.getAgent('n2-a7')!;
    expect(a).toMatchObject({
      type: 'worker',
      capabilities: ['x'],
      capacity: 1,
      pool: 'worker',
      nodeId: 'n3',
      status: 'active',
    });
    const s = late.getOrchestrationStats();
    expect(s.totalAgents).toBe(120);
    expect(s.pools.worker).toMatchObject({ agents: 120, capacity: 120 });
    expect(JSON.parse(JSON.stringify(s))).toEqual(s); // JSON-safe, for the dashboard
  });

  it('publishes spec 000 and spec 003 lifecycle names', async () => {
    const broker = new MemoryBroker();
    const node = await makeNode('n1', broker);
    const seen: string[] = [];
    node.bus.subscribe('agent.**', (e: AgentEvent) => {
      if (e.agentId === 'lc') seen.push(e.type);
    });
    await node.registerAgent({ id: 'lc', type: 'w', handler: () => 1 });
    await node.terminateAgent('lc');
    await waitFor(() => seen.includes('agent.terminated'), 'agent.terminated');
    expect(seen).toEqual(
      expect.arrayContaining([
        'agent.spawn',
        'agent.capability.register',
        'agent.spawned',
        'agent.started',
        'agent.terminate',
        'agent.terminated',
      ]),
    );
  });
});

describe('dispatch (memory)', () => {
  it('runs tasks on agents with the capabilities and returns results to the submitter', async () => {
    const broker = new MemoryBroker();
    const a = await makeNode('a', broker);
    const d = await makeNode('d', broker);
    await a.registerAgent({ id: 'gpu', type: 'w', capabilities: ['gpu'], handler: (c) => `gpu:${c.input}` });
    await a.registerAgent({ id: 'cpu', type: 'w', capabilities: ['cpu'], handler: (c) => `cpu:${c.input}` });
    await waitFor(() => d.listAgents().length === 2, 'd sees both');
    const r = await d.submit({ input: 7, requires: ['gpu'] });
    expect(r).toMatchObject({ result: 'gpu:7', agentId: 'gpu', attempts: 1 });
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) => d.submit({ input: i, requires: ['cpu'] })),
    );
    expect(many.every((x) => x.agentId === 'cpu')).toBe(true);
    expect(d.getOrchestrationStats().tasks.completed).toBe(21);
  });

  it('least-utilized spreads work; performance-weighted prefers the fast, reliable agent; a user strategy decides', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    const count: Record<string, number> = {};
    for (const [id, ms] of [
      ['fast', 1],
      ['slow', 60],
    ] as const)
      await host.registerAgent({
        id,
        type: 'w',
        capacity: 4,
        handler: async () => {
          count[id] = (count[id] ?? 0) + 1;
          await delay(ms);
        },
      });
    const lu = await makeNode('lu', broker, { strategy: 'least-utilized' });
    await waitFor(() => lu.listAgents().length === 2, 'lu sees agents');
    await Promise.all(Array.from({ length: 8 }, () => lu.submit({})));
    expect(count.fast).toBe(4); // 8 at once on two agents of capacity 4: half each
    expect(count.slow).toBe(4);
    count.fast = 0;
    count.slow = 0;
    const pw = await makeNode('pw', broker, { strategy: 'performance-weighted' });
    await waitFor(() => pw.listAgents().length === 2, 'pw sees agents');
    for (let i = 0; i < 20; i++) await Promise.all([pw.submit({}), pw.submit({})]);
    expect(count.fast!).toBeGreaterThan(count.slow! * 2);
    const us = await makeNode('us', broker, {
      strategy: (_t: unknown, c: { id: string }[]) => c.find((x) => x.id === 'slow')?.id,
    });
    await waitFor(() => us.listAgents().length === 2, 'us sees agents');
    const r = await us.submit({});
    expect(r.agentId).toBe('slow');
  });

  it('a task no agent can take waits, counted, until an agent comes; one past its deadline fails', async () => {
    const broker = new MemoryBroker();
    const d = await makeNode('d', broker);
    const p = d.submit({ requires: ['rare'], input: 1 });
    const late = d.submit({ requires: ['never'], deadline: Date.now() + 300 });
    await waitFor(() => d.getOrchestrationStats().tasks.waiting === 2, 'two waiting');
    expect(d.getOrchestrationStats().pools.unassigned?.waiting).toBe(2);
    await expect(late).rejects.toMatchObject({ name: 'TaskFailedError', reason: 'deadline' });
    const host = await makeNode('h', broker);
    await host.registerAgent({ id: 'r', type: 'w', capabilities: ['rare'], handler: (c) => c.input });
    expect((await p).result).toBe(1);
    expect(d.getOrchestrationStats().tasks).toMatchObject({ waiting: 0, failed: 1, completed: 1 });
  });

  it('retries a failing task on another attempt, dead-letters after maxAttempts, fails at once on PermanentError', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    let flaky = 0;
    await host.registerAgent({
      id: 'a',
      type: 'w',
      capacity: 2,
      handler: (c) => {
        if (c.kind === 'flaky' && ++flaky < 3) throw new Error('try again');
        if (c.kind === 'bad') throw new Error('always');
        if (c.kind === 'perm') throw new PermanentError('no');
        return c.attempt;
      },
    });
    const d = await makeNode('d', broker, { maxAttempts: 3 });
    await waitFor(() => d.listAgents().length === 1, 'agent seen');
    expect((await d.submit({ kind: 'flaky' })).result).toBe(3);
    const bad = d.submit({ kind: 'bad' });
    await expect(bad).rejects.toBeInstanceOf(TaskFailedError);
    await expect(bad).rejects.toMatchObject({ reason: 'dead-lettered', attempts: 3 });
    await expect(d.submit({ kind: 'perm' })).rejects.toMatchObject({ reason: 'failed', attempts: 1 });
    expect(d.getOrchestrationStats().tasks).toMatchObject({ deadLettered: 1, failed: 1, reassigned: 4 });
  });

  it('a task waits for its dependencies (task.dependency.resolve), also an external one', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    const order: string[] = [];
    await host.registerAgent({
      id: 'a',
      type: 'w',
      capacity: 4,
      handler: async (c) => {
        order.push(c.taskId);
        await delay(20);
      },
    });
    const d = await makeNode('d', broker);
    await waitFor(() => d.listAgents().length === 1, 'agent seen');
    const resolves: string[] = [];
    d.bus.subscribe('task.dependency.resolve', (e: AgentEvent) => {
      resolves.push((e.data as { taskId: string }).taskId);
    });
    const c = d.submit({ id: 'c', dependsOn: ['a1', 'b1', 'ext'] });
    const a1 = d.submit({ id: 'a1' });
    const b1 = d.submit({ id: 'b1', dependsOn: ['a1'] });
    await Promise.all([a1, b1]);
    expect(d.getTask('c')?.state).toBe('blocked');
    await d.resolveDependency('ext');
    await c;
    expect(order).toEqual(['a1', 'b1', 'c']);
    expect(resolves).toEqual(expect.arrayContaining(['b1', 'c']));
  });

  it('a node that dies: its agents are declared failed within the bound and their tasks complete elsewhere (0 lost)', async () => {
    const broker = new MemoryBroker();
    const doomedBus = await makeBus('doomed', broker);
    const doomed = new SwarmNode({ bus: doomedBus, heartbeatIntervalMs: 100, failureTimeoutMs: 400 });
    await doomed.start();
    cleanups.push(() => doomed.stop());
    const safe = await makeNode('safe', broker);
    const d = await makeNode('d', broker);
    const ledger = new Map<string, string[]>();
    const handler = async (c: { taskId: string; agentId: string }) => {
      await delay(20 + Math.random() * 30);
      ledger.set(c.taskId, [...(ledger.get(c.taskId) ?? []), c.agentId]);
      return c.agentId;
    };
    for (let i = 0; i < 10; i++) {
      await doomed.registerAgent({
        id: `x${i}`,
        type: 'w',
        capacity: 2,
        handler: (c) => new Promise(() => void c),
      });
      await safe.registerAgent({ id: `s${i}`, type: 'w', capacity: 2, handler });
    }
    await waitFor(() => d.listAgents().length === 20, 'd sees 20');
    const failedAt = new Map<string, number>();
    d.on('agentFailed', (a: { id: string }) => failedAt.set(a.id, Date.now()));
    const all = Array.from({ length: 200 }, (_, i) => d.submit({ id: `t${i}` }));
    await waitFor(
      () => d.listTasks('assigned').some((t) => t.agentId?.startsWith('x')),
      'tasks on doomed agents',
    );
    const held = d.listTasks('assigned').filter((t) => t.agentId?.startsWith('x')).length;
    expect(held).toBeGreaterThan(0);
    // the crash: no terminate, no more heartbeats, nothing published
    const killedAt = Date.now();
    await doomedBus.stop();
    const results = await Promise.all(all);
    expect(results).toHaveLength(200);
    expect(new Set(results.map((r) => r.taskId)).size).toBe(200);
    for (const r of results) expect(r.agentId).toMatch(/^s/);
    expect(ledger.size).toBe(200);
    expect(failedAt.size).toBe(10);
    const bound = d.failureTimeoutMs + d.heartbeatIntervalMs + 500;
    for (const at of failedAt.values()) expect(at - killedAt).toBeLessThan(bound);
    expect(results.filter((r) => r.attempts > 1).length).toBeGreaterThanOrEqual(held);
    expect(d.getOrchestrationStats()).toMatchObject({ failedAgents: 10, activeAgents: 10 });
  });

  it('two dispatchers on the same agents: an agent refuses what exceeds its capacity, the task waits and completes', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    let running = 0;
    let maxRunning = 0;
    for (let i = 0; i < 3; i++)
      await host.registerAgent({
        id: `a${i}`,
        type: 'w',
        capacity: 2,
        handler: async () => {
          maxRunning = Math.max(maxRunning, ++running);
          await delay(5);
          running--;
        },
      });
    const d1 = await makeNode('d1', broker);
    const d2 = await makeNode('d2', broker);
    await waitFor(() => d1.listAgents().length === 3 && d2.listAgents().length === 3, 'both see the agents');
    const all = await Promise.all([
      ...Array.from({ length: 60 }, () => d1.submit({})),
      ...Array.from({ length: 60 }, () => d2.submit({})),
    ]);
    expect(all).toHaveLength(120);
    expect(maxRunning).toBeLessThanOrEqual(6); // never more than the capacity, although both dispatched at once
    const rejected = d1.getOrchestrationStats().tasks.rejected + d2.getOrchestrationStats().tasks.rejected;
    expect(rejected).toBeGreaterThan(0);
    expect(all.every((r) => r.attempts === 1)).toBe(true); // a refusal is not an attempt
  });

  it('an attempt that times out is handed on and cancelled on the agent', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    let aborted = 0;
    await host.registerAgent({
      id: 'stuck',
      type: 'w',
      handler: (c) =>
        new Promise((_, rej) =>
          c.signal.addEventListener('abort', () => {
            aborted++;
            rej(new Error('aborted'));
          }),
        ),
    });
    const d = await makeNode('d', broker);
    await waitFor(() => d.listAgents().length === 1, 'agent seen');
    const p = d.submit({ timeoutMs: 100, maxAttempts: 2 });
    await expect(p).rejects.toMatchObject({ reason: 'dead-lettered', attempts: 2 });
    await waitFor(() => aborted === 2, 'both attempts aborted');
    expect(d.getOrchestrationStats().tasks.timedOut).toBe(2);
  });
});

describe('swarms (memory)', () => {
  it('a paused swarm takes no task until resumed; phases follow the state machine', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    const ctl = await makeNode('ctl', broker);
    await ctl.initSwarm('s1', { phases: { plan: ['build'], build: ['test'], test: [] }, phase: 'plan' });
    await ctl.startSwarm('s1');
    const starts: { at: number; id: string }[] = [];
    for (let i = 0; i < 4; i++)
      await host.registerAgent({
        id: `s1-${i}`,
        type: 'w',
        swarmId: 's1',
        handler: (c) => {
          starts.push({ at: Date.now(), id: c.taskId });
        },
      });
    await waitFor(() => ctl.listAgents({ swarmId: 's1' }).length === 4, 'ctl sees the swarm');
    await Promise.all(Array.from({ length: 8 }, () => ctl.submit({ swarmId: 's1' })));
    const paused = await ctl.pauseSwarm('s1'); // resolves once every agent acknowledged
    expect(paused.state).toBe('paused');
    expect(ctl.listAgents({ swarmId: 's1', status: 'paused' })).toHaveLength(4);
    const before = starts.length;
    const hbBefore = ctl.getOrchestrationStats().heartbeatsReceived;
    const unassignableBefore = ctl.getOrchestrationStats().unassignable;
    const waiting = Array.from({ length: 10 }, (_, i) => ctl.submit({ id: `p${i}`, swarmId: 's1' }));
    // positive signals that time passed and the dispatcher looked: 3 heartbeat rounds, scheduling passes
    await waitFor(
      () =>
        ctl.getOrchestrationStats().heartbeatsReceived >= hbBefore + 12 &&
        ctl.getOrchestrationStats().unassignable > unassignableBefore + 2,
      'heartbeats of the paused agents and scheduling passes',
    );
    expect(ctl.getOrchestrationStats().tasks.waiting).toBe(10);
    expect(starts.length).toBe(before);
    await expect(ctl.pauseSwarm('s1')).rejects.toBeInstanceOf(InvalidTransitionError);
    const resumedAt = Date.now();
    await ctl.resumeSwarm('s1');
    await Promise.all(waiting);
    for (const s of starts.filter((x) => x.id.startsWith('p')))
      expect(s.at).toBeGreaterThanOrEqual(resumedAt);
    expect((await ctl.transitionSwarm('s1', 'build')).phase).toBe('build');
    await expect(ctl.transitionSwarm('s1', 'plan')).rejects.toBeInstanceOf(InvalidTransitionError);
    expect(host.getSwarm('s1')).toMatchObject({ state: 'running', phase: 'build' });
    await ctl.completeSwarm('s1');
    expect(ctl.getOrchestrationStats().swarms.s1).toEqual({ state: 'completed', phase: 'build' });
    await expect(ctl.resumeSwarm('s1')).rejects.toBeInstanceOf(InvalidTransitionError);
    // a swarm that errors: its agents take nothing until it is initialized again
    await ctl.initSwarm('s2');
    await ctl.startSwarm('s2');
    const errored = await ctl.failSwarm('s2', 'planner crashed');
    expect(errored).toMatchObject({ state: 'error', error: 'planner crashed' });
    await expect(ctl.startSwarm('s2')).rejects.toBeInstanceOf(InvalidTransitionError);
    expect((await ctl.initSwarm('s2')).state).toBe('initialized');
  });
});

describe('autoscaling signals (memory)', () => {
  it('signals scale-up when the pool stays over the threshold for the window, once per cooldown; scale-down when idle', async () => {
    const broker = new MemoryBroker();
    const host = await makeNode('h', broker);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    for (let i = 0; i < 2; i++)
      await host.registerAgent({ id: `w${i}`, type: 'w', pool: 'p', handler: () => gate });
    const signals: ScaleSignal[] = [];
    host.autoscale({
      pool: 'p',
      scaleUpAt: 0.9,
      scaleDownAt: 0.2,
      windowMs: 200,
      cooldownMs: 600,
      sampleEveryMs: 20,
      maxAgents: 10,
      onSignal: (s) => {
        signals.push(s);
      },
    });
    const tasks = Array.from({ length: 6 }, () => host.submit({ pool: 'p' }));
    await waitFor(() => signals.length >= 1, 'a scale-up signal');
    expect(signals[0]).toMatchObject({ pool: 'p', direction: 'up', currentAgents: 2, waiting: 4 });
    // demand 6 at a target pressure of 0.55 per agent: 11 agents, capped at 10
    expect(signals[0]!.suggestedAgents).toBe(10);
    const firstAt = signals[0]!.at;
    await waitFor(() => signals.length >= 2, 'a second signal after the cooldown', 5000);
    expect(signals[1]!.at - firstAt).toBeGreaterThanOrEqual(600);
    release();
    await Promise.all(tasks);
    await waitFor(() => signals.some((s) => s.direction === 'down'), 'a scale-down signal', 5000);
    expect(signals.find((s) => s.direction === 'down')).toMatchObject({ suggestedAgents: 1 });
    expect(host.getOrchestrationStats().scaleSignals.length).toBe(signals.length);
    expect(() => host.autoscale({ pool: 'p', scaleUpAt: 0.3, scaleDownAt: 0.5, onSignal: () => {} })).toThrow(
      InvalidSpecError,
    );
  });
});

describe('consensus (memory)', () => {
  it('30 proposals, 3 coordinators racing on one store: exactly one outcome each; duplicate, ineligible and late votes refused and counted', async () => {
    const broker = new MemoryBroker();
    const store = new MemoryConsensusStore();
    const coords = [];
    for (const id of ['c1', 'c2', 'c3']) {
      const c = new ConsensusCoordinator({ bus: await makeBus(id, broker), store });
      await c.start();
      cleanups.push(() => c.stop());
      coords.push(c);
    }
    const voterBus = await makeBus('voters', broker);
    const voter = new ConsensusCoordinator({ bus: voterBus, store });
    const outcomes = new Map<string, Outcome[]>();
    voterBus.subscribe(['consensus.achieve', 'consensus.fail'], (e: AgentEvent) => {
      const o = e.data as Outcome;
      outcomes.set(o.proposalId, [...(outcomes.get(o.proposalId) ?? []), o]);
    });
    const voters = ['v1', 'v2', 'v3', 'v4', 'v5'];
    for (let i = 0; i < 30; i++) {
      const c = coords[i % 3]!;
      const p = await c.propose({ id: `p${i}`, options: ['yes', 'no'], voters, timeoutMs: 2000 });
      const votes = voters.map((v, k) => voter.vote(p.id, v, (k + i) % 3 === 0 ? 'no' : 'yes'));
      votes.push(voter.vote(p.id, 'v1', 'no'), voter.vote(p.id, 'mallory', 'yes'));
      await Promise.all(votes);
    }
    await waitFor(() => outcomes.size === 30, '30 outcomes');
    const late = await coords[0]!.propose({ id: 'late', options: ['yes', 'no'], voters });
    for (const v of ['v1', 'v2', 'v3']) await voter.vote('late', v, 'yes');
    expect(await coords[1]!.outcome('late')).toMatchObject({ kind: 'achieve', decision: 'yes' });
    await voter.vote(late.id, 'v4', 'no'); // after the outcome
    await waitFor(async () => (await store.refused('late')).late === 1, 'the late vote counted');
    outcomes.delete('late');
    for (const [, list] of outcomes) {
      expect(list).toHaveLength(1);
      expect(list[0]).toMatchObject({ kind: 'achieve' });
    }
    const refused = await coords[0]!.refusedVotes('p3');
    expect(refused.ineligible).toBe(1);
    expect((refused.duplicate ?? 0) + (refused.late ?? 0)).toBeGreaterThanOrEqual(1);
    const total = coords.reduce((n, c) => n + c.stats().achieved, 0);
    expect(total).toBe(31); // 30 and the one with the late vote
  });

  it('weighted threshold, unreachable and deadline failures', async () => {
    const broker = new MemoryBroker();
    const c = new ConsensusCoordinator({ bus: await makeBus('c', broker) });
    await c.start();
    cleanups.push(() => c.stop());
    const w = await c.propose({ options: ['a', 'b'], voters: { big: 3, s1: 1, s2: 1 }, threshold: 0.6 });
    await c.vote(w.id, 's1', 'a');
    await c.vote(w.id, 'big', 'a');
    expect(await c.outcome(w.id)).toMatchObject({ kind: 'achieve', decision: 'a', tally: { a: 4, b: 0 } });
    const u = await c.propose({ options: ['a', 'b'], voters: ['x', 'y'], quorum: 2 });
    await c.vote(u.id, 'x', 'a');
    await c.vote(u.id, 'y', 'b');
    expect(await c.outcome(u.id)).toMatchObject({ kind: 'fail', reason: 'unreachable' });
    const d = await c.propose({ options: ['a'], voters: ['x', 'y'], timeoutMs: 100 });
    expect(await c.outcome(d.id)).toMatchObject({ kind: 'fail', reason: 'deadline' });
  });
});

describe('bad input gives typed errors', () => {
  it('EventBusError subclasses with codes', async () => {
    const broker = new MemoryBroker();
    const bus = await makeBus('b', broker);
    expect(() => new SwarmNode({ bus, heartbeatIntervalMs: 0 })).toThrow(InvalidSpecError);
    expect(() => new SwarmNode({ bus, strategy: 'random' as never })).toThrow(InvalidSpecError);
    expect(() => new SwarmNode({ bus, bogus: 1 } as never)).toThrow(ConfigError);
    expect(() => new SwarmNode({ bus: {} as never })).toThrow(ConfigError);
    const node = new SwarmNode({ bus });
    expect(() => node.submit({})).toThrow(InvalidSpecError); // not started
    await node.start();
    cleanups.push(() => node.stop());
    await expect(node.registerAgent({ id: 'bad id!', type: 'w', handler: () => 1 })).rejects.toBeInstanceOf(
      InvalidIdError,
    );
    await expect(node.registerAgent({ id: 'a', type: 'w', handler: 1 as never })).rejects.toBeInstanceOf(
      InvalidSpecError,
    );
    await expect(
      node.registerAgent({ id: 'a', type: 'w', capacity: 0, handler: () => 1 }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      details: { field: 'capacity' },
    });
    await expect(
      node.registerAgent({ id: 'a', type: 'w', colour: 'red', handler: () => 1 } as never),
    ).rejects.toBeInstanceOf(ValidationError);
    await node.registerAgent({ id: 'a', type: 'w', handler: () => 1 });
    await expect(node.registerAgent({ id: 'a', type: 'w', handler: () => 1 })).rejects.toBeInstanceOf(
      DuplicateAgentError,
    );
    expect(() => node.submit({ priority: 9 as never })).toThrow(InvalidSpecError);
    expect(() => node.submit({ requires: 'gpu' as never })).toThrow(InvalidSpecError);
    expect(() => node.submit({ timeoutMs: -1 })).toThrow(InvalidSpecError);
    await expect(node.cancel('nope')).rejects.toBeInstanceOf(UnknownEntityError);
    await expect(node.startSwarm('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(node.terminateAgent('nope')).rejects.toBeInstanceOf(UnknownEntityError);
    const c = new ConsensusCoordinator({ bus });
    await expect(c.propose({ options: [], voters: ['a'] })).rejects.toBeInstanceOf(InvalidSpecError);
    await expect(c.propose({ options: ['a'], voters: ['a'], quorum: 2 })).rejects.toBeInstanceOf(
      InvalidSpecError,
    );
    await expect(c.propose({ options: ['a'], voters: { a: -1 } })).rejects.toBeInstanceOf(InvalidSpecError);
    await expect(
      c.propose({ options: ['a'], voters: ['a'], quorum: 1, threshold: 0.5 }),
    ).rejects.toBeInstanceOf(InvalidSpecError);
    await expect(c.vote('p', 'bad voter', 'a')).rejects.toBeInstanceOf(InvalidIdError);
    for (const E of [InvalidSpecError, InvalidIdError, UnknownEntityError, TaskFailedError])
      expect(E.prototype).toBeInstanceOf(EventBusError);
  });

  it('cancel rejects the submitter and aborts the handler', async () => {
    const broker = new MemoryBroker();
    const node = await makeNode('n', broker);
    let aborted = false;
    await node.registerAgent({
      id: 'a',
      type: 'w',
      handler: (c) =>
        new Promise((_, rej) =>
          c.signal.addEventListener('abort', () => {
            aborted = true;
            rej(new Error('x'));
          }),
        ),
    });
    const p = node.submit({ id: 'c1' });
    await waitFor(() => node.getTask('c1')?.state === 'assigned', 'assigned');
    await waitFor(() => node.getAgent('a')?.active === 1 || aborted === false, 'running');
    expect(await node.cancel('c1')).toBe(true);
    await expect(p).rejects.toMatchObject({ reason: 'cancelled' });
    await waitFor(() => aborted, 'handler aborted');
  });
});
