import { existsSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  deletePrefix,
  quiescent,
  REDIS_URL,
  type RedisProcess,
  startProxy,
  startRedis,
  uniquePrefix,
  waitFor,
  waitForPort,
} from '../src/index.js';

/** This package's own redis-server ports: 7700-7709, used by no other package. */
const PORT = 7700;

const servers: RedisProcess[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    await s.stop('SIGKILL');
    s.cleanup();
  }
});

describe('uniquePrefix and deletePrefix', () => {
  it('gives distinct prefixes and removes every key under one, and only those', async () => {
    const a = uniquePrefix('tu');
    const b = uniquePrefix('tu');
    expect(a).not.toBe(b);
    expect(a.startsWith('qe-test:tu:')).toBe(true);
    const r = new Redis(REDIS_URL);
    try {
      await r.set(a, '1');
      const many = r.pipeline();
      for (let i = 0; i < 1500; i++) many.set(`${a}:k${i}`, '1');
      await many.exec();
      await r.set(`${b}:keep`, '1');
      expect(await deletePrefix(a)).toBe(1501);
      expect(await r.exists(a)).toBe(0);
      expect(await r.exists(`${a}:k0`, `${a}:k1499`)).toBe(0);
      expect(await r.get(`${b}:keep`)).toBe('1');
      expect(await deletePrefix(b)).toBe(1);
    } finally {
      r.disconnect();
    }
  });

  it('refuses an empty prefix', async () => {
    await expect(deletePrefix('')).rejects.toThrow('empty prefix');
  });
});

describe('startRedis', () => {
  it('starts on a free port, keeps AOF data across a SIGTERM stop and restart, and survives a SIGKILL', async () => {
    const s = await startRedis(PORT, ['--appendonly', 'yes', '--appendfsync', 'always']);
    servers.push(s);
    expect(existsSync(s.dir)).toBe(true);
    const r = new Redis({
      port: PORT,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => {});
    await r.connect();
    await r.set('k', 'v');
    r.disconnect();

    const firstPid = s.proc.pid;
    await s.stop('SIGTERM');
    expect(s.proc.exitCode !== null || s.proc.signalCode !== null).toBe(true);
    await expect(waitForPort(PORT, 200)).rejects.toThrow(`port ${PORT} did not open within 200 ms`);

    await s.restart();
    expect(s.proc.pid).not.toBe(firstPid);
    const r2 = new Redis({
      port: PORT,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r2.on('error', () => {});
    await r2.connect();
    expect(await r2.get('k')).toBe('v');
    r2.disconnect();

    await s.stop(); // SIGKILL
    expect(s.proc.signalCode).toBe('SIGKILL');
    await s.stop(); // a second stop is a no-op
    s.cleanup();
    expect(existsSync(s.dir)).toBe(false);
  });

  it('a SIGTERM stop also ends a server frozen with SIGSTOP', async () => {
    const s = await startRedis(PORT + 1);
    servers.push(s);
    s.proc.kill('SIGSTOP');
    await s.stop('SIGTERM');
    expect(s.proc.exitCode !== null || s.proc.signalCode !== null).toBe(true);
  });
});

describe('startProxy', () => {
  it('stall() holds commands back without closing the connection; resume() delivers them; cut() resets', async () => {
    const s = await startRedis(PORT + 2);
    servers.push(s);
    const proxy = await startProxy(PORT + 2);
    const r = new Redis({
      port: proxy.port,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    const closed: string[] = [];
    r.on('error', () => {});
    r.on('close', () => closed.push('close'));
    try {
      await r.connect();
      expect(await r.ping()).toBe('PONG');
      proxy.stall();
      let answered = false;
      const reply = r.set('stalled', '1').then((v) => {
        answered = true;
        return v;
      });
      // the write waits in the proxy: Redis has not seen it, the client has no answer
      const direct = new Redis({ port: PORT + 2 });
      await quiescent(async () => [answered, await direct.exists('stalled')], {
        forMs: 300,
        what: 'the stalled write',
      });
      proxy.resume();
      expect(await reply).toBe('OK');
      expect(await direct.get('stalled')).toBe('1');
      direct.disconnect();
      expect(closed).toEqual([]);
      proxy.cut();
      await waitFor(() => closed.length > 0, 'the client to see the reset');
    } finally {
      r.disconnect();
      await proxy.close();
    }
  });
});
