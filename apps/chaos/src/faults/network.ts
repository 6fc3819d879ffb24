import { type Fault, noHeal } from './fault.js';

/** Resets every TCP connection between the children and Redis (both sides see a reset). Instant. */
export const connectionReset: Fault = {
  name: 'connection-reset',
  summary: 'reset every client connection to Redis through the proxy',
  targets: () => ['proxy'],
  durationMs: [0, 0],
  async inject(world) {
    world.proxy.cut();
    return noHeal;
  },
};

/** Holds every byte between the children and Redis, connections open (a black-holed route); the heal lets them through. */
export const networkStall: Fault = {
  name: 'network-stall',
  summary: 'stall every client connection to Redis (bytes held, nothing closed), resume after the duration',
  targets: () => ['proxy'],
  durationMs: [1000, 5000],
  async inject(world) {
    world.proxy.stall();
    return async () => world.proxy.resume();
  },
};
