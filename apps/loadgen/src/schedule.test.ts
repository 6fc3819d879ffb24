import { describe, expect, it } from 'vitest';
import { type Due, drive } from './schedule.js';

describe('drive', () => {
  it('open loop: dense sequence numbers, due times on the clock schedule regardless of how slow sends are', async () => {
    const seen: Due[] = [];
    const r = await drive({
      rate: 2000,
      durationMs: 300,
      maxInFlight: 10_000,
      maxBatch: 1000,
      send: async (g) => {
        seen.push(...g);
        await new Promise((res) => setTimeout(res, 30)); // a slow target does not slow the schedule
        return [];
      },
    });
    expect(r.attempted).toBe(600);
    expect(seen.map((d) => d.seq)).toEqual(Array.from({ length: 600 }, (_, i) => i));
    for (const d of seen) expect(d.intendedAt - r.startedAt).toBeCloseTo(d.seq * 0.5, 6);
    expect(r.perSecond.reduce((a, b) => a + b, 0)).toBe(600);
  });

  it('records refused sends and whole-group failures in `failed`', async () => {
    let calls = 0;
    const r = await drive({
      rate: 0,
      durationMs: 50,
      maxInFlight: 4,
      maxBatch: 2,
      send: async (g) => {
        calls++;
        if (calls === 1) throw new Error('target down');
        if (calls === 2) return [g[1]!.seq];
        return [];
      },
    });
    expect(r.failed.slice(0, 3).sort((a, b) => a - b)).toEqual([0, 1, 3]);
    expect(r.errors[0]).toBe('target down');
    expect(r.attempted).toBeGreaterThan(4);
  });

  it('max mode never exceeds maxInFlight', async () => {
    let inFlight = 0;
    let peak = 0;
    await drive({
      rate: 0,
      durationMs: 100,
      maxInFlight: 7,
      maxBatch: 3,
      send: async (g) => {
        inFlight += g.length;
        peak = Math.max(peak, inFlight);
        await new Promise((res) => setTimeout(res, 2));
        inFlight -= g.length;
        return [];
      },
    });
    expect(peak).toBeLessThanOrEqual(7);
  });
});
