import { ConfigError, ValidationError } from './errors.js';

/**
 * Refuses keys of an options object that nobody reads, so a misspelt or
 * misplaced setting is an error instead of a quiet no-op (SEMANTICS: nothing
 * silent). `where` prefixes the key in the error (`backpressure.`); `hints`
 * say where a known foreign key belongs (spec 000's `redis` is
 * `@qe/redis-transport`'s). Constructor and factory settings fail with
 * `CONFIG`; per-call options (`kind: 'validation'`) with `VALIDATION`, as
 * their bad values do.
 */
export function assertKnownKeys(
  options: unknown,
  allowed: readonly string[],
  where = '',
  hints: Readonly<Record<string, string>> = {},
  kind: 'config' | 'validation' = 'config',
): void {
  if (options === undefined) return;
  const name = where === '' ? 'options' : where.slice(0, -1);
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    if (kind === 'config') throw new ConfigError(name, 'must be an object');
    throw new ValidationError(name, 'must be an object');
  }
  for (const key of Object.keys(options)) {
    if (allowed.includes(key)) continue;
    const hint = Object.hasOwn(hints, key) ? hints[key] : `known settings: ${allowed.join(', ')}`;
    const message = `unknown setting; ${hint}`;
    if (kind === 'config') throw new ConfigError(where + key, message);
    throw new ValidationError(where + key, message);
  }
}

/** `CONFIG` unless `v` is undefined or an integer >= `min`. */
export function checkIntSetting(
  setting: string,
  v: unknown,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new ConfigError(
      setting,
      `must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, got ${String(v)}`,
    );
}

/** `CONFIG` unless `v` is undefined or a function. */
export function checkFunctionSetting(setting: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'function') throw new ConfigError(setting, 'must be a function');
}

/** `CONFIG` unless `v` is undefined or a boolean. */
export function checkBooleanSetting(setting: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'boolean') throw new ConfigError(setting, 'must be true or false');
}
