import type { QEEventBus } from '../src/index.js';

/**
 * True once `bus` has nothing queued (parked included), running or waiting in
 * a retry timer. On the memory transport a publish hands its deliveries over
 * before it resolves, so once the publishes of a test resolved and the bus is
 * settled, no delivery of them is still on its way: "nothing more arrived" can
 * be asserted at once, with no window to guess.
 */
export function settled(bus: QEEventBus): boolean {
  const m = bus.getDetailedMetrics();
  return m.inFlight === 0 && m.queueSize === 0 && m.retryTimers === 0;
}
