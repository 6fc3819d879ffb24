// Shared vitest settings: read workspace packages from source (the
// "@qe/source" export condition), so tests never need a build first.
import { defineConfig } from 'vitest/config';

/** @param {import('vitest/config').ViteUserConfig['test']} [test] */
export function qeVitestConfig(test = {}) {
  return defineConfig({
    resolve: { conditions: ['@qe/source', 'import', 'module', 'default'] },
    ssr: { resolve: { conditions: ['@qe/source', 'import', 'module', 'default'] } },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      testTimeout: 20_000,
      hookTimeout: 30_000,
      reporters: ['default'],
      ...test,
    },
  });
}
