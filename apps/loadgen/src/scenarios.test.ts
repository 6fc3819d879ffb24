import { LatencyHistogram } from '@qe/core';
import { describe, expect, it } from 'vitest';
import type { PhaseResult } from './run.js';
import { planFor, scenarioDefaults, verdict } from './scenarios.js';

function phase(rate: number, p99: number, lost = 0): PhaseResult {
  const h = new LatencyHistogram();
  for (let i = 0; i < 98; i++) h.recordMs(1);
  h.recordMs(p99);
  h.recordMs(p99);
  return {
    ph: 0,
    spec: { rate, durationMs: 1000 },
    counts: {
      sent: rate,
      received: rate - lost,
      unique: rate - lost,
      lost,
      duplicates: 0,
      failedButDelivered: 0,
      unknown: 0,
    },
    histogram: h,
    series: [],
    sendRate: rate,
    deliveredRate: rate,
    wallMs: 1000,
    maxLagMs: 0,
    lateness: new LatencyHistogram(),
    rss: { producerMax: 100e6, consumerMax: 100e6 },
    errors: [],
  };
}

describe('stress plan', () => {
  const params = { ...scenarioDefaults('stress'), rate: 1000, stepFactor: 2, p99BudgetMs: 5 };
  const next = planFor('stress', params);

  it('ramps while steps pass, confirms a failed step once, stops after two failed rates or a fall-behind', () => {
    expect(next([])).toEqual({ rate: 1000, durationMs: 5000 });
    expect(next([phase(1000, 2)])?.rate).toBe(2000);
    expect(next([phase(1000, 2), phase(2000, 9)])?.rate).toBe(2000); // confirm
    expect(next([phase(1000, 2), phase(2000, 9), phase(2000, 3)])?.rate).toBe(4000); // it was a blip
    // 2000 failed twice but 1000 passed: try 4000
    expect(next([phase(1000, 2), phase(2000, 9), phase(2000, 9)])?.rate).toBe(4000);
    expect(next([phase(1000, 2), phase(2000, 9), phase(2000, 9), phase(4000, 9)])?.rate).toBe(4000);
    // two consecutive failed rates: stop
    expect(next([phase(1000, 2), phase(2000, 9), phase(2000, 9), phase(4000, 9), phase(4000, 9)])).toBeNull();
    // a noisy first rate does not end the search by itself
    expect(next([phase(1000, 9), phase(1000, 9)])?.rate).toBe(2000);
    expect(next([phase(1000, 2), phase(2000, 2, 5)])).toBeNull(); // loss ends it at once
  });

  it('reports the best passing step against the 10,000 events/s target', () => {
    const checks = verdict(
      'stress',
      [phase(8000, 2), phase(12000, 3), phase(18000, 30), phase(18000, 40)],
      params,
    );
    const best = checks.find((c) => c.name.startsWith('highest rate'))!;
    expect(best.actual).toBe('12,000 events/s');
    expect(best.pass).toBe(true);
  });
});
