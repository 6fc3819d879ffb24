import { ValidationError } from '@qe/core';

const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * JSON.parse that refuses prototype-pollution keys (`__proto__`,
 * `constructor`, `prototype`) anywhere in the document and bounds nesting, so
 * no merge of a client's object can reach a prototype. Throws
 * `ValidationError` (field `body`) on bad JSON.
 */
export function parseJsonSafe(text: string, maxDepth = 64): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text, (key, v) => {
      if (FORBIDDEN.has(key)) throw new ValidationError('body', `key ${JSON.stringify(key)} is not allowed`);
      return v;
    });
  } catch (err) {
    if (err instanceof ValidationError) throw err;
    throw new ValidationError('body', `malformed JSON: ${(err as Error).message}`);
  }
  const depth = (v: unknown, d: number): number => {
    if (d > maxDepth) throw new ValidationError('body', `nested deeper than ${maxDepth}`);
    if (v !== null && typeof v === 'object') for (const x of Object.values(v)) depth(x, d + 1);
    return d;
  };
  depth(value, 0);
  return value;
}
