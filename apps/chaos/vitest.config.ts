import { qeVitestConfig } from '@qe/vitest-preset';

export default qeVitestConfig();
