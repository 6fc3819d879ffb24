import type { Fault } from './fault.js';

/** SIGKILL of a producer or consumer process; the heal starts a new incarnation (same node id). */
function kill(role: 'producer' | 'consumer'): Fault {
  return {
    name: `kill-${role}`,
    summary: `SIGKILL a ${role} process; restart it (same node id) after the fault's duration`,
    targets: (t) => (role === 'producer' ? t.producers : t.consumers),
    durationMs: [500, 4000],
    async inject(world, plan) {
      const c = world.child(plan.target);
      c.signal('SIGKILL');
      return () => c.restart();
    },
  };
}

/** SIGSTOP of a process (a GC pause, a frozen VM); the heal sends SIGCONT. */
function pause(role: 'producer' | 'consumer'): Fault {
  return {
    name: `pause-${role}`,
    summary: `SIGSTOP a ${role} process, SIGCONT it after the fault's duration`,
    targets: (t) => (role === 'producer' ? t.producers : t.consumers),
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
