// Type-level tests: checked by `tsc` (typecheck task), not run.
import { QEEventBus } from '@qe/core';
import { expectTypeOf } from 'vitest';
import {
  type CommandEvent,
  type ResultEvent,
  type SagaEvents,
  SagaOrchestrator,
  SagaWorker,
} from './index.js';

const bus = new QEEventBus<SagaEvents>({ nodeId: 'types' });

bus.subscribe('saga.result.process_payment', (e) => {
  expectTypeOf(e.data).toEqualTypeOf<ResultEvent>();
  expectTypeOf(e.data.executionTimeMs).toBeNumber();
});
bus.subscribe('saga.command.*', (e) => {
  expectTypeOf(e.data).toEqualTypeOf<CommandEvent>();
});
bus.subscribe('saga.status.*', (e) => {
  expectTypeOf(e.data.progress).toBeNumber();
});

declare const cmd: CommandEvent;
void bus.publish({ type: 'saga.command.process_payment', agentId: 'a', data: cmd });
// @ts-expect-error: a command payload on a status channel
void bus.publish({ type: 'saga.status.checkout', agentId: 'a', data: cmd });

// a typed bus works with workers and orchestrators
new SagaWorker({ bus, name: 'process_payment', handler: (ctx) => ({ paid: ctx.context.amount }) });
new SagaOrchestrator({ bus });
