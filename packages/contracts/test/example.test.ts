import { describe, expect, it } from 'vitest';
import { main } from '../examples/two-projects.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe("the README's two-project example (spec 003) runs", () => {
  for (const url of [undefined, URL_])
    it(url ? 'on Redis' : 'in memory', async () => {
      const lines: string[] = [];
      const { messageId, received, refusals, audit } = await main(
        url,
        (...a) => void lines.push(a.join(' ')),
      );
      expect(received).toMatchObject([
        { id: messageId, from: 'user-service', type: 'user.created', version: '1.0.0' },
      ]);
      expect(refusals).toEqual(['FORBIDDEN', 'VALIDATION']);
      expect(audit.map((e) => e.outcome)).toEqual(['delivered', 'forbidden_type', 'invalid']);
      expect(audit[0]!.messageId).toBe(messageId);
      expect(lines[0]).toMatch(/^notification-service got user\.created v1\.0\.0 from user-service/);
    });
});
