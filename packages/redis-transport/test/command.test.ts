import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Arg, send as sendLean } from '../src/command.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from './helpers.js';

/** What the transport's hot paths send: a LeanCommand through ioredis's own sendCommand. */
const send = (r: Redis, name: string, args: Arg[], buffers = false) =>
  sendLean(r, name, args, typeof args[0] === 'string' ? args[0] : undefined, buffers);

const prefix = uniquePrefix('command');
let r: Redis;
beforeAll(async () => {
  r = new Redis(REDIS_URL);
  await r.ping();
});
afterAll(async () => {
  r.disconnect();
  await deletePrefix(prefix);
});

describe('LeanCommand through ioredis', () => {
  it('writes string, number and binary arguments exactly, empty ones included', async () => {
    const bin = Buffer.from([0, 13, 10, 0xff, 0x24, 0x2a, 13, 10]);
    const key = `${prefix}:bin`;
    await expect(
      send(r, 'hset', [key, 'b', bin, 'n', 42, 'empty', Buffer.alloc(0), 'uni', 'zé→']),
    ).resolves.toBe(4);
    expect(await r.hgetBuffer(key, 'b')).toEqual(bin);
    expect(await r.hget(key, 'n')).toBe('42');
    expect(await r.hget(key, 'empty')).toBe('');
    expect(await r.hget(key, 'uni')).toBe('zé→');
  });

  it('writes large commands of strings exactly (multi-byte text, numbers, empty strings)', async () => {
    const key = `${prefix}:large`;
    const big = 'zé→🙂'.repeat(700); // well past the size written as one string
    const fields: (string | number)[] = [];
    for (let i = 0; i < 40; i++) fields.push(`f${i}`, i % 3 === 0 ? i * 1000003 : i % 3 === 1 ? big : '');
    await expect(send(r, 'hset', [key, ...fields])).resolves.toBe(40);
    const back = await r.hgetall(key);
    for (let i = 0; i < 40; i++)
      expect(back[`f${i}`]).toBe(i % 3 === 0 ? String(i * 1000003) : i % 3 === 1 ? big : '');
  });

  it('answers nested replies as strings, or as Buffers when asked', async () => {
    const key = `${prefix}:stream`;
    const id = await r.xadd(key, '*', 'e', 'frame', 't', '1');
    const asText = (await send(r, 'xrange', [key, '-', '+'])) as [string, string[]][];
    expect(asText).toEqual([[id, ['e', 'frame', 't', '1']]]);
    const asBuf = (await send(r, 'xrange', [key, '-', '+'], true)) as [Buffer, Buffer[]][];
    expect(Buffer.isBuffer(asBuf[0]![0])).toBe(true);
    expect(asBuf[0]![1].map(String)).toEqual(['e', 'frame', 't', '1']);
    await expect(send(r, 'get', [`${prefix}:missing`])).resolves.toBeNull();
  });

  it('rejects an error reply with the reply error and the connection keeps serving', async () => {
    const key = `${prefix}:wrongtype`;
    await r.set(key, 'x');
    await expect(send(r, 'xadd', [key, '*', 'e', '1'])).rejects.toThrow(/WRONGTYPE/);
    await expect(send(r, 'nosuchcommand', ['a'])).rejects.toThrow(/unknown command/i);
    await expect(send(r, 'get', [key])).resolves.toBe('x');
  });

  it('waits in the offline queue while the client (re)connects and is sent once it is ready', async () => {
    const c = new Redis(REDIS_URL, { lazyConnect: true, retryStrategy: () => 20 });
    try {
      // not connected yet: sending starts the connection and the command waits for it
      await expect(send(c, 'echo', ['first'])).resolves.toBe('first');
      const gone = new Promise((res) => c.once('close', res));
      c.stream.destroy();
      await gone;
      expect(c.status).not.toBe('ready');
      await expect(send(c, 'echo', ['after reconnect'])).resolves.toBe('after reconnect');
    } finally {
      c.disconnect();
    }
  });

  it('honours ioredis commandTimeout and blockingTimeout', async () => {
    const key = `${prefix}:empty-list`;
    const timed = new Redis(REDIS_URL, { commandTimeout: 150 });
    const blocking = new Redis(REDIS_URL, { blockingTimeout: 150 });
    try {
      await timed.ping();
      await blocking.ping();
      // BLPOP waits 5 s in Redis; the client gives up first
      await expect(send(timed, 'blpop', [key, 5])).rejects.toThrow(/timed out/);
      const group = `${prefix}:g`;
      await blocking.xgroup('CREATE', `${prefix}:s`, group, '$', 'MKSTREAM');
      // BLOCK 0 waits for ever in Redis; blockingTimeout resolves it empty, as Redis would on expiry
      await expect(
        send(blocking, 'xreadgroup', ['GROUP', group, 'c', 'BLOCK', 0, 'STREAMS', `${prefix}:s`, '>']),
      ).resolves.toBeNull();
    } finally {
      timed.disconnect();
      blocking.disconnect();
    }
  });

  it('fails at once on a closed client instead of waiting', async () => {
    const c = new Redis(REDIS_URL);
    await c.ping();
    await c.quit();
    await expect(send(c, 'get', ['k'])).rejects.toThrow(/closed/i);
  });
});
