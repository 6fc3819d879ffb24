import { deletePrefix } from '@qe/test-utils';
import { describe, expect, it, vi } from 'vitest';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe("the README's example: a service and a client in two processes", () => {
  it('discovers the service, reads its contract and gets answers', async () => {
    const prefix = `qe-test:registry-example:${Date.now().toString(36)}`;
    process.env.EXAMPLE_PREFIX = prefix;
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      const { main } = await import('../examples/billing.js');
      const out = await main();
      expect(out.found).toHaveLength(1);
      expect(out.found[0]).toMatch(/^billing-.*@1\.4\.2$/);
      expect(out.contracts).toEqual(['publishes billing.invoice.created']);
      expect(out.answered).toBe(3);
    } finally {
      log.mockRestore();
      await deletePrefix(prefix, URL_);
    }
  }, 60_000);
});
