import { describe, expect, it } from 'vitest';
import { LatencyHistogram, WindowedHistogram } from './histogram.js';
import { LevelQueue } from './level-queue.js';

describe('LatencyHistogram', () => {
  it('gives percentiles within 2% of the exact ones over a wide range', () => {
    const h = new LatencyHistogram();
    const values: number[] = [];
    for (let i = 1; i <= 100_000; i++) {
      const v = (i % 1000) * 0.37 + (i % 7) * 50; // 0 .. ~670 ms
      values.push(v);
      h.recordMs(v);
    }
    values.sort((a, b) => a - b);
    for (const q of [0.5, 0.9, 0.95, 0.99, 0.999]) {
      const exact = values[Math.ceil(q * values.length) - 1]!;
      expect(Math.abs(h.quantileMs(q) - exact) / exact).toBeLessThan(0.02);
    }
    const s = h.snapshot();
    expect(s.count).toBe(100_000);
    expect(s.min).toBeCloseTo(values[0]!, 3);
    expect(s.max).toBeCloseTo(values[values.length - 1]!, 3);
  });

  it('is exact for small values, clamps negatives and huge values, and is empty-safe', () => {
    const h = new LatencyHistogram();
    expect(h.snapshot().p99).toBe(0);
    h.recordMs(0.05);
    h.recordMs(-3);
    h.recordMs(Number.NaN);
    h.recordMs(1e12);
    expect(h.count).toBe(4);
    expect(h.quantileMs(0.5)).toBeCloseTo(0, 3);
    expect(h.snapshot().max).toBeGreaterThan(2_000_000);
  });

  it('counts values at or below a bound, for cumulative buckets', () => {
    const h = new LatencyHistogram();
    for (const v of [0.01, 0.05, 0.5, 1, 2, 10, 100]) h.recordMs(v);
    expect(h.countAtOrBelowMs(0.05)).toBe(2);
    expect(h.countAtOrBelowMs(1)).toBe(4);
    expect(h.countAtOrBelowMs(50)).toBe(6);
    expect(h.countAtOrBelowMs(1e9)).toBe(7);
  });

  it('a windowed histogram forgets rotated-out slots', () => {
    const w = new WindowedHistogram(2);
    w.recordMs(100);
    w.rotate();
    w.recordMs(1);
    expect(w.merged().snapshot().max).toBeCloseTo(100, 0);
    w.rotate(); // the slot holding 100 is reused
    expect(w.merged().snapshot().max).toBeCloseTo(1, 0);
    w.rotate();
    expect(w.merged().count).toBe(0);
  });
});

describe('LevelQueue (weighted fair priority)', () => {
  it('lets CRITICAL overtake a BULK backlog', () => {
    const q = new LevelQueue<string>();
    for (let i = 0; i < 100_000; i++) q.push(`bulk${i}`, 4);
    q.shift();
    q.push('critical', 0);
    expect(q.shift()).toBe('critical');
  });

  it('serves levels in proportion 16:8:4:2:1 while all are busy: nobody starves', () => {
    const q = new LevelQueue<number>();
    for (let l = 0; l < 5; l++) for (let i = 0; i < 10_000; i++) q.push(l, l as 0 | 1 | 2 | 3 | 4);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 3100; i++) counts[q.shift()!]!++;
    expect(counts).toEqual([1600, 800, 400, 200, 100]);
  });

  it('keeps FIFO order within a level and reports sizes', () => {
    const q = new LevelQueue<number>();
    for (let i = 0; i < 40; i++) q.push(i, 2);
    q.push(99, 3);
    expect(q.sizes()).toEqual([0, 0, 40, 1, 0]);
    const out = [...q.drain()];
    expect(out.slice(0, 40)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(out[40]).toBe(99);
    expect(q.size).toBe(0);
  });
});
