import { MemoryBroker, MemoryTransport, QEEventBus } from '@qe/core';
import { asPayload, busEventFor, type LoadConsumer, type LoadProducer, type Target } from './target.js';

const brokers = new Map<string, MemoryBroker>();
function brokerFor(runId: string): MemoryBroker {
  let b = brokers.get(runId);
  if (!b) brokers.set(runId, (b = new MemoryBroker()));
  return b;
}

/**
 * The in-process bus: one `QEEventBus` per producer and one for the consumer,
 * sharing a `MemoryBroker`, as separate nodes in one process would.
 */
export const memoryTarget: Target = {
  name: 'memory',
  inProcess: true,
  async consumer(ctx, onEvent): Promise<LoadConsumer> {
    const bus = new QEEventBus({
      nodeId: `loadgen-consumer-${ctx.runId}`,
      transport: new MemoryTransport({ broker: brokerFor(ctx.runId) }),
      freezeEvents: false,
      backpressure: { maxQueueSize: 50_000 },
    });
    await bus.start();
    const unsub = bus.subscribe('**', (ev) => {
      const p = asPayload(ev.data);
      if (p) onEvent(p);
    });
    await unsub.ready;
    return {
      async close() {
        await bus.stop();
      },
    };
  },
  async producer(ctx, index): Promise<LoadProducer> {
    const bus = new QEEventBus({
      nodeId: `loadgen-producer-${ctx.runId}-${index}`,
      transport: new MemoryTransport({ broker: brokerFor(ctx.runId) }),
      freezeEvents: false,
    });
    await bus.start();
    return {
      async send(events) {
        const results = await Promise.allSettled(events.map((p) => bus.publish(busEventFor(p, ctx.mix))));
        const refused: number[] = [];
        results.forEach((r, i) => {
          if (r.status === 'rejected') refused.push(i);
        });
        if (refused.length === events.length && events.length > 0)
          throw (results[0] as PromiseRejectedResult).reason;
        return refused;
      },
      async close() {
        await bus.stop();
      },
    };
  },
  async cleanup(ctx) {
    brokers.delete(ctx.runId);
  },
};
