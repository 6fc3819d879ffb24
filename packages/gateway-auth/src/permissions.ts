import {
  type CompiledPattern,
  compilePattern,
  ForbiddenError,
  ValidationError,
  validatePattern,
} from '@qe/core';
import { patternIsSubset, patternsIntersect } from './patterns.js';

/** NATS-style allow and deny lists of patterns. Deny wins. */
export interface PatternRules {
  allow?: string[];
  deny?: string[];
}

export interface Permissions {
  publish: PatternRules;
  subscribe: PatternRules;
  /**
   * May use the administrative routes (dead letters: list, inspect, redrive,
   * purge). Even then, only for event types the subscribe rules allow.
   * Granted only by an explicit `admin: true` in the token's claim.
   */
  admin?: boolean;
}

/** Nothing allowed. */
export const DENY_ALL: Permissions = Object.freeze({
  publish: { allow: [] },
  subscribe: { allow: [] },
  admin: false,
});
/** Everything allowed, administration included (a gateway without authentication). */
export const ALLOW_ALL: Permissions = Object.freeze({
  publish: { allow: ['**'] },
  subscribe: { allow: ['**'] },
  admin: true,
});

function rules(v: unknown, field: string): PatternRules {
  if (v === undefined) return { allow: [] };
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new ValidationError(field, 'must be { allow?, deny? }');
  const o = v as Record<string, unknown>;
  const list = (x: unknown, f: string): string[] => {
    if (x === undefined) return [];
    if (!Array.isArray(x) || x.some((p) => typeof p !== 'string'))
      throw new ValidationError(f, 'must be an array of patterns');
    for (const p of x) validatePattern(p);
    return x as string[];
  };
  return { allow: list(o.allow, `${field}.allow`), deny: list(o.deny, `${field}.deny`) };
}

/**
 * Reads permissions from token claims: `{ pub: { allow, deny }, sub: { allow, deny }, admin? }`
 * under `claim` (default `qe`), as NATS user JWTs do. Absent claims give `fallback`.
 * `admin` must be exactly `true` to grant the administrative routes.
 */
export function permissionsFromClaims(
  claims: Record<string, unknown>,
  claim = 'qe',
  fallback: Permissions = DENY_ALL,
): Permissions {
  const c = claims[claim];
  if (c === undefined) return fallback;
  if (typeof c !== 'object' || c === null)
    throw new ValidationError(claim, 'must be an object with pub and sub');
  const o = c as Record<string, unknown>;
  if (o.admin !== undefined && typeof o.admin !== 'boolean')
    throw new ValidationError(`${claim}.admin`, 'must be true or false');
  return {
    publish: rules(o.pub, `${claim}.pub`),
    subscribe: rules(o.sub, `${claim}.sub`),
    admin: o.admin === true,
  };
}

/**
 * Patterns compiled once, not per check: a gateway asks `canPublish` for every
 * event with the same few patterns. Bounded; emptied whole when full (the
 * patterns of a working set come back at once).
 */
const compiled = new Map<string, CompiledPattern>();
const MAX_COMPILED = 4096;

function matcher(pattern: string): CompiledPattern {
  let c = compiled.get(pattern);
  if (c === undefined) {
    c = compilePattern(pattern);
    if (compiled.size >= MAX_COMPILED) compiled.clear();
    compiled.set(pattern, c);
  }
  return c;
}

function anyMatches(patterns: string[] | undefined, type: string): boolean {
  if (patterns === undefined) return false;
  for (let i = 0; i < patterns.length; i++) if (matcher(patterns[i]!).matches(type)) return true;
  return false;
}

/** May this principal publish an event of `type`? Deny wins over allow. */
export function canPublish(p: Permissions, type: string): boolean {
  return !anyMatches(p.publish.deny, type) && anyMatches(p.publish.allow, type);
}

/**
 * May this principal subscribe to `pattern`? Only if the whole pattern lies
 * inside one allowed pattern and touches no denied one: a subscription wider
 * than allowed is refused, never silently narrowed.
 */
export function canSubscribe(p: Permissions, pattern: string): boolean {
  if ((p.subscribe.deny ?? []).some((d) => patternsIntersect(pattern, d))) return false;
  return (p.subscribe.allow ?? []).some((a) => patternIsSubset(pattern, a));
}

export function assertPublish(p: Permissions, type: string): void {
  if (!canPublish(p, type)) throw new ForbiddenError(`not allowed to publish ${type}`, { details: { type } });
}

export function assertSubscribe(p: Permissions, pattern: string): void {
  if (!canSubscribe(p, pattern))
    throw new ForbiddenError(
      `not allowed to subscribe to ${pattern} (wider than allowed or touching a denied pattern)`,
      {
        details: { pattern },
      },
    );
}

/** Throws `FORBIDDEN` unless the principal holds the explicit admin permission. */
export function assertAdmin(p: Permissions): void {
  if (p.admin !== true)
    throw new ForbiddenError('the dead-letter routes need the admin permission (claim admin: true)', {
      details: { permission: 'admin' },
    });
}
