/**
 * Compatibility of two JSON Schemas, as schema registries define it:
 *
 * - `backward`: consumers on the new schema read data written with the old one
 *   (every value valid under the old schema is valid under the new);
 * - `forward`: consumers on the old schema read data written with the new one;
 * - `full`: both; `none`: no check.
 *
 * The check proves "every value valid under A is valid under B" structurally
 * and conservatively: a change it cannot prove safe (an unknown keyword that
 * differs, a new `pattern`, `$ref`, combinators that differ) is reported as
 * breaking, so `force` is the only way past a doubt.
 */
export type CompatibilityMode = 'backward' | 'forward' | 'full' | 'none';
export const COMPATIBILITY_MODES: readonly CompatibilityMode[] = ['backward', 'forward', 'full', 'none'];

type Schema = boolean | object;

export function compatibilityProblems(
  oldSchema: Schema,
  newSchema: Schema,
  mode: CompatibilityMode,
): string[] {
  const out: string[] = [];
  if (mode === 'backward' || mode === 'full')
    for (const r of subsetProblems(oldSchema, newSchema, '')) out.push(`backward: ${r}`);
  if (mode === 'forward' || mode === 'full')
    for (const r of subsetProblems(newSchema, oldSchema, '')) out.push(`forward: ${r}`);
  return out;
}

const ANNOTATIONS = new Set([
  '$schema',
  '$id',
  '$comment',
  'title',
  'description',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
]);
const HANDLED = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'enum',
  'const',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'items',
  'format',
  'pattern',
  'multipleOf',
  'uniqueItems',
  'minProperties',
  'maxProperties',
]);
const ALL_TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array', 'null'];

const isObj = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);
const at = (path: string) => path || '/';
const stable = (x: unknown): string =>
  JSON.stringify(x, (_k, v) =>
    isObj(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );

function typesOf(s: Record<string, unknown>): Set<string> {
  const t = s.type;
  const set = new Set<string>(
    t === undefined ? ALL_TYPES : Array.isArray(t) ? (t as string[]) : [t as string],
  );
  if (set.has('number')) set.add('integer');
  return set;
}

/** Reasons why a value valid under `a` may be invalid under `b` (empty: `a` ⊆ `b`). */
export function subsetProblems(a: Schema, b: Schema, path: string): string[] {
  if (b === true || (isObj(b) && Object.keys(b).every((k) => ANNOTATIONS.has(k)))) return [];
  if (a === false) return [];
  if (b === false) return [`${at(path)} is no longer allowed`];
  const A = (a === true ? {} : a) as Record<string, unknown>;
  const B = b as Record<string, unknown>;
  const out: string[] = [];
  for (const k of Object.keys(B)) {
    if (ANNOTATIONS.has(k) || HANDLED.has(k)) continue;
    if (stable(A[k]) !== stable(B[k])) out.push(`${at(path)}: "${k}" changed (cannot prove compatible)`);
  }
  // type
  const ta = typesOf(A);
  const tb = typesOf(B);
  const lost = [...ta].filter((t) => !tb.has(t) && !(t === 'integer' && tb.has('number')));
  if (lost.length) out.push(`${at(path)}: type ${lost.join('|')} no longer accepted`);
  // enum / const
  const valuesOf = (s: Record<string, unknown>): unknown[] | undefined =>
    'const' in s ? [s.const] : Array.isArray(s.enum) ? s.enum : undefined;
  const va = valuesOf(A);
  const vb = valuesOf(B);
  if (vb) {
    if (!va) out.push(`${at(path)}: now restricted to ${stable(vb)}`);
    else {
      const keys = new Set(vb.map(stable));
      const missing = va.filter((v) => !keys.has(stable(v)));
      if (missing.length) out.push(`${at(path)}: value(s) ${stable(missing)} no longer allowed`);
    }
  }
  // lower bounds: b's must be <= a's; upper bounds: b's must be >= a's
  const lower = (k: string, label = k) => {
    if (B[k] === undefined) return;
    if (A[k] === undefined || (A[k] as number) < (B[k] as number))
      out.push(`${at(path)}: ${label} ${B[k]} is stricter than ${A[k] ?? 'none'}`);
  };
  const upper = (k: string, label = k) => {
    if (B[k] === undefined) return;
    if (A[k] === undefined || (A[k] as number) > (B[k] as number))
      out.push(`${at(path)}: ${label} ${B[k]} is stricter than ${A[k] ?? 'none'}`);
  };
  lower('minimum');
  lower('exclusiveMinimum');
  upper('maximum');
  upper('exclusiveMaximum');
  lower('minLength');
  upper('maxLength');
  lower('minItems');
  upper('maxItems');
  lower('minProperties');
  upper('maxProperties');
  for (const k of ['format', 'pattern', 'multipleOf'])
    if (B[k] !== undefined && A[k] !== B[k]) out.push(`${at(path)}: ${k} ${stable(B[k])} added or changed`);
  if (B.uniqueItems === true && A.uniqueItems !== true) out.push(`${at(path)}: uniqueItems added`);
  // arrays
  if (B.items !== undefined && (ta.has('array') || A.items !== undefined)) {
    if (Array.isArray(B.items) || Array.isArray(A.items)) {
      if (stable(A.items) !== stable(B.items))
        out.push(`${at(path)}: tuple items changed (cannot prove compatible)`);
    } else out.push(...subsetProblems((A.items as Schema) ?? true, B.items as Schema, `${path}/items`));
  }
  // objects
  if (ta.has('object') && tb.has('object')) {
    const reqA = new Set((A.required as string[]) ?? []);
    for (const r of (B.required as string[]) ?? []) if (!reqA.has(r)) out.push(`${path}/${r}: now required`);
    const propsA = (A.properties as Record<string, Schema>) ?? {};
    const propsB = (B.properties as Record<string, Schema>) ?? {};
    const addA = (A.additionalProperties as Schema | undefined) ?? true;
    const addB = (B.additionalProperties as Schema | undefined) ?? true;
    for (const [k, sb] of Object.entries(propsB)) {
      const sa = k in propsA ? propsA[k]! : addA;
      out.push(...subsetProblems(sa, sb, `${path}/${k}`));
    }
    for (const [k, sa] of Object.entries(propsA)) {
      if (k in propsB) continue;
      if (addB === false) out.push(`${path}/${k}: no longer allowed (additionalProperties: false)`);
      else out.push(...subsetProblems(sa, addB, `${path}/${k}`));
    }
    if (addB !== true) {
      if (addA === true || isObj(addA)) {
        const r = subsetProblems(addA, addB, `${path}/*`);
        if (r.length) out.push(`${at(path)}: additional properties now restricted`);
      }
    }
  }
  return out;
}
