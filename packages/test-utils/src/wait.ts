/** How often the polling helpers look again. Short, so a met condition is seen at once. */
const POLL_MS = 5;

const tick = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function show(value: unknown): string {
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s.length > 500 ? `${s.slice(0, 500)}…` : s;
  } catch {
    return String(value);
  }
}

/**
 * Polls `cond` (sync or async) until it returns true; throws
 * `timed out after <timeoutMs> ms waiting for <what>` when the deadline passes.
 * An exception thrown by `cond` propagates at once.
 *
 * Use it wherever a test would otherwise sleep a fixed time and hope the
 * outcome has arrived: the wait ends as soon as it has, and a loaded machine
 * only makes it slower, never wrong.
 */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what = 'condition',
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await tick(POLL_MS);
  }
}

/**
 * Reads a value (sync or async) until `ok(value)` holds and returns that value;
 * throws naming `what` and the last value read when `timeoutMs` passes.
 */
export async function until<T>(
  read: () => T | Promise<T>,
  ok: (value: T) => boolean,
  what = 'value',
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await read();
  while (!ok(last)) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${show(last)}`);
    await tick(POLL_MS);
    last = await read();
  }
  return last;
}

export interface QuiescentOptions<T> {
  /**
   * How long the value must stay the same. Derive it from the configured
   * timeout that would have to fire for the value to change, with a margin
   * (3× that timeout is the rule in this workspace), never a bare constant.
   */
  forMs: number;
  /** Names the value in the error. */
  what: string;
  /** How two reads compare; JSON equality by default (so arrays and plain objects work). */
  equals?: (a: T, b: T) => boolean;
  /** Poll interval; 10 ms by default. */
  intervalMs?: number;
}

const jsonEquals = (a: unknown, b: unknown) => Object.is(a, b) || show(a) === show(b);

/**
 * Asserts that `read()` keeps returning the same value for `forMs`: polls it
 * through the window and throws, naming `what` and both values, at the first
 * change. Returns the (unchanged) value.
 *
 * This is how a test says "nothing (more) happened". The window must be long
 * enough for the thing that must not happen to have had its chance: derive it
 * from the configured timeout, e.g. `forMs: 3 * resetTimeoutMs`.
 */
export async function quiescent<T>(
  read: () => T | Promise<T>,
  { forMs, what, equals = jsonEquals, intervalMs = 10 }: QuiescentOptions<T>,
): Promise<T> {
  const first = await read();
  const end = Date.now() + forMs;
  for (;;) {
    const now = await read();
    if (!equals(first, now))
      throw new Error(`expected ${what} to stay ${show(first)} for ${forMs} ms, but it became ${show(now)}`);
    const left = end - Date.now();
    if (left <= 0) return first;
    await tick(Math.min(intervalMs, left));
  }
}

/**
 * Waits `ms`. Only for pacing load or simulating work inside a handler, never
 * as a wait before an assertion (use `waitFor`, `until` or `quiescent`).
 */
export const sleep = (ms: number): Promise<void> => tick(ms);

/** A promise with its resolve and reject, for signals a test hands to the code under test. */
export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
