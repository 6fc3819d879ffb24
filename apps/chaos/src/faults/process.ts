import type { Fault, Topology } from './fault.js';

type Role = 'producer' | 'consumer' | 'broker';
const targetsOf = (role: Role, t: Topology): readonly string[] =>
  role === 'producer' ? t.producers : role === 'consumer' ? t.consumers : (t.brokers ?? []);

/** SIGKILL of a producer, consumer or broker process; the heal starts a new incarnation (same node id). */
function kill(role: Role): Fault {
  return {
    name: `kill-${role}`,
    summary: `SIGKILL a ${role} process; restart it (same node id) after the fault's duration`,
    targets: (t) => targetsOf(role, t),
    durationMs: [500, 4000],
    async inject(world, plan) {
      const c = world.child(plan.target);
      c.signal('SIGKILL');
      return () => c.restart();
    },
  };
}

/** SIGSTOP of a process (a GC pause, a frozen VM); the heal sends SIGCONT. */
function pause(role: Role): Fault {
  return {
    name: `pause-${role}`,
    summary: `SIGSTOP a ${role} process, SIGCONT it after the fault's duration`,
    targets: (t) => targetsOf(role, t),
    durationMs: [1000, 6000],
    async inject(world, plan) {
      const c = world.child(plan.target);
      c.signal('SIGSTOP');
      return async () => c.signal('SIGCONT');
    },
  };
}

export const killProducer = kill('producer');
export const killConsumer = kill('consumer');
export const pauseProducer = pause('producer');
export const pauseConsumer = pause('consumer');
/** `--broker` only: the broker process (its WebSocket clients lose their connections; its Redis consumers stop). */
export const killBroker = kill('broker');
export const pauseBroker = pause('broker');
