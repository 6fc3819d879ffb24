import { fullFormats } from 'ajv-formats/dist/formats.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isDateTime } from './formats.js';
import { ContractRegistry } from './registry.js';

// the reference: ajv-formats' own full-mode date-time check
const reference = (fullFormats['date-time'] as { validate: (s: string) => boolean }).validate;

const pad = (n: number, w = 2) => String(n).padStart(w, '0');
/** Strings shaped like RFC 3339 date-times, with every field allowed out of range. */
const dateTimeLike = fc
  .record({
    y: fc.integer({ min: 0, max: 9999 }),
    mo: fc.integer({ min: 0, max: 19 }),
    d: fc.integer({ min: 0, max: 39 }),
    sep: fc.constantFrom('T', 't', ' ', '\t', '\n', '\u00a0', '\u2003', '\ufeff', '_', 'x', ''),
    h: fc.integer({ min: 0, max: 29 }),
    mi: fc.integer({ min: 0, max: 69 }),
    s: fc.integer({ min: 0, max: 69 }),
    frac: fc.constantFrom('', '.', '.5', '.123456', '.99999999999999999999', '.0'),
    tz: fc.oneof(
      fc.constantFrom(
        'Z',
        'z',
        '',
        '+',
        '-',
        '+00:00',
        '-00:00',
        '+23:59',
        '+24:00',
        '-05:60',
        '+05',
        '+0530',
        '+05:',
        '+05:3',
      ),
      fc
        .tuple(
          fc.constantFrom('+', '-'),
          fc.integer({ min: 0, max: 30 }),
          fc.integer({ min: 0, max: 70 }),
          fc.constantFrom(':', ''),
        )
        .map(([sign, h, m, c]) => `${sign}${pad(h)}${c}${pad(m)}`),
    ),
  })
  .map(
    (r) =>
      `${pad(r.y, 4)}-${pad(r.mo)}-${pad(r.d)}${r.sep}${pad(r.h)}:${pad(r.mi)}:${pad(r.s)}${r.frac}${r.tz}`,
  );

/** One character changed, inserted or removed. */
const mutated = fc
  .tuple(
    dateTimeLike,
    fc.nat(),
    fc.constantFrom('delete', 'insert', 'replace'),
    fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }),
  )
  .map(([s, at, op, c]) => {
    const i = at % (s.length + 1);
    if (op === 'delete') return s.slice(0, i) + s.slice(i + 1);
    if (op === 'insert') return s.slice(0, i) + c + s.slice(i);
    return s.slice(0, i) + c + s.slice(i + 1);
  });

describe('isDateTime', () => {
  it('answers as ajv-formats full mode on date-time shaped strings, mutated ones and arbitrary strings', () => {
    for (const arb of [dateTimeLike, mutated, fc.string({ unit: 'binary', maxLength: 40 })])
      fc.assert(
        fc.property(arb, (s) => isDateTime(s) === reference(s)),
        { numRuns: 20_000 },
      );
  });

  it('decides the edge cases as RFC 3339 and ajv-formats do', () => {
    const cases: [string, boolean][] = [
      ['2024-02-29T12:00:00Z', true],
      ['2023-02-29T12:00:00Z', false],
      ['1900-02-29T12:00:00Z', false],
      ['2000-02-29T12:00:00Z', true],
      ['2024-04-31T00:00:00Z', false],
      ['2024-12-31T23:59:60Z', true],
      ['2024-12-31T23:59:60.5Z', true],
      ['2024-12-31T22:59:60Z', false],
      ['2024-12-31T15:59:60-08:00', true],
      ['2024-12-31T23:59:59.99999999999999999Z', true],
      ['2024-12-31T22:59:59.99999999999999999Z', false],
      ['2024-12-31T23:59:59.999+00:00', true],
      ['2024-12-31t23:59:59z', true],
      ['2024-12-31 23:59:59+0530', true],
      ['2024-12-31T23:59:59+05', true],
      ['2024-12-31T23:59:59', false],
      ['2024-12-31T24:00:00Z', false],
      ['2024-12-31T23:59:59+24:00', false],
      ['2024-12-31T23:59:59.Z', false],
      ['２０２４-12-31T23:59:59Z', false],
      ['', false],
    ];
    for (const [s, want] of cases) {
      expect(reference(s), s).toBe(want);
      expect(isDateTime(s), s).toBe(want);
    }
  });

  it("is what a contract's `format: date-time` uses in full mode", async () => {
    const registry = new ContractRegistry();
    await registry.register({
      type: 'clock.tick',
      version: '1.0.0',
      owner: 'test',
      schema: {
        type: 'object',
        required: ['at'],
        properties: { at: { type: 'string', format: 'date-time' } },
      },
    });
    const check = (at: string) =>
      registry.check({
        id: 'x',
        type: 'clock.tick',
        agentId: 'a',
        timestamp: 0,
        priority: 2,
        data: { at },
      } as never);
    expect(check('2024-02-29T12:00:00Z').issues).toEqual([]);
    const bad = check('2023-02-29T12:00:00Z').issues;
    expect(bad).toHaveLength(1);
    expect(bad[0]!.path).toBe('/data/at');
  });
});
