/**
 * Exponential backoff with full jitter: the n-th retry (n >= 1) waits a uniform
 * random time in [0, min(maxDelay, baseDelay * 2^(n-1))]. Full jitter spreads
 * retries of many consumers so they do not hammer a recovering dependency in
 * lockstep.
 */
export function backoffDelay(
  retry: number,
  baseDelay: number,
  maxDelay: number,
  random = Math.random,
): number {
  const ceiling = Math.min(maxDelay, baseDelay * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
