import { QEEventBus } from '@qe/core';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConsensusCoordinator, SwarmNode } from './index.js';
import { registerSwarmMetrics } from './prometheus.js';

describe('Prometheus metrics', () => {
  it('read getOrchestrationStats() at scrape time: pools, agents, utilization, tasks, consensus', async () => {
    const bus = new QEEventBus({ nodeId: 'prom' });
    await bus.start();
    const node = new SwarmNode({ bus, heartbeatIntervalMs: 100 });
    await node.start();
    const consensus = new ConsensusCoordinator({ bus });
    await consensus.start();
    await node.registerAgent({ id: 'a1', type: 'coder', capacity: 2, handler: (c) => c.input });
    await node.registerAgent({ id: 'a2', type: 'tester', handler: () => 1 });
    await node.submit({ input: 1, pool: 'coder' });
    await node.submit({ input: 2, pool: 'coder' });
    const p = await consensus.propose({ options: ['y'], voters: ['a1'] });
    await consensus.vote(p.id, 'a1', 'y');
    await consensus.vote(p.id, 'a9', 'y');
    await consensus.outcome(p.id);
    const registry = new Registry();
    registerSwarmMetrics(registry, node, { consensus });
    const text = await registry.metrics();
    expect(text).toMatch(/^ossa_agent_orchestration_pools_total 2$/m);
    expect(text).toMatch(/^ossa_swarm_agents\{status="active"\} 2$/m);
    expect(text).toMatch(/^ossa_swarm_pool_capacity\{pool="coder"\} 2$/m);
    expect(text).toMatch(/^ossa_swarm_pool_utilization_ratio\{pool="tester"\} 0$/m);
    expect(text).toMatch(/^ossa_swarm_tasks_completed_total 2$/m);
    expect(text).toMatch(/^ossa_swarm_tasks\{state="waiting"\} 0$/m);
    expect(text).toMatch(/^ossa_consensus_proposals\{state="achieved"\} 1$/m);
    await new Promise((r) => setTimeout(r, 150)); // the snapshot is cached for 100 ms within one scrape
    expect(await registry.metrics()).toMatch(/^ossa_swarm_tasks_completed_total 2$/m); // not counted twice
    expect(() => registerSwarmMetrics(new Registry(), node, { prefix: 'bad-' })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }),
    );
    await consensus.stop();
    await node.stop();
    await bus.stop();
  });
});
