import { describe, expect, it } from 'vitest';
import { deferred, quiescent, sleep, until, waitFor } from '../src/index.js';

describe('waitFor', () => {
  it('resolves as soon as a sync or async condition holds', async () => {
    let n = 0;
    const t = setInterval(() => n++, 5);
    try {
      await waitFor(() => n >= 3, 'three ticks');
      await waitFor(async () => n >= 5, 'five ticks');
    } finally {
      clearInterval(t);
    }
    expect(n).toBeGreaterThanOrEqual(5);
  });

  it('fails naming what it waited for', async () => {
    await expect(waitFor(() => false, 'the moon to turn blue', 50)).rejects.toThrow(
      'timed out after 50 ms waiting for the moon to turn blue',
    );
  });

  it('passes on an exception from the condition at once', async () => {
    const started = Date.now();
    await expect(
      waitFor(
        () => {
          throw new Error('broken check');
        },
        'never',
        5000,
      ),
    ).rejects.toThrow('broken check');
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

describe('until', () => {
  it('returns the first value that passes', async () => {
    let n = 0;
    const v = await until(
      async () => ++n,
      (x) => x >= 4,
      'a count of four',
    );
    expect(v).toBe(4);
  });

  it('fails naming what it waited for and the last value', async () => {
    await expect(
      until(
        () => ({ depth: 2 }),
        (v) => v.depth === 3,
        'a depth of three',
        50,
      ),
    ).rejects.toThrow(/waiting for a depth of three; last value \{"depth":2\}/);
  });
});

describe('quiescent', () => {
  it('returns the value when it holds still for the window', async () => {
    const started = Date.now();
    await expect(quiescent(() => [1, 2], { forMs: 60, what: 'the list' })).resolves.toEqual([1, 2]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(55);
  });

  it('detects a change within the window, naming the value and both readings', async () => {
    let calls = 0;
    setTimeout(() => calls++, 30);
    await expect(quiescent(() => calls, { forMs: 2000, what: 'the call count' })).rejects.toThrow(
      'expected the call count to stay 0 for 2000 ms, but it became 1',
    );
  });

  it('reads async values and takes a custom comparison', async () => {
    let v = { n: 1, at: 0 };
    const t = setInterval(() => (v = { n: 1, at: Date.now() }), 5);
    try {
      await quiescent(async () => v, { forMs: 50, what: 'n', equals: (a, b) => a.n === b.n });
    } finally {
      clearInterval(t);
    }
  });
});

describe('sleep and deferred', () => {
  it('sleep waits at least the time asked', async () => {
    const started = Date.now();
    await sleep(30);
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
  });

  it('deferred resolves and rejects from outside', async () => {
    const a = deferred<number>();
    a.resolve(7);
    await expect(a.promise).resolves.toBe(7);
    const b = deferred();
    b.reject(new Error('no'));
    await expect(b.promise).rejects.toThrow('no');
  });
});
