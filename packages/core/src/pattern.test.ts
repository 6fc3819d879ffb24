import { describe, expect, it } from 'vitest';
import { ErrorCodes, InvalidPatternError } from './errors.js';
import { compilePattern, matchPattern, PatternIndex, validatePattern } from './pattern.js';

describe('patterns (SEMANTICS "Patterns")', () => {
  const cases: [string, string, boolean][] = [
    ['task.*', 'task.create', true],
    ['task.*', 'task.dependency.resolve', false],
    ['task.*', 'task', false],
    ['task.**', 'task.create', true],
    ['task.**', 'task.dependency.resolve', true],
    ['task.**', 'task', true],
    ['task.**', 'tasks.create', false],
    ['agent.*.complete', 'agent.task.complete', true],
    ['agent.*.complete', 'agent.complete', false],
    ['agent.**.complete', 'agent.complete', true],
    ['agent.**.complete', 'agent.a.b.complete', true],
    ['agent.**.complete', 'agent.a.b.completed', false],
    ['*', 'anything.at.all', true],
    ['*', 'x', true],
    ['**', 'a.b.c', true],
    ['**.done', 'x.y.done', true],
    ['**.done', 'done', true],
    ['*.done', 'done', false],
    ['a.b', 'a.b', true],
    ['a.b', 'a.b.c', false],
    ['a.*.*', 'a.b.c', true],
    ['a.*.*', 'a.b', false],
    ['a.**.**', 'a', true],
  ];
  it.each(cases)('%s vs %s -> %s', (pattern, type, expected) => {
    expect(compilePattern(pattern).matches(type)).toBe(expected);
    expect(matchPattern(pattern, type)).toBe(expected);
    const idx = new PatternIndex<string>();
    idx.add(pattern, 'v');
    expect(idx.match(type).length === 1).toBe(expected);
  });

  it('answers for `a.b.*` as the general matcher does, odd strings included', () => {
    const m = compilePattern('a.b.*');
    const cases: [string, boolean][] = [
      ['a.b.c', true],
      ['a.b.', true], // `*` takes any one segment, the empty one too (as matchSegments does)
      ['a.b', false],
      ['a.b.c.d', false],
      ['a.b.c.', false],
      ['a.bc', false],
      ['a.bc.d', false],
      ['xa.b.c', false],
      ['', false],
    ];
    for (const [type, expected] of cases) expect([type, m.matches(type)]).toEqual([type, expected]);
    // the general matcher on the same shape with a wildcard in front
    const g = compilePattern('*.b.*');
    for (const [type, expected] of cases.filter(([t]) => t.startsWith('a.')))
      expect([type, g.matches(type)]).toEqual([type, expected]);
  });

  it.each([
    ['', 'must not be empty'],
    ['a..b', 'empty segment'],
    ['.a', 'empty segment'],
    ['a.', 'empty segment'],
    ['***', 'wildcard must be a whole segment'],
    ['a.b*', 'wildcard must be a whole segment'],
    ['Task.create', 'outside [a-z0-9_-]'],
    ['a b', 'outside [a-z0-9_-]'],
    ['a/b', 'outside [a-z0-9_-]'],
  ])('rejects %j with a clear error', (pattern, reason) => {
    const err = (() => {
      try {
        validatePattern(pattern);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidPatternError);
    expect((err as InvalidPatternError).code).toBe(ErrorCodes.INVALID_PATTERN);
    expect((err as Error).message).toContain(reason);
  });

  it('rejects non-strings and very long patterns', () => {
    expect(() => validatePattern(42)).toThrow(InvalidPatternError);
    expect(() => validatePattern(`${'a.'.repeat(300)}a`)).toThrow(/longer than/);
  });
});

describe('PatternIndex', () => {
  it('matches thousands of subscriptions and keeps insertion order by comparator', () => {
    const idx = new PatternIndex<number>((a, b) => a - b);
    for (let i = 0; i < 5000; i++) idx.add(`svc${i}.*`, i);
    idx.add('**', 9000);
    idx.add('svc42.**', 9001);
    idx.add('*.ping', 9002);
    expect(idx.match('svc42.ping')).toEqual([42, 9000, 9001, 9002]);
    expect(idx.match('svc42')).toEqual([9000, 9001]);
    expect(idx.match('other.pong')).toEqual([9000]);
  });

  it('returns each value once even when several paths reach it, and forgets removed ones', () => {
    const idx = new PatternIndex<string>();
    idx.add('a.**.**', 'x');
    expect(idx.match('a.b.c')).toEqual(['x']);
    idx.add('a.*', 'y');
    expect(idx.match('a.b')).toEqual(['x', 'y']);
    expect(idx.remove('a.*', 'y')).toBe(true);
    expect(idx.remove('a.*', 'y')).toBe(false);
    expect(idx.match('a.b')).toEqual(['x']);
    expect(idx.size).toBe(1);
  });
});
