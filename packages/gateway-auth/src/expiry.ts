/** The longest delay Node's timers take; a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Calls `onExpire` once at `expiresAt` (epoch ms), for any future time: delays
 * past Node's timer range (about 24.8 days) are waited out in steps, so a
 * long-lived token is not treated as expired at once. Returns a cancel function.
 * The timer does not keep the process alive.
 */
export function scheduleExpiry(expiresAt: number, onExpire: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  let cancelled = false;
  const arm = () => {
    if (cancelled) return;
    const left = expiresAt - Date.now();
    if (left <= 0) {
      cancelled = true;
      onExpire();
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return () => {
    cancelled = true;
    if (timer) clearTimeout(timer);
  };
}
