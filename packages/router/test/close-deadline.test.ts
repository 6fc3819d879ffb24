import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryTransport, QEEventBus } from '@qe/core';
import { waitFor } from '@qe/transport-conformance';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RoutedTransport } from '../src/index.js';

/** This file's own redis-server (port 7600), frozen with SIGSTOP and killed by PID. */
const PORT = 7600;
let proc: ChildProcess | undefined;
let dir = '';
afterEach(() => {
  proc?.kill('SIGCONT');
  proc?.kill('SIGKILL');
  proc = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('RoutedTransport.close({ timeoutMs })', () => {
  it('returns within its deadline when Redis stops answering, and closes the inner transport', async () => {
    dir = mkdtempSync(join(tmpdir(), 'qe-router-close-'));
    proc = spawn(
      'redis-server',
      ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      {
        stdio: 'ignore',
      },
    );
    const redis = new Redis({ port: PORT, lazyConnect: true, retryStrategy: () => 50 });
    redis.on('error', () => {});
    await waitFor(async () => {
      try {
        await redis.connect();
        return true;
      } catch {
        return false;
      }
    }, 'the test redis-server');
    const inner = new MemoryTransport();
    const t = new RoutedTransport({
      inner,
      redis,
      prefix: 'qe-test:router-close',
      heartbeatMs: 200,
      memberTtlMs: 1000,
    });
    const bus = new QEEventBus({ nodeId: 'router-close', transport: t });
    await bus.start();
    const sub = bus.subscribe('job.*', () => {}, { group: 'workers' });
    await sub.ready;
    proc.kill('SIGSTOP'); // Redis holds every command from now on
    const started = Date.now();
    await t.close({ timeoutMs: 1000 });
    // the handover would wait for Redis forever; the deadline (plus generous slack for a loaded machine) holds
    expect(Date.now() - started).toBeLessThan(5000);
    expect(inner.isConnected()).toBe(false);
    redis.disconnect();
  });
});
