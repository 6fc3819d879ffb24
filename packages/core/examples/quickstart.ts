/**
 * Starts a bus on the in-memory transport, subscribes a few agents, publishes
 * agent events and prints getMetrics().
 *
 *   tsx --conditions=@qe/source packages/core/examples/quickstart.ts
 */
import { createEvent, EventPriority, EventTypes, QEEventBus } from '../src/index.js';

const bus = new QEEventBus({ nodeId: 'quickstart' });
await bus.start();

// every task event, whatever its depth
bus.subscribe('task.**', (event) => {
  console.log(`[audit] ${event.type} from ${event.agentId}`);
});
// two workers sharing the assignments: each event goes to one of them
for (const worker of ['worker-a', 'worker-b']) {
  bus.subscribe(
    EventTypes.AGENT_TASK_ASSIGN,
    async (event) => {
      const { taskId } = event.data as { taskId: string };
      console.log(`[${worker}] handling ${taskId}`);
      await bus.publish(
        createEvent(EventTypes.AGENT_TASK_COMPLETE)
          .agentId(worker)
          .data({ taskId, result: 'ok' })
          .causedBy(event)
          .build(),
      );
    },
    { group: 'workers' },
  );
}
bus.subscribe(EventTypes.AGENT_TASK_COMPLETE, (event) => {
  console.log(`[coordinator] ${(event.data as { taskId: string }).taskId} done by ${event.agentId}`);
});

await bus.publish(createEvent(EventTypes.TASK_CREATE).agentId('planner').data({ taskId: 't-1' }).build());
for (let i = 1; i <= 4; i++) {
  await bus.publish(
    createEvent(EventTypes.AGENT_TASK_ASSIGN)
      .agentId('planner')
      .priority(i === 4 ? EventPriority.HIGH : EventPriority.NORMAL)
      .data({ taskId: `t-${i}` })
      .build(),
  );
}
await new Promise((r) => setTimeout(r, 100));
console.log(bus.getMetrics());
await bus.stop();
