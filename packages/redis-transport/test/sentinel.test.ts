import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QEEventBus } from '@qe/core';
import { type RedisProcess, startRedis } from '@qe/test-utils';
import { waitFor } from '@qe/transport-conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamsTransport, resolveOptions } from '../src/index.js';
import { uniquePrefix } from './helpers.js';

let master: RedisProcess;
let sentinel: RedisProcess;
beforeAll(async () => {
  master = await startRedis(7170);
  // redis-server runs as a sentinel with --sentinel and a config file it can rewrite
  const conf = join(master.dir, 'sentinel.conf');
  writeFileSync(
    conf,
    'sentinel monitor qe-master 127.0.0.1 7170 1\nsentinel down-after-milliseconds qe-master 1000\n',
  );
  sentinel = await startRedisSentinel(conf, master.dir);
}, 30_000);
afterAll(async () => {
  await sentinel?.stop();
  await master?.stop();
  master?.cleanup();
});

async function startRedisSentinel(conf: string, dir: string): Promise<RedisProcess> {
  const { spawn } = await import('node:child_process');
  const { waitForPort } = await import('@qe/test-utils');
  const proc = spawn('redis-server', [conf, '--sentinel', '--port', '7171', '--dir', dir], {
    stdio: 'ignore',
  });
  await waitForPort(7171);
  return {
    port: 7171,
    dir,
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGKILL');
      await exited;
    },
    async restart() {},
    cleanup() {},
  };
}

describe('Redis Sentinel', () => {
  it('finds the master through the sentinel and carries events', async () => {
    const bus = new QEEventBus({
      nodeId: 'via-sentinel',
      transport: new RedisStreamsTransport({
        sentinel: { sentinels: [{ host: '127.0.0.1', port: 7171 }], name: 'qe-master' },
        keyPrefix: uniquePrefix('sentinel'),
      }),
    });
    await bus.start();
    try {
      const got: string[] = [];
      await bus.subscribe('sent.*', (e) => void got.push(e.type)).ready;
      await bus.publish({ type: 'sent.inel', agentId: 'a', data: {} });
      await waitFor(() => got.length === 1, 'the event via the sentinel-found master');
    } finally {
      await bus.stop();
    }
  });

  it('validates sentinel options by name', () => {
    expect(() => resolveOptions({ sentinel: { sentinels: [], name: 'x' } })).toThrow(/sentinel.sentinels/);
    expect(() => resolveOptions({ sentinel: { sentinels: [{ host: 'h', port: 1 }], name: '' } })).toThrow(
      /sentinel.name/,
    );
  });
});
