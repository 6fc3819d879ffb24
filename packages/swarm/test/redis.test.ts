import type { ChildProcess } from 'node:child_process';
import { type AgentEvent, QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { deletePrefix, startFixture, waitFor } from '@qe/test-utils';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConsensusCoordinator, type Outcome, SwarmNode, type TaskResult } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const r = new Redis(URL_);
const prefixes: string[] = [];
const children: ChildProcess[] = [];
const stops: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(async () => {
  for (const p of prefixes) await deletePrefix(p, URL_);
  r.disconnect();
});

const newPrefix = () => {
  const p = `qe-test:swarm:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  prefixes.push(p);
  return p;
};

interface Proc {
  proc: ChildProcess;
  lines: string[];
  send(line: string): void;
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
    async waitLine(prefix, timeoutMs = 20_000) {
      await waitFor(
        () => lines.some((l) => l.startsWith(prefix)),
        `${args[3]} printing "${prefix}"`,
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

const HB = 500;
const FAIL = 2000;
const agentsProc = (p: string, id: string, n: number, swarm = '-') =>
  child(['agents', URL_, p, id, String(n), swarm, String(HB), String(FAIL)]);

async function parentBus(p: string, id: string) {
  const bus = new QEEventBus({
    nodeId: id,
    retryDelay: 50,
    transport: new RedisStreamsTransport({
      url: URL_,
      keyPrefix: `${p}:bus`,
      blockMs: 100,
      claimIdleMs: 1000,
    }),
  });
  await bus.start();
  stops.push(() => bus.stop());
  return bus;
}

async function parentNode(p: string, id: string) {
  const node = new SwarmNode({
    bus: await parentBus(p, id),
    heartbeatIntervalMs: HB,
    failureTimeoutMs: FAIL,
    redis: r,
    keyPrefix: `${p}:swarm`,
  });
  await node.start();
  stops.push(() => node.stop());
  return node;
}

async function askView(c: Proc, n: number): Promise<void> {
  await waitFor(
    async () => {
      c.send('view');
      await new Promise((res) => setTimeout(res, 50));
      return c.lines.includes(`view ${n}`);
    },
    `a child seeing ${n} agents`,
    20_000,
  );
}

describe('swarm over Redis, agents in separate processes', () => {
  it('120 agents in 3 processes converge; SIGKILL of one: its agents are failed within the bound and every task it held completes elsewhere (0 lost)', async () => {
    const p = newPrefix();
    const procs = ['p1', 'p2', 'p3'].map((id) => agentsProc(p, id, 40));
    await Promise.all(procs.map((c) => c.waitLine('ready', 40_000)));
    // a node that joins after the agents registered learns them all from one round of heartbeats
    const t0 = Date.now();
    const d = await parentNode(p, 'dispatcher');
    await waitFor(
      () => d.listAgents({ status: 'active' }).length === 120,
      'the dispatcher seeing 120 agents',
      20_000,
    );
    const convergedIn = Date.now() - t0;
    expect(convergedIn).toBeLessThanOrEqual(HB + 1500); // one interval, plus subscription and delivery slack
    await Promise.all(procs.map((c) => askView(c, 120)));
    expect(new Set(d.listAgents().map((a) => a.nodeId))).toEqual(new Set(['p1', 'p2', 'p3']));

    const failedAt = new Map<string, number>();
    d.on('agentFailed', (a: { id: string }) => failedAt.set(a.id, Date.now()));
    const failedEvents: string[] = [];
    d.bus.subscribe('agent.failed', (e: AgentEvent) => {
      failedEvents.push(e.agentId);
    });
    // tasks long enough (300-500 ms) that p2's agents are mid-task whenever the kill comes,
    // however far behind this process is in reading completions
    const N = 600;
    const results = new Map<string, TaskResult>();
    const all = Array.from({ length: N }, (_, i) =>
      d.submit({ id: `t${i}`, requires: ['work'], input: { ms: 300 + (i % 5) * 50 } }).then((res) => {
        results.set(res.taskId, res);
        return res;
      }),
    );
    await waitFor(() => results.size >= 100, '100 tasks done', 30_000);
    const heldByP2 = d
      .listTasks('assigned')
      .filter((t) => t.agentId?.startsWith('p2-'))
      .map((t) => t.id);
    expect(heldByP2.length).toBeGreaterThan(0);
    const killedAt = Date.now();
    await procs[1]!.kill();
    const done = await Promise.all(all);

    // every task completed, each exactly once for the submitter, none on the dead process after it died
    expect(done).toHaveLength(N);
    expect(new Set(done.map((x) => x.taskId)).size).toBe(N);
    // a task p2 finished just before the kill may count as p2's; every other one was handed on
    let handedOn = 0;
    for (const id of heldByP2) {
      const res = results.get(id)!;
      if (res.agentId.startsWith('p2-'))
        expect(res.startedAt + res.durationMs).toBeLessThanOrEqual(killedAt + 100);
      else {
        expect(res.attempts).toBeGreaterThanOrEqual(2);
        handedOn++;
      }
    }
    expect(handedOn).toBeGreaterThan(0);
    for (const res of done)
      if (res.agentId.startsWith('p2-'))
        expect(res.startedAt + res.durationMs).toBeLessThanOrEqual(killedAt + 100);
    // the ledger in Redis: every task has at least one effect (0 lost)
    const ledger = await Promise.all(done.map((x) => r.llen(`${p}:ledger:${x.taskId}`)));
    expect(ledger.filter((n) => n === 0)).toHaveLength(0);

    // the dead process's 40 agents declared failed within failureTimeout + one check + slack
    await waitFor(() => failedAt.size === 40, '40 agents declared failed', 20_000);
    for (const [id, at] of failedAt) {
      expect(id.startsWith('p2-')).toBe(true);
      expect(at - killedAt).toBeLessThanOrEqual(FAIL + HB + 1500);
    }
    const s = d.getOrchestrationStats();
    expect(s).toMatchObject({ activeAgents: 80, failedAgents: 40 });
    expect(s.tasks).toMatchObject({ completed: N, waiting: 0, assigned: 0, deadLettered: 0 });
    expect(s.tasks.reassigned).toBeGreaterThanOrEqual(handedOn);
    // the survivors saw it too
    await Promise.all([askView(procs[0]!, 80), askView(procs[2]!, 80)]);
    // 3 nodes noticed (this one and the 2 survivors, which have now declared them too);
    // one agent.failed per agent all the same (SET NX in Redis)
    await waitFor(() => failedEvents.length >= 40, '40 agent.failed events');
    expect(failedEvents.filter((id) => id.startsWith('p2-')).length).toBe(40);
    expect(new Set(failedEvents).size).toBe(40);
  }, 90_000);

  it('a paused swarm takes no task (counted in Redis after the pause is acknowledged) until resumed', async () => {
    const p = newPrefix();
    const ctl = await parentNode(p, 'ctl');
    await ctl.initSwarm('sw');
    await ctl.startSwarm('sw');
    const procs = ['q1', 'q2'].map((id) => agentsProc(p, id, 10, 'sw'));
    await Promise.all(procs.map((c) => c.waitLine('ready', 40_000)));
    await waitFor(
      () => ctl.listAgents({ swarmId: 'sw', status: 'active' }).length === 20,
      'ctl seeing the swarm',
      20_000,
    );
    await Promise.all(Array.from({ length: 40 }, () => ctl.submit({ swarmId: 'sw', input: { ms: 5 } })));
    expect(await r.llen(`${p}:starts`)).toBe(40);

    await ctl.pauseSwarm('sw'); // resolves once all 20 agents acknowledged (agent.status.update: paused)
    expect(ctl.listAgents({ swarmId: 'sw', status: 'paused' })).toHaveLength(20);
    const startsAtPause = await r.llen(`${p}:starts`);
    const before = ctl.getOrchestrationStats();
    const held = Array.from({ length: 20 }, (_, i) =>
      ctl.submit({ id: `held${i}`, swarmId: 'sw', input: { ms: 5 } }),
    );
    // proof that time passed with live agents and a dispatcher that kept looking: 3 rounds of
    // heartbeats from the 20 paused agents, and scheduling passes that found no agent
    await waitFor(
      () => {
        const s = ctl.getOrchestrationStats();
        return (
          s.heartbeatsReceived >= before.heartbeatsReceived + 60 && s.unassignable >= before.unassignable + 5
        );
      },
      'three heartbeat rounds of the paused agents',
      20_000,
    );
    expect(ctl.getOrchestrationStats().tasks.waiting).toBe(20);
    expect(ctl.getOrchestrationStats().pausedAgents).toBe(20);
    expect(await r.llen(`${p}:starts`)).toBe(startsAtPause);

    const resumedAt = Date.now();
    await ctl.resumeSwarm('sw');
    await Promise.all(held);
    const starts = (await r.lrange(`${p}:starts`, 0, -1)).map((l) => l.split(' '));
    const heldStarts = starts.filter(([id]) => id!.startsWith('held'));
    expect(heldStarts).toHaveLength(20);
    for (const [, at] of heldStarts) expect(Number(at)).toBeGreaterThanOrEqual(resumedAt - 5); // clocks of one machine
  }, 90_000);

  it('consensus with coordinators racing in 3 processes (and this one): exactly one outcome for each of 30 proposals', async () => {
    const p = newPrefix();
    const procs = ['c1', 'c2', 'c3'].map((id) => child(['coord', URL_, p, id]));
    await Promise.all(procs.map((c) => c.waitLine('ready', 40_000)));
    const bus = await parentBus(p, 'c0');
    const redis = new Redis(URL_);
    stops.push(async () => redis.disconnect());
    const c0 = new ConsensusCoordinator({ bus, redis, keyPrefix: `${p}:swarm` });
    await c0.start();
    stops.push(() => c0.stop());
    const outcomes = new Map<string, Outcome[]>();
    bus.subscribe(['consensus.achieve', 'consensus.fail'], (e: AgentEvent) => {
      const o = e.data as Outcome;
      outcomes.set(o.proposalId, [...(outcomes.get(o.proposalId) ?? []), o]);
    });
    const voters = ['v1', 'v2', 'v3', 'v4', 'v5', 'v6', 'v7'];
    const N = 30;
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const id = `prop${i}`;
        const short = i % 5 === 4; // these get too few votes and race on the deadline instead
        await c0.propose({ id, options: ['a', 'b'], voters, timeoutMs: short ? 800 : 20_000 });
        const cast = short ? voters.slice(0, 2) : voters;
        await Promise.all([
          ...cast.map((v, k) => c0.vote(id, v, (k + i) % 4 === 0 ? 'b' : 'a')),
          c0.vote(id, 'v1', 'b'), // a second vote by v1: refused
          c0.vote(id, 'intruder', 'a'), // not eligible: refused
        ]);
      }),
    );
    await waitFor(() => outcomes.size === N, `${N} outcomes`, 30_000);
    // no second outcome can trickle in: every coordinator process has handled every vote event
    // (recorded or refused by the first to get it, `seen` by the others) and has no open proposal
    const votes = 24 * (7 + 2) + 6 * (2 + 2);
    for (const c of procs)
      await waitFor(
        async () => {
          c.send('stats');
          await new Promise((res) => setTimeout(res, 50));
          return c.lines.includes(`stats processed=${votes} open=0`);
        },
        'a coordinator process to have handled every vote',
        20_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; it printed ${c.lines.slice(-2).join(' / ')}`);
      });
    await waitFor(() => c0.stats().open === 0, 'this coordinator to have no open proposal');
    let achieved = 0;
    for (let i = 0; i < N; i++) {
      const list = outcomes.get(`prop${i}`)!;
      expect(list).toHaveLength(1);
      const stored = await c0.store.outcome(`prop${i}`);
      expect(stored).toEqual(list[0]);
      if (i % 5 === 4) expect(list[0]).toMatchObject({ kind: 'fail', reason: 'deadline' });
      else {
        expect(list[0]).toMatchObject({ kind: 'achieve', decision: 'a' });
        achieved++;
      }
      const refused = await c0.refusedVotes(`prop${i}`);
      expect(refused.ineligible).toBe(1); // the intruder
      expect(refused.duplicate).toBe(1); // v1's second vote, whichever came second
    }
    expect(achieved).toBe(24);
    // a vote after the deadline is refused as late, and changes nothing
    for (let i = 4; i < N; i += 5) await c0.vote(`prop${i}`, 'v3', 'a');
    await waitFor(async () => {
      for (let i = 4; i < N; i += 5) if ((await c0.refusedVotes(`prop${i}`)).late !== 1) return false;
      return true;
    }, 'six late votes refused');
    for (let i = 4; i < N; i += 5) expect(await c0.store.outcome(`prop${i}`)).toMatchObject({ kind: 'fail' });
    // the decisions were spread over the racing coordinators, not all taken by one
    const deciders = new Set([...outcomes.values()].map((l) => l[0]!.decidedBy));
    expect(deciders.size).toBeGreaterThan(1);
  }, 90_000);
});
