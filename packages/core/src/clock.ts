/** Epoch milliseconds with sub-millisecond resolution (monotonic within a process). */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}
