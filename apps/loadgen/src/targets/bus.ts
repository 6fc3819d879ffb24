import { QEEventBus, type QEEventBusConfig, type Transport } from '@qe/core';
import {
  asPayload,
  busEventFor,
  type LoadConsumer,
  type LoadProducer,
  type Target,
  type TargetContext,
} from './target.js';

/** Options for a target that puts a `QEEventBus` on both ends of some transport. */
export interface BusTargetOptions {
  name: string;
  inProcess: boolean;
  /** A fresh transport for one bus of the run (each producer and the consumer get their own). */
  transport(ctx: TargetContext, role: 'producer' | 'consumer', index: number): Promise<Transport> | Transport;
  /** Extra bus settings (backpressure, concurrency). */
  bus?: Partial<QEEventBusConfig>;
  cleanup?(ctx: TargetContext): Promise<void>;
}

/** Prints a bus's first few errors (their effect on delivery shows in the ledger). */
function reportError(role: string): (err: Error) => void {
  let n = 0;
  return (err) => {
    if (++n <= 5) process.stderr.write(`qe-loadgen: ${role} bus error: ${err.message}\n`);
    else if (n === 6) process.stderr.write(`qe-loadgen: ${role} bus: further errors not shown\n`);
  };
}

/**
 * A target measuring the bus itself: producers call `bus.publish` once per
 * event (all events of a send group in the same tick, as a busy service
 * would), the consumer is one broadcast subscription on `**` with a
 * synchronous handler, so what is measured is the bus and its transport.
 */
export function busTarget(o: BusTargetOptions): Target {
  return {
    name: o.name,
    inProcess: o.inProcess,
    async consumer(ctx, onEvent): Promise<LoadConsumer> {
      const bus = new QEEventBus({
        nodeId: `loadgen-consumer-${ctx.runId}`,
        transport: await o.transport(ctx, 'consumer', 0),
        freezeEvents: false,
        backpressure: { maxQueueSize: 50_000 },
        ...o.bus,
      });
      bus.on('error', reportError('consumer'));
      await bus.start();
      const unsub = bus.subscribe('**', (ev) => {
        const p = asPayload(ev.data);
        if (p) onEvent(p);
      });
      await unsub.ready;
      return {
        async close() {
          await bus.stop({ leave: true });
        },
      };
    },
    async producer(ctx, index): Promise<LoadProducer> {
      const bus = new QEEventBus({
        nodeId: `loadgen-producer-${ctx.runId}-${index}`,
        transport: await o.transport(ctx, 'producer', index),
        freezeEvents: false,
        ...o.bus,
      });
      bus.on('error', reportError(`producer ${index}`));
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
    ...(o.cleanup ? { cleanup: o.cleanup } : {}),
  };
}
