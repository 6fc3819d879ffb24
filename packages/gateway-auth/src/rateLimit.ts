import { ConfigError } from '@qe/core';

/** A gateway's message rate limit as its options give it: per connection, and optionally per principal. */
export interface MessageRateLimitSettings {
  windowMs: unknown;
  maxMessages: unknown;
  perPrincipal?: { windowMs: unknown; maxMessages: unknown };
}

/** Refuses a rate-limit setting that is not a positive integer, naming it (`rateLimit.perPrincipal.windowMs`). */
export function checkMessageRateLimit(rl: MessageRateLimitSettings): void {
  const settings: [string, unknown][] = [
    ['rateLimit.windowMs', rl.windowMs],
    ['rateLimit.maxMessages', rl.maxMessages],
  ];
  if (rl.perPrincipal)
    settings.push(
      ['rateLimit.perPrincipal.windowMs', rl.perPrincipal.windowMs],
      ['rateLimit.perPrincipal.maxMessages', rl.perPrincipal.maxMessages],
    );
  for (const [k, v] of settings)
    if (!Number.isInteger(v) || (v as number) < 1) throw new ConfigError(k, 'must be a positive integer');
}
