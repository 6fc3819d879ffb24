import { MemoryBroker, MemoryTransport } from '@qe/core';
import { busTarget } from './bus.js';

const brokers = new Map<string, MemoryBroker>();
function brokerFor(runId: string): MemoryBroker {
  let b = brokers.get(runId);
  if (!b) brokers.set(runId, (b = new MemoryBroker()));
  return b;
}

/**
 * The in-process bus: one `QEEventBus` per producer and one for the consumer,
 * sharing a `MemoryBroker` (default settings), as separate nodes in one
 * process would.
 */
export const memoryTarget = busTarget({
  name: 'memory',
  inProcess: true,
  transport: (ctx) => new MemoryTransport({ broker: brokerFor(ctx.runId) }),
  async cleanup(ctx) {
    brokers.delete(ctx.runId);
  },
});
