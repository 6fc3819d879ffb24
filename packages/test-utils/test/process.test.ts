import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { exited, startFixture, testCertificate } from '../src/index.js';

describe('startFixture', () => {
  it('runs a TypeScript file with args and env, and reports each stdout line', async () => {
    const lines: string[] = [];
    const child = startFixture(new URL('./fixtures/echo.ts', import.meta.url), ['one', 'two'], {
      env: { QE_TEST_UTILS_ECHO: 'hello' },
      onLine: (l) => lines.push(l),
    });
    expect(child.pid).toBeGreaterThan(0);
    expect(await exited(child)).toEqual({ code: 0, signal: null });
    expect(lines).toEqual(['arg one', 'arg two', 'env hello', 'last']);
  });
});

describe('testCertificate', () => {
  it('makes a self-signed certificate for localhost and 127.0.0.1, and removes it', () => {
    const c = testCertificate();
    try {
      expect(existsSync(c.keyFile) && existsSync(c.certFile)).toBe(true);
      expect(c.key).toContain('PRIVATE KEY');
      const x = new X509Certificate(c.cert);
      expect(x.checkHost('localhost')).toBe('localhost');
      expect(x.checkIP('127.0.0.1')).toBe('127.0.0.1');
    } finally {
      c.cleanup();
    }
    expect(existsSync(c.dir)).toBe(false);
  });
});
