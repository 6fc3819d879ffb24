import { InvalidPatternError } from './errors.js';

/**
 * Subscription patterns (SEMANTICS "Patterns"):
 * - segments separated by `.`, each `[a-z0-9_-]+`, `*` or `**`;
 * - `*` matches exactly one segment; `**` matches any number, zero included;
 * - a pattern that is only `*` or only `**` matches every event.
 */
const SEGMENT = /^[a-z0-9_-]+$/;
const MAX_PATTERN_LENGTH = 512;

/** A pattern checked and split once, with a matcher for single tests. */
export interface CompiledPattern {
  readonly source: string;
  readonly segments: readonly string[];
  /** No wildcard: matches only the identical type. */
  readonly exact: boolean;
  /** Matches every type (`*` or `**`). */
  readonly matchesAll: boolean;
  matches(type: string): boolean;
}

/** Throws `InvalidPatternError` naming what is wrong. */
export function validatePattern(pattern: unknown): asserts pattern is string {
  if (typeof pattern !== 'string') throw new InvalidPatternError(String(pattern), 'must be a string');
  if (pattern.length === 0) throw new InvalidPatternError(pattern, 'must not be empty');
  if (pattern.length > MAX_PATTERN_LENGTH)
    throw new InvalidPatternError(pattern.slice(0, 40), `longer than ${MAX_PATTERN_LENGTH} characters`);
  const segments = pattern.split('.');
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg === '') throw new InvalidPatternError(pattern, `empty segment at position ${i + 1}`);
    if (seg === '*' || seg === '**') continue;
    if (seg.includes('*'))
      throw new InvalidPatternError(
        pattern,
        `segment "${seg}": a wildcard must be a whole segment (* or **)`,
      );
    if (!SEGMENT.test(seg))
      throw new InvalidPatternError(pattern, `segment "${seg}" has characters outside [a-z0-9_-]`);
  }
}

export function compilePattern(pattern: string): CompiledPattern {
  validatePattern(pattern);
  const segments = pattern.split('.');
  const exact = !segments.some((s) => s === '*' || s === '**');
  const matchesAll = pattern === '*' || pattern === '**' || segments.every((s) => s === '**');
  let matches: (type: string) => boolean;
  if (matchesAll) matches = () => true;
  else if (exact) matches = (type) => type === pattern;
  else if (
    segments.length >= 2 &&
    segments[segments.length - 1] === '**' &&
    !segments.slice(0, -1).some(isWild)
  ) {
    // `a.b.**`: the type is `a.b` or starts with `a.b.`
    const base = segments.slice(0, -1).join('.');
    const prefix = `${base}.`;
    matches = (type) => type === base || type.startsWith(prefix);
  } else if (
    segments.length >= 2 &&
    segments[segments.length - 1] === '*' &&
    !segments.slice(0, -1).some(isWild)
  ) {
    // `a.b.*`: the type starts with `a.b.` and has no further dot (the common ACL and subscription
    // shape; the general matcher splits the type on every test)
    const prefix = `${segments.slice(0, -1).join('.')}.`;
    matches = (type) => type.startsWith(prefix) && type.indexOf('.', prefix.length) === -1;
  } else {
    matches = (type) => matchSegments(segments, 0, type.split('.'), 0);
  }
  return { source: pattern, segments, exact, matchesAll, matches };
}

function isWild(s: string): boolean {
  return s === '*' || s === '**';
}

function matchSegments(p: readonly string[], pi: number, t: readonly string[], ti: number): boolean {
  while (pi < p.length) {
    const seg = p[pi]!;
    if (seg === '**') {
      if (pi === p.length - 1) return true;
      for (let k = ti; k <= t.length; k++) if (matchSegments(p, pi + 1, t, k)) return true;
      return false;
    }
    if (ti >= t.length) return false;
    if (seg !== '*' && seg !== t[ti]) return false;
    pi++;
    ti++;
  }
  return ti === t.length;
}

/** True when `type` matches `pattern`. Compiles the pattern each call: for hot paths use `PatternIndex`. */
export function matchPattern(pattern: string, type: string): boolean {
  return compilePattern(pattern).matches(type);
}

interface TrieNode<T> {
  children: Map<string, TrieNode<T>>;
  star: TrieNode<T> | undefined;
  globstar: TrieNode<T> | undefined;
  values: T[];
}

function node<T>(): TrieNode<T> {
  return { children: new Map(), star: undefined, globstar: undefined, values: [] };
}

/**
 * Matches a type against many patterns at once. Patterns live in a segment
 * trie; results are cached per type (bounded) and the cache is dropped whenever
 * the set of patterns changes, so a publish costs one Map lookup in steady state
 * however many subscriptions exist.
 *
 * `order` sorts results so that callers see values in a stable order (for
 * example subscription creation order).
 */
export class PatternIndex<T> {
  private readonly root: TrieNode<T> = node();
  private readonly cache = new Map<string, readonly T[]>();
  private size_ = 0;

  constructor(
    private readonly order?: (a: T, b: T) => number,
    private readonly maxCachedTypes = 10_000,
  ) {}

  get size(): number {
    return this.size_;
  }

  add(pattern: string, value: T): void {
    validatePattern(pattern);
    let n = this.root;
    for (const seg of segmentsOf(pattern)) {
      if (seg === '*') n = n.star ??= node();
      else if (seg === '**') n = n.globstar ??= node();
      else {
        let c = n.children.get(seg);
        if (!c) n.children.set(seg, (c = node()));
        n = c;
      }
    }
    n.values.push(value);
    this.size_++;
    this.cache.clear();
  }

  /** Removes one registration of `value` under `pattern`. Returns whether one was found. */
  remove(pattern: string, value: T): boolean {
    let n: TrieNode<T> | undefined = this.root;
    for (const seg of segmentsOf(pattern)) {
      if (!n) return false;
      n = seg === '*' ? n.star : seg === '**' ? n.globstar : n.children.get(seg);
    }
    if (!n) return false;
    const i = n.values.indexOf(value);
    if (i < 0) return false;
    n.values.splice(i, 1);
    this.size_--;
    this.cache.clear();
    return true;
  }

  /** Every value whose pattern matches `type`, each once. Do not mutate the result. */
  match(type: string): readonly T[] {
    const hit = this.cache.get(type);
    if (hit !== undefined) return hit;
    const out = new Set<T>();
    collect(this.root, type.split('.'), 0, out);
    const result = [...out];
    if (this.order && result.length > 1) result.sort(this.order);
    if (this.cache.size >= this.maxCachedTypes) this.cache.clear();
    this.cache.set(type, result);
    return result;
  }
}

/** A lone `*` means every event (spec 000 subscribes to `'*'` for all events), like `**`. */
function segmentsOf(pattern: string): string[] {
  return pattern === '*' ? ['**'] : pattern.split('.');
}

function collect<T>(n: TrieNode<T>, segs: readonly string[], i: number, out: Set<T>): void {
  if (n.globstar) for (let k = i; k <= segs.length; k++) collect(n.globstar, segs, k, out);
  if (i === segs.length) {
    for (const v of n.values) out.add(v);
    return;
  }
  const seg = segs[i]!;
  const c = n.children.get(seg);
  if (c) collect(c, segs, i + 1, out);
  if (n.star) collect(n.star, segs, i + 1, out);
}
