import { ConfigError } from '@qe/core';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ConsensusStats } from './consensus.js';
import type { OrchestrationStats } from './node.js';

/** What the metrics read at scrape time: a `SwarmNode` (and optionally a `ConsensusCoordinator`). */
export interface SwarmStatsSource {
  getOrchestrationStats(): OrchestrationStats;
}
export interface ConsensusStatsSource {
  stats(): ConsensusStats;
}

export interface SwarmMetricsOptions {
  /** Metric name prefix. Default `ossa_` (spec 003's names). */
  prefix?: string;
  consensus?: ConsensusStatsSource;
}

type TaskCounter =
  | 'completed'
  | 'failed'
  | 'deadLettered'
  | 'cancelled'
  | 'reassigned'
  | 'rejected'
  | 'timedOut';
const TASK_COUNTERS: [TaskCounter, string, string][] = [
  ['completed', 'swarm_tasks_completed_total', 'Tasks this node dispatched that completed.'],
  [
    'failed',
    'swarm_tasks_failed_total',
    'Tasks this node dispatched that failed for good (errors, deadlines).',
  ],
  ['deadLettered', 'swarm_tasks_dead_lettered_total', 'Tasks dead-lettered after their last attempt.'],
  ['cancelled', 'swarm_tasks_cancelled_total', 'Tasks cancelled.'],
  [
    'reassigned',
    'swarm_tasks_reassigned_total',
    'Attempts that ended without a result (agent died, timeout, error) and were handed on.',
  ],
  [
    'rejected',
    'swarm_tasks_rejected_total',
    'Assignments an agent refused (full, paused); not counted as attempts.',
  ],
  ['timedOut', 'swarm_tasks_timed_out_total', 'Attempts that timed out.'],
];

/**
 * Registers swarm metrics on a prom-client registry, read from
 * `getOrchestrationStats()` at scrape time: `<prefix>agent_orchestration_pools_total`
 * (spec 003), agents by status, per-pool capacity/utilization/waiting/throughput,
 * tasks by state, task counters, agent failures and, with `consensus`, proposals
 * and refused votes.
 */
export function registerSwarmMetrics(
  registry: Registry,
  source: SwarmStatsSource,
  options: SwarmMetricsOptions = {},
): void {
  const p = options.prefix ?? 'ossa_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(p))
    throw new ConfigError('prefix', 'is not a valid metric name prefix');
  const registers = [registry];
  // one snapshot per scrape, shared by every metric
  let snap: OrchestrationStats | undefined;
  let snapAt = 0;
  const stats = () => {
    const now = Date.now();
    if (!snap || now - snapAt > 100) {
      snap = source.getOrchestrationStats();
      snapAt = now;
    }
    return snap;
  };
  new Gauge({
    name: `${p}agent_orchestration_pools_total`,
    help: 'Agent pools with at least one live agent or waiting task.',
    registers,
    collect() {
      this.set(Object.keys(stats().pools).length);
    },
  });
  new Gauge({
    name: `${p}swarm_agents`,
    help: "Agents in this node's registry by status.",
    labelNames: ['status'],
    registers,
    collect() {
      const s = stats();
      this.set({ status: 'active' }, s.activeAgents);
      this.set({ status: 'paused' }, s.pausedAgents);
      this.set({ status: 'failed' }, s.failedAgents);
      this.set({ status: 'total' }, s.totalAgents);
    },
  });
  new Gauge({
    name: `${p}swarm_average_utilization_ratio`,
    help: 'Running tasks over capacity across live agents, 0..1.',
    registers,
    collect() {
      this.set(stats().averageUtilization / 100);
    },
  });
  const pool = (
    name: string,
    help: string,
    key: 'agents' | 'capacity' | 'active' | 'waiting' | 'throughput' | 'utilization',
    scale = 1,
  ) =>
    new Gauge({
      name: `${p}${name}`,
      help,
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        for (const [k, v] of Object.entries(stats().pools)) this.set({ pool: k }, v[key] * scale);
      },
    });
  pool('swarm_pool_agents', 'Live agents per pool.', 'agents');
  pool('swarm_pool_capacity', 'Task slots per pool.', 'capacity');
  pool('swarm_pool_active_tasks', 'Tasks running per pool.', 'active');
  pool('swarm_pool_waiting_tasks', 'Tasks waiting for an agent of the pool.', 'waiting');
  pool('swarm_pool_utilization_ratio', 'Running tasks over capacity per pool, 0..1.', 'utilization', 0.01);
  pool(
    'swarm_pool_throughput_per_second',
    'Tasks completed per second over the last 10 s, per pool.',
    'throughput',
  );
  new Gauge({
    name: `${p}swarm_tasks`,
    help: 'Tasks this node dispatched, by state now.',
    labelNames: ['state'],
    registers,
    collect() {
      const t = stats().tasks;
      this.set({ state: 'blocked' }, t.blocked);
      this.set({ state: 'waiting' }, t.waiting);
      this.set({ state: 'assigned' }, t.assigned);
    },
  });
  for (const [key, name, help] of TASK_COUNTERS) {
    let last = 0;
    new Counter({
      name: p + name,
      help,
      registers,
      collect() {
        const now = stats().tasks[key];
        if (now > last) this.inc(now - last);
        last = now;
      },
    });
  }
  let lastFail = 0;
  new Counter({
    name: `${p}swarm_agent_failures_total`,
    help: 'Agents this node declared failed (no heartbeat within the failure timeout).',
    registers,
    collect() {
      const now = stats().agentFailuresDetected;
      if (now > lastFail) this.inc(now - lastFail);
      lastFail = now;
    },
  });
  let lastSignals = 0;
  new Counter({
    name: `${p}swarm_scale_signals_total`,
    help: 'Scale-up and scale-down signals this node raised.',
    registers,
    collect() {
      const n = stats().scaleSignals.length;
      if (n > lastSignals) this.inc(n - lastSignals);
      lastSignals = n;
    },
  });
  const c = options.consensus;
  if (c) {
    new Gauge({
      name: `${p}consensus_proposals`,
      help: 'Proposals by state as seen by this coordinator.',
      labelNames: ['state'],
      registers,
      collect() {
        const s = c.stats();
        this.set({ state: 'open' }, s.open);
        this.set({ state: 'achieved' }, s.achieved);
        this.set({ state: 'failed' }, s.failed);
      },
    });
    new Gauge({
      name: `${p}consensus_votes_refused`,
      help: 'Votes this coordinator refused, by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [k, v] of Object.entries(c.stats().votesRefused)) this.set({ reason: k }, v);
      },
    });
  }
}
