import type { Fault } from './fault.js';

/**
 * SIGKILL of the Redis server, restarted on the same data directory after the
 * fault's duration. With `--persistence aof` (appendfsync always) it comes
 * back with every acknowledged write; with `none` it comes back empty.
 */
export const redisKill: Fault = {
  name: 'redis-kill',
  summary: 'SIGKILL redis-server, restart it on the same port and data directory (AOF or empty)',
  targets: () => ['redis'],
  durationMs: [500, 3000],
  async inject(world) {
    await world.redis.kill();
    return () => world.redis.restart();
  },
};

/**
 * `CLIENT PAUSE <duration> ALL`: Redis answers nobody for a while (a long
 * fork, a slow disk). The pause ends by its own timeout: during `PAUSE ALL`
 * even `CLIENT UNPAUSE` from another connection waits. The heal waits for a PING.
 */
export const clientPause: Fault = {
  name: 'client-pause',
  summary: 'CLIENT PAUSE ALL on Redis for the fault duration',
  targets: () => ['redis'],
  durationMs: [1000, 5000],
  async inject(world, plan) {
    await world.redis.call('CLIENT', 'PAUSE', plan.durationMs, 'ALL');
    return async () => {
      await world.redis.call('PING');
    };
  },
};
