import { ConfigError } from '@qe/core';
import { describe, expect, it } from 'vitest';
import { resolveOptions } from '../src/index.js';

const rejects = (o: Parameters<typeof resolveOptions>[0], setting: string) => {
  let err: unknown;
  try {
    resolveOptions(o);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toContain(setting);
};

describe('resolveOptions', () => {
  it('fills defaults', () => {
    const o = resolveOptions();
    expect(o.keyPrefix).toBe('qe');
    expect(o.redis.host).toBe('127.0.0.1');
    expect(o.partitions).toBe(1);
    expect(o.retainUnread).toBe(o.maxLen);
    expect(o.publishTimeoutMs).toBe(5000);
    expect(o.closeTimeoutMs).toBe(5000);
  });

  it('rejects bad settings with a ConfigError naming the setting', () => {
    rejects({ keyPrefix: 'a{b}' }, 'keyPrefix');
    rejects({ keyPrefix: '' }, 'keyPrefix');
    rejects({ url: 'http://127.0.0.1:6379' }, 'url');
    rejects({ url: 'not a url' }, 'url');
    rejects({ port: -1 }, 'port');
    rejects({ partitions: 0 }, 'partitions');
    rejects({ maxLen: 1.5 }, 'maxLen');
    rejects({ cluster: { nodes: [] } }, 'cluster.nodes');
    rejects({ publishTimeoutMs: 0 }, 'publishTimeoutMs');
    rejects({ closeTimeoutMs: -1 }, 'closeTimeoutMs');
  });

  it('refuses an ioredis keyPrefix, which the transport would apply to only some of its commands', () => {
    rejects({ redisOptions: { keyPrefix: 'app:' } }, 'redisOptions.keyPrefix');
    rejects(
      { cluster: { nodes: [{ host: 'h', port: 1 }], options: { keyPrefix: 'app:' } } },
      'cluster.options.keyPrefix',
    );
    rejects(
      { cluster: { nodes: [{ host: 'h', port: 1 }], options: { redisOptions: { keyPrefix: 'app:' } } } },
      'cluster.options.keyPrefix',
    );
    expect(resolveOptions({ keyPrefix: 'app', redisOptions: { connectionName: 'x' } }).keyPrefix).toBe('app');
  });
});
