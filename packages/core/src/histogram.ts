/**
 * A log-linear latency histogram in the spirit of HdrHistogram: values are
 * recorded in microseconds, exact below 128 µs and within 1/64 (≈1.6 %)
 * above, up to ~35 minutes. Recording is one array increment; percentiles
 * walk ~1,700 buckets.
 */
const SUB_BITS = 6;
const HALF = 1 << SUB_BITS; // 64
const LINEAR = HALF * 2; // 128: exact below this
const MAX_US = 2 ** 31 - 1;
export const HISTOGRAM_BUCKETS = LINEAR + (31 - 7) * HALF;

function indexOf(us: number): number {
  if (us < LINEAR) return us;
  const b = 31 - Math.clz32(us); // floor(log2), >= 7
  const shift = b - SUB_BITS;
  return LINEAR + (b - 7) * HALF + ((us >>> shift) - HALF);
}

function lowerBoundOf(index: number): number {
  if (index < LINEAR) return index;
  const k = index - LINEAR;
  const b = 7 + Math.floor(k / HALF);
  const m = (k % HALF) + HALF;
  return m * 2 ** (b - SUB_BITS);
}

function widthOf(index: number): number {
  if (index < LINEAR) return 1;
  const b = 7 + Math.floor((index - LINEAR) / HALF);
  return 2 ** (b - SUB_BITS);
}

export interface HistogramSnapshot {
  count: number;
  /** All in milliseconds. */
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
}

export class LatencyHistogram {
  readonly counts = new Float64Array(HISTOGRAM_BUCKETS);
  count = 0;
  sumUs = 0;
  minUs = Number.POSITIVE_INFINITY;
  maxUs = 0;

  /** Records a value in milliseconds (fractions kept to the microsecond). */
  recordMs(ms: number): void {
    let us = Math.round(ms * 1000);
    if (!(us >= 0))
      us = 0; // negative clock skew or NaN
    else if (us > MAX_US) us = MAX_US;
    this.counts[indexOf(us)]!++;
    this.count++;
    this.sumUs += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sumUs = 0;
    this.minUs = Number.POSITIVE_INFINITY;
    this.maxUs = 0;
  }

  /** Adds another histogram's counts into this one. */
  add(other: LatencyHistogram): void {
    if (other.count === 0) return;
    const a = this.counts;
    const b = other.counts;
    for (let i = 0; i < a.length; i++) if (b[i] !== 0) a[i]! += b[i]!;
    this.count += other.count;
    this.sumUs += other.sumUs;
    if (other.minUs < this.minUs) this.minUs = other.minUs;
    if (other.maxUs > this.maxUs) this.maxUs = other.maxUs;
  }

  /**
   * How many recorded values are at most `ms` (by bucket: exact below 128 µs,
   * within 1/64 above). For exporting as cumulative `le` buckets.
   */
  countAtOrBelowMs(ms: number): number {
    const limitUs = ms * 1000;
    let n = 0;
    for (let i = 0; i < this.counts.length; i++) {
      if (lowerBoundOf(i) > limitUs) break; // a bucket counts when it starts at or below the bound
      n += this.counts[i]!;
    }
    return n;
  }

  /** The value (ms) at or below which `q` (0..1) of recorded values lie. 0 when empty. */
  quantileMs(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        // midpoint of the bucket, clamped to what was actually seen
        const mid = lowerBoundOf(i) + (widthOf(i) - 1) / 2;
        return Math.min(Math.max(mid, this.minUs), this.maxUs) / 1000;
      }
    }
    return this.maxUs / 1000;
  }

  snapshot(): HistogramSnapshot {
    if (this.count === 0)
      return { count: 0, min: 0, max: 0, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, p999: 0 };
    return {
      count: this.count,
      min: this.minUs / 1000,
      max: this.maxUs / 1000,
      mean: this.sumUs / this.count / 1000,
      p50: this.quantileMs(0.5),
      p90: this.quantileMs(0.9),
      p95: this.quantileMs(0.95),
      p99: this.quantileMs(0.99),
      p999: this.quantileMs(0.999),
    };
  }
}

/**
 * A histogram over a sliding window: `slots` sub-histograms, the oldest
 * dropped at each `rotate()` (the bus rotates every `windowMs / slots`).
 */
export class WindowedHistogram {
  private readonly ring: LatencyHistogram[];
  private head = 0;
  current: LatencyHistogram;

  constructor(readonly slots = 6) {
    this.ring = Array.from({ length: slots }, () => new LatencyHistogram());
    this.current = this.ring[0]!;
  }

  recordMs(ms: number): void {
    this.current.recordMs(ms);
  }

  rotate(): void {
    this.head = (this.head + 1) % this.slots;
    this.current = this.ring[this.head]!;
    this.current.reset();
  }

  merged(): LatencyHistogram {
    const out = new LatencyHistogram();
    for (const h of this.ring) out.add(h);
    return out;
  }
}
