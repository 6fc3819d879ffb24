import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  canPublish,
  canSubscribe,
  createTokenVerifier,
  extractToken,
  parseJsonSafe,
  patternIsSubset,
  patternsIntersect,
  permissionsFromClaims,
} from '../src/index.js';

const SECRET = 'a-test-secret-that-is-long-enough-123456';
const hs = (claims: Record<string, unknown>, exp: string | number = '5m') =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

describe('JWT verification', () => {
  const verify = createTokenVerifier({
    algorithms: ['HS256'],
    secret: SECRET,
    issuer: 'qe',
    audience: 'bus',
  });

  it('accepts a good token and returns subject, claims and expiry', async () => {
    const t = await hs({ sub: 'agent-7', iss: 'qe', aud: 'bus' });
    const v = await verify(t);
    expect(v.subject).toBe('agent-7');
    expect(v.expiresAt).toBeGreaterThan(Date.now());
  });

  it.each([
    [
      'expired',
      async () => hs({ sub: 'x', iss: 'qe', aud: 'bus' }, Math.floor(Date.now() / 1000) - 60),
      /expired/,
    ],
    ['wrong audience', async () => hs({ sub: 'x', iss: 'qe', aud: 'other' }), /aud/],
    ['wrong issuer', async () => hs({ sub: 'x', iss: 'evil', aud: 'bus' }), /iss/],
    [
      'no exp',
      async () =>
        new SignJWT({ sub: 'x', iss: 'qe', aud: 'bus' })
          .setProtectedHeader({ alg: 'HS256' })
          .sign(new TextEncoder().encode(SECRET)),
      /exp/,
    ],
    [
      'alg none',
      async () =>
        `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'x', iss: 'qe', aud: 'bus', exp: 9999999999 })}.`,
      /not allowed|malformed/,
    ],
    ['garbage', async () => 'not.a.jwt', /malformed/],
    [
      'bad signature',
      async () =>
        new SignJWT({ sub: 'x', iss: 'qe', aud: 'bus' })
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime('5m')
          .sign(new TextEncoder().encode('another-secret-that-is-long-enough-999')),
      /bad signature/,
    ],
  ])('refuses %s with UNAUTHORIZED', async (_name, make, why) => {
    const err = await verify(await make()).catch((e) => e);
    expect(err).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(err.message).toMatch(why);
  });

  it('refuses HS/RS confusion: an HS256 token signed with the RSA public key is rejected by an RS256 verifier', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const pem = await exportSPKI(publicKey);
    const verifyRs = createTokenVerifier({ algorithms: ['RS256'], publicKey: pem });
    const good = await new SignJWT({ sub: 'ok' })
      .setProtectedHeader({ alg: 'RS256' })
      .setExpirationTime('5m')
      .sign(privateKey);
    expect((await verifyRs(good)).subject).toBe('ok');
    const forged = await new SignJWT({ sub: 'mallory' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(pem));
    await expect(verifyRs(forged)).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      message: expect.stringMatching(/not allowed/),
    });
  });

  it('verifies against a JWKS URL, and refuses a token from a key the set does not hold', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const server = createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const verifyJwks = createTokenVerifier({
        algorithms: ['ES256'],
        jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`,
      });
      const good = await new SignJWT({ sub: 'jwks-user' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setExpirationTime('5m')
        .sign(privateKey);
      expect((await verifyJwks(good)).subject).toBe('jwks-user');
      // never remembered: the set may drop the key, and its tokens must then be refused
      expect(await verifyJwks(good)).not.toBe(await verifyJwks(good));
      const other = await generateKeyPair('ES256');
      const stranger = await new SignJWT({ sub: 'x' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setExpirationTime('5m')
        .sign(other.privateKey);
      await expect(verifyJwks(stranger)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    } finally {
      server.close();
    }
  });

  it('refuses dangerous configurations at start', () => {
    expect(() => createTokenVerifier({ algorithms: ['HS256', 'RS256'], secret: SECRET })).toThrow(
      /do not mix/,
    );
    expect(() => createTokenVerifier({ algorithms: ['none'] })).toThrow(/unsupported/);
    expect(() => createTokenVerifier({ algorithms: [] })).toThrow(/pin/);
    expect(() => createTokenVerifier({ algorithms: ['HS256'], secret: 'short' })).toThrow(/32/);
    expect(() => createTokenVerifier({ algorithms: ['RS256'] })).toThrow(/public key/);
    expect(() => createTokenVerifier({ algorithms: ['HS256'], secret: SECRET, maxCachedTokens: -1 })).toThrow(
      /non-negative/,
    );
  });

  it('finds the token in a header, a subprotocol or the query', () => {
    expect(extractToken({ authorization: 'Bearer abc' })).toBe('abc');
    expect(extractToken({ 'sec-websocket-protocol': 'qe.v1, bearer.xyz' })).toBe('xyz');
    expect(extractToken({}, '/events?token=q1')).toBe('q1');
    expect(extractToken({})).toBeUndefined();
  });
});

describe('verified tokens remembered', () => {
  afterEach(() => vi.useRealTimers());
  const signAt = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));

  it('checks a token seen before without its signature again: the same result comes back', async () => {
    const verify = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET });
    const t = await hs({ sub: 'again' });
    const first = await verify(t);
    expect(await verify(t)).toBe(first);
    const uncached = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET, maxCachedTokens: 0 });
    expect(await uncached(t)).not.toBe(await uncached(t));
  });

  it('refuses a remembered token at the very second a full verification would (exp, with tolerance)', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const exp = Math.floor(Date.now() / 1000) + 10;
    const t = await signAt({ sub: 'x', exp });
    const cached = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET });
    const uncached = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET, maxCachedTokens: 0 });
    const first = await cached(t);
    vi.setSystemTime((exp + 5) * 1000 - 1); // the last millisecond inside the 5 s tolerance
    expect(await cached(t)).toBe(first);
    await expect(uncached(t)).resolves.toMatchObject({ subject: 'x' });
    vi.setSystemTime((exp + 5) * 1000);
    const refused = await cached(t).catch((e) => e);
    expect(refused).toMatchObject({ code: 'UNAUTHORIZED', details: { reason: 'expired' } });
    expect((await uncached(t).catch((e) => e)).message).toBe(refused.message);
  });

  it('refuses a remembered token whose nbf is ahead again after the clock stepped back', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const now = Math.floor(Date.now() / 1000);
    const t = await signAt({ sub: 'x', nbf: now, exp: now + 600 });
    const verify = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET });
    await verify(t);
    vi.setSystemTime((now - 6) * 1000);
    await expect(verify(t)).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      message: expect.stringMatching(/nbf/),
    });
  });

  it('keeps at most maxCachedTokens, dropping the least recently used', async () => {
    const verify = createTokenVerifier({ algorithms: ['HS256'], secret: SECRET, maxCachedTokens: 2 });
    const [a, b, c] = await Promise.all([hs({ sub: 'a' }), hs({ sub: 'b' }), hs({ sub: 'c' })]);
    const va = await verify(a);
    const vb = await verify(b);
    expect(await verify(a)).toBe(va); // a is now the most recent
    await verify(c); // evicts b
    expect(await verify(a)).toBe(va);
    expect(await verify(b)).not.toBe(vb);
  });
});

describe('permissions (NATS style)', () => {
  it('subset and intersection of patterns', () => {
    const subset: [string, string, boolean][] = [
      ['task.create', 'task.*', true],
      ['task.*', 'task.**', true],
      ['task.**', 'task.*', false],
      ['**', 'task.**', false],
      ['*', '**', true],
      ['task.*.done', 'task.**', true],
      ['agent.a.b', 'agent.*.b', true],
      ['agent.*.b', 'agent.a.b', false],
      ['a.**.z', 'a.**', true],
    ];
    for (const [inner, outer, want] of subset)
      expect([inner, outer, patternIsSubset(inner, outer)]).toEqual([inner, outer, want]);
    const meet: [string, string, boolean][] = [
      ['task.*', 'task.create', true],
      ['task.*', 'agent.*', false],
      ['**', 'secret.x', true],
      ['a.*.c', 'a.b.*', true],
      ['a.**', 'b.**', false],
      ['a.**.z', 'a.b.c.z', true],
    ];
    for (const [x, y, want] of meet) expect([x, y, patternsIntersect(x, y)]).toEqual([x, y, want]);
  });

  it('deny wins, and a subscription wider than allowed is refused, not narrowed', () => {
    const p = permissionsFromClaims({
      qe: {
        pub: { allow: ['task.*'], deny: ['task.delete'] },
        sub: { allow: ['task.**'], deny: ['task.secret.**'] },
      },
    });
    expect(canPublish(p, 'task.create')).toBe(true);
    expect(canPublish(p, 'task.delete')).toBe(false);
    expect(canPublish(p, 'agent.spawn')).toBe(false);
    expect(canSubscribe(p, 'task.*')).toBe(false); // task.* includes task.secret, which task.secret.** denies
    expect(canSubscribe(p, 'task.create')).toBe(true);
    expect(canSubscribe(p, '**')).toBe(false);
    expect(canSubscribe(p, 'task.**')).toBe(false); // would include task.secret.*
    expect(canSubscribe(p, 'task.secret.x')).toBe(false);
    expect(permissionsFromClaims({})).toMatchObject({ publish: { allow: [] } });
    expect(() => permissionsFromClaims({ qe: { pub: { allow: ['bad..pattern'] } } })).toThrow();
  });
});

describe('safe JSON', () => {
  it('refuses prototype-pollution keys and deep nesting, and reports malformed JSON', () => {
    expect(parseJsonSafe('{"a":[1,{"b":2}]}')).toEqual({ a: [1, { b: 2 }] });
    for (const bad of ['{"__proto__":{"x":1}}', '{"a":{"constructor":{"prototype":{}}}}', '{"prototype":1}'])
      expect(() => parseJsonSafe(bad)).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
    // a key spelt with escapes is the same key once parsed
    for (const bad of [
      '{"\\u005f_proto__":{"x":1}}',
      '{"a":{"constr\\u0075ctor":1}}',
      '{"protot\\u0079pe":1}',
    ])
      expect(() => parseJsonSafe(bad), bad).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
    // the words as values, and escapes in values, are fine
    expect(parseJsonSafe('{"a":"constructor","b":"\\u00e9t\\u00e9"}')).toEqual({
      a: 'constructor',
      b: 'été',
    });
    expect(() => parseJsonSafe('{not json')).toThrow(/malformed JSON/);
    // nesting is bounded whether or not the text holds brackets inside strings
    expect(() => parseJsonSafe(`{"s":"${'['.repeat(100)}","v":${'['.repeat(70)}${']'.repeat(70)}}`)).toThrow(
      /nested deeper/,
    );
    expect(parseJsonSafe(`{"s":"${'['.repeat(100)}","v":[[1]]}`)).toEqual({ s: '['.repeat(100), v: [[1]] });
    expect(parseJsonSafe('['.repeat(65) + ']'.repeat(65))).toBeDefined();
    expect(() => parseJsonSafe('['.repeat(66) + ']'.repeat(66))).toThrow(/nested deeper/);
    expect(() => parseJsonSafe('['.repeat(100) + ']'.repeat(100))).toThrow(/nested deeper/);
    // objects and arrays count together
    const mixed = (n: number) => '{"a":'.repeat(n) + '['.repeat(n) + ']'.repeat(n) + '}'.repeat(n);
    expect(() => parseJsonSafe(mixed(33))).toThrow(/nested deeper/);
    expect(parseJsonSafe(mixed(32))).toBeDefined();
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });
});
