/**
 * Polls `cond` every few milliseconds until it holds, or throws after
 * `timeoutMs` naming `what`. Tests wait for outcomes this way instead of
 * sleeping a fixed time and hoping.
 */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what = 'condition',
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
