import { qeVitestConfig } from '@qe/vitest-preset';

export default qeVitestConfig({
  globalSetup: ['test/global-setup.ts'],
  testTimeout: 60_000,
  hookTimeout: 60_000,
});
