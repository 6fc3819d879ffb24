import { deletePrefix } from '@qe/test-utils';
import { describe, expect, it, vi } from 'vitest';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe("the README's example: a swarm of workers in two processes", () => {
  it('runs on Redis, and both processes do work', async () => {
    const prefix = `qe-test:swarm-example:${Date.now().toString(36)}`;
    process.env.EXAMPLE_PREFIX = prefix;
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      const { main } = await import('../examples/workers.js');
      const { processes, results } = await main();
      expect(results).toHaveLength(20);
      expect(processes).toBe(2);
    } finally {
      log.mockRestore();
      await deletePrefix(prefix, URL_);
    }
  }, 60_000);
});
