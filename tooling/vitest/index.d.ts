import type { UserConfig } from 'vitest/config';
export declare function qeVitestConfig(test?: NonNullable<UserConfig['test']>): UserConfig;
