import { validatePattern } from '@qe/core';

type Segs = readonly string[];

/** A lone `*` means every event (SEMANTICS), which is what `**` means. */
function segs(pattern: string): Segs {
  validatePattern(pattern);
  return pattern === '*' ? ['**'] : pattern.split('.');
}

function memo<T>(fn: (i: number, j: number) => T): (i: number, j: number) => T {
  const cache = new Map<number, T>();
  return (i, j) => {
    const k = i * 1024 + j;
    let v = cache.get(k);
    if (v === undefined) {
      v = fn(i, j);
      cache.set(k, v);
    }
    return v;
  };
}

/**
 * True when every event type `inner` matches is also matched by `outer`.
 * Conservative: for unusual shapes it may answer false where the truth is
 * true, never the reverse, so a permission check built on it can only refuse
 * too much, not allow too much.
 */
export function patternIsSubset(inner: string, outer: string): boolean {
  const p = segs(inner);
  const a = segs(outer);
  const go: (i: number, j: number) => boolean = memo((i, j) => {
    if (i === p.length) return a.slice(j).every((s) => s === '**');
    if (j === a.length) return false;
    const ps = p[i]!;
    const as = a[j]!;
    if (as === '**') return go(i, j + 1) || go(i + 1, j);
    if (ps === '**') return false; // a run of any length cannot fit a fixed segment
    if (as === '*') return go(i + 1, j + 1);
    if (ps === '*') return false;
    return ps === as && go(i + 1, j + 1);
  });
  return go(0, 0);
}

/** True when some event type is matched by both patterns. */
export function patternsIntersect(x: string, y: string): boolean {
  const p = segs(x);
  const d = segs(y);
  const go: (i: number, j: number) => boolean = memo((i, j) => {
    if (i === p.length && j === d.length) return true;
    if (i < p.length && p[i] === '**' && go(i + 1, j)) return true;
    if (j < d.length && d[j] === '**' && go(i, j + 1)) return true;
    if (i === p.length || j === d.length) return false;
    const ps = p[i]!;
    const ds = d[j]!;
    if (ps === '**' && go(i, j + 1)) return true;
    if (ds === '**' && go(i + 1, j)) return true;
    if (ps === '**' || ds === '**') return go(i + 1, j + 1);
    if (ps === '*' || ds === '*' || ps === ds) return go(i + 1, j + 1);
    return false;
  });
  return go(0, 0);
}
