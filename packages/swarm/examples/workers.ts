/**
 * A swarm of workers in two processes, on Redis Streams.
 *
 *   tsx --conditions=@qe/source packages/swarm/examples/workers.ts          # starts the second process itself
 *   tsx --conditions=@qe/source packages/swarm/examples/workers.ts worker   # or: a worker process on its own
 *
 * REDIS_URL defaults to redis://127.0.0.1:6379.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { SwarmNode } from '../src/index.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const keyPrefix = process.env.EXAMPLE_PREFIX ?? 'qe-example:swarm';

/** One process of the swarm: a node hosting 4 `coder` agents. */
export async function startNode(nodeId: string) {
  const bus = new QEEventBus({ nodeId, transport: new RedisStreamsTransport({ url, keyPrefix }) });
  await bus.start();
  const node = new SwarmNode({ bus, heartbeatIntervalMs: 500 });
  await node.start();
  for (let i = 0; i < 4; i++)
    await node.registerAgent({
      id: `${nodeId}-coder-${i}`,
      type: 'coder',
      capabilities: ['typescript'],
      capacity: 2,
      handler: async ({ input, agentId }) => {
        await new Promise((r) => setTimeout(r, 20));
        return `${agentId} (pid ${process.pid}) reviewed ${(input as { file: string }).file}`;
      },
    });
  return { bus, node };
}

/** Starts a worker process, waits until this node sees its agents, submits 20 tasks, prints who ran them. */
export async function main(): Promise<{ processes: number; results: string[] }> {
  const worker = spawn(
    process.execPath,
    ['--conditions=@qe/source', '--import', 'tsx', fileURLToPath(import.meta.url), 'worker'],
    {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, EXAMPLE_PREFIX: keyPrefix },
    },
  );
  const { bus, node } = await startNode(`main-${process.pid}`);
  try {
    // bounded, so that a worker process that never comes up fails the example (the finally stops it) instead of hanging
    const deadline = Date.now() + 30_000;
    while (node.listAgents({ status: 'active' }).length < 8) {
      if (Date.now() > deadline)
        throw new Error('the 8 agents of both processes did not register within 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log('agents:', node.getOrchestrationStats().totalAgents, 'in 2 processes');
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        node.submit({ input: { file: `src/f${i}.ts` }, requires: ['typescript'] }),
      ),
    );
    for (const r of results) console.log(r.result);
    const pids = new Set(results.map((r) => String(r.result).match(/pid (\d+)/)![1]));
    console.log(JSON.stringify(node.getOrchestrationStats().tasks));
    return { processes: pids.size, results: results.map((r) => String(r.result)) };
  } finally {
    const exited =
      worker.exitCode === null && worker.signalCode === null
        ? new Promise((r) => worker.once('exit', r))
        : undefined;
    worker.kill('SIGTERM');
    await exited; // it deregisters on SIGTERM: let it finish before we go
    await node.stop();
    await bus.stop();
  }
}

if (process.argv[2] === 'worker') {
  const { bus, node } = await startNode(`worker-${process.pid}`);
  process.once(
    'SIGTERM',
    () =>
      void node
        .stop()
        .then(() => bus.stop())
        .then(() => process.exit(0)),
  );
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { processes } = await main();
  console.log(`done: work ran in ${processes} processes`);
  process.exit(0);
}
