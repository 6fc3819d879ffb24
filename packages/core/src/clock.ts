const origin = performance.timeOrigin;

/** Epoch milliseconds with sub-millisecond resolution (monotonic within a process). */
export function epochNow(): number {
  return origin + performance.now();
}

/** Converts a `performance.now()` reading to epoch milliseconds. */
export function toEpoch(perfNow: number): number {
  return origin + perfNow;
}
