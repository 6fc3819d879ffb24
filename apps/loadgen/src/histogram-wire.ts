import { LatencyHistogram } from '@qe/core';

/** A `LatencyHistogram` as plain JSON (sparse buckets), for IPC between load processes. */
export interface WireHistogram {
  buckets: [number, number][];
  count: number;
  sumUs: number;
  minUs: number;
  maxUs: number;
}

/** Sparse, JSON-safe copy of a histogram (only non-empty buckets). Pure. */
export function toWire(h: LatencyHistogram): WireHistogram {
  const buckets: [number, number][] = [];
  const c = h.counts;
  for (let i = 0; i < c.length; i++) if (c[i] !== 0) buckets.push([i, c[i]!]);
  return {
    buckets,
    count: h.count,
    sumUs: h.sumUs,
    minUs: Number.isFinite(h.minUs) ? h.minUs : -1,
    maxUs: h.maxUs,
  };
}

/** Rebuilds a histogram from `toWire`'s output; the result is independent of the input. */
export function fromWire(w: WireHistogram): LatencyHistogram {
  const h = new LatencyHistogram();
  for (const [i, n] of w.buckets) h.counts[i] = n;
  h.count = w.count;
  h.sumUs = w.sumUs;
  h.minUs = w.minUs < 0 ? Number.POSITIVE_INFINITY : w.minUs;
  h.maxUs = w.maxUs;
  return h;
}
