import { ValidationError } from '@qe/core';

/** `MAJOR[.MINOR[.PATCH]]`, numbers only; missing parts are 0. */
export type Version = readonly [number, number, number];

const VERSION_RE = /^(0|[1-9]\d{0,8})(?:\.(0|[1-9]\d{0,8}))?(?:\.(0|[1-9]\d{0,8}))?$/;

export function parseVersion(v: unknown, field = 'version'): Version {
  if (typeof v !== 'string') throw new ValidationError(field, 'must be a string like "1.2.0"');
  const m = VERSION_RE.exec(v);
  if (!m)
    throw new ValidationError(field, `${JSON.stringify(v)} is not a version like "1", "1.2" or "1.2.0"`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a);
  const y = parseVersion(b);
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
}

type Comparator = { op: '>=' | '>' | '<=' | '<' | '='; v: Version };

/**
 * A set of versions a consumer accepts. Space-separated comparators, all of
 * which must hold: `>=1.0.0 <2`, `^1.2` (same major, at least 1.2.0), `~1.2`
 * (same major.minor), `1.x`, `1.2.x`, `1.2.0` (exactly), `*` (any).
 */
export class VersionRange {
  private readonly comparators: Comparator[];
  constructor(readonly source: string) {
    if (typeof source !== 'string' || source.trim() === '')
      throw new ValidationError('accept', 'a version range must be a non-empty string');
    this.comparators = [];
    for (const part of source.trim().split(/\s+/)) this.comparators.push(...parsePart(part));
  }
  test(version: string): boolean {
    let v: Version;
    try {
      v = parseVersion(version);
    } catch {
      return false;
    }
    for (const c of this.comparators) {
      const d = v[0] - c.v[0] || v[1] - c.v[1] || v[2] - c.v[2];
      if (
        c.op === '>='
          ? d < 0
          : c.op === '>'
            ? d <= 0
            : c.op === '<='
              ? d > 0
              : c.op === '<'
                ? d >= 0
                : d !== 0
      )
        return false;
    }
    return true;
  }
}

function parsePart(part: string): Comparator[] {
  if (part === '*' || part === 'x') return [];
  const field = 'accept';
  const op = /^(>=|<=|>|<|=|\^|~)?(.*)$/.exec(part)!;
  const body = op[2]!;
  const xs = body.split('.');
  const wildcardAt = xs.findIndex((s) => s === 'x' || s === '*');
  if (wildcardAt >= 0) {
    if (op[1] || xs.slice(wildcardAt).some((s) => s !== 'x' && s !== '*'))
      throw new ValidationError(field, `bad range part ${JSON.stringify(part)}`);
    if (wildcardAt === 0) return [];
    const lo = parseVersion(xs.slice(0, wildcardAt).join('.'), field);
    const hi: Version = wildcardAt === 1 ? [lo[0] + 1, 0, 0] : [lo[0], lo[1] + 1, 0];
    return [
      { op: '>=', v: lo },
      { op: '<', v: hi },
    ];
  }
  const v = parseVersion(body, field);
  switch (op[1]) {
    case '^':
      return [
        { op: '>=', v },
        { op: '<', v: [v[0] + 1, 0, 0] },
      ];
    case '~':
      return [
        { op: '>=', v },
        { op: '<', v: [v[0], v[1] + 1, 0] },
      ];
    case undefined:
    case '=':
      return [{ op: '=', v }];
    default:
      return [{ op: op[1] as Comparator['op'], v }];
  }
}
