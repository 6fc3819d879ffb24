import { ConfigError, UnauthorizedError } from '@qe/core';
import {
  type CryptoKey,
  createRemoteJWKSet,
  importSPKI,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
  type KeyObject,
} from 'jose';

const HMAC = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export interface JwtConfig {
  /** Accepted algorithms, pinned. Either all HMAC or all asymmetric: never both (HS/RS confusion). */
  algorithms: string[];
  /** HMAC secret (HS*). */
  secret?: string | Uint8Array;
  /** Public key, PEM SPKI (RS*, PS*, ES*, EdDSA). */
  publicKey?: string;
  /** A JWKS endpoint (asymmetric algorithms). */
  jwksUrl?: string;
  issuer?: string | string[];
  audience?: string | string[];
  /** Seconds of clock skew tolerated on exp/nbf. Default 5. */
  clockToleranceSec?: number;
  /**
   * Tokens whose verification is remembered (least recently used first out),
   * so a client that sends the same token with every request pays for the
   * signature check once. `exp` and `nbf` are checked again on every use,
   * exactly as a full verification checks them. Not used with `jwksUrl`: a
   * key set can drop a key, and a token signed by it must then be refused.
   * Default 1024; 0 turns it off.
   */
  maxCachedTokens?: number;
}

/** The same object for every verification of the same token string while cached: treat it as read-only. */
export interface VerifiedToken {
  subject: string;
  claims: JWTPayload & Record<string, unknown>;
  /** Epoch ms when the token expires (`exp` is required). */
  expiresAt: number;
}

/** Checks a config once, so a misconfiguration fails at start, not per request. */
export function createTokenVerifier(config: JwtConfig): (token: string) => Promise<VerifiedToken> {
  if (!config || !Array.isArray(config.algorithms) || config.algorithms.length === 0)
    throw new ConfigError('auth.algorithms', 'pin at least one algorithm');
  for (const a of config.algorithms)
    if (!HMAC.includes(a) && !ASYMMETRIC.includes(a))
      throw new ConfigError(
        'auth.algorithms',
        `unsupported algorithm ${JSON.stringify(a)} (none is never accepted)`,
      );
  const hmac = config.algorithms.every((a) => HMAC.includes(a));
  const asym = config.algorithms.every((a) => ASYMMETRIC.includes(a));
  if (!hmac && !asym) throw new ConfigError('auth.algorithms', 'do not mix HMAC and asymmetric algorithms');
  if (hmac && !config.secret) throw new ConfigError('auth.secret', 'required for HS* algorithms');
  if (asym && !config.publicKey && !config.jwksUrl)
    throw new ConfigError(
      'auth.publicKey',
      'a public key or a JWKS URL is required for asymmetric algorithms',
    );
  if (hmac && typeof config.secret === 'string' && config.secret.length < 32)
    throw new ConfigError('auth.secret', 'must be at least 32 characters');
  let key: Promise<Uint8Array | CryptoKey | KeyObject> | JWTVerifyGetKey;
  if (hmac)
    key = Promise.resolve(
      typeof config.secret === 'string' ? new TextEncoder().encode(config.secret) : config.secret!,
    );
  else if (config.jwksUrl) key = createRemoteJWKSet(new URL(config.jwksUrl));
  else key = importSPKI(config.publicKey!, config.algorithms[0]!);
  const maxCached = config.jwksUrl ? 0 : (config.maxCachedTokens ?? 1024);
  if (!Number.isInteger(maxCached) || maxCached < 0)
    throw new ConfigError('auth.maxCachedTokens', 'must be a non-negative integer');
  const clockTolerance = config.clockToleranceSec ?? 5;
  const options = {
    algorithms: config.algorithms,
    clockTolerance,
    requiredClaims: ['exp'],
    ...(config.issuer === undefined ? {} : { issuer: config.issuer }),
    ...(config.audience === undefined ? {} : { audience: config.audience }),
  };
  const cache = new Map<string, VerifiedToken>();
  return async (token: string) => {
    if (typeof token !== 'string' || token.length === 0 || token.length > 8192)
      throw new UnauthorizedError('a bearer token is required');
    const hit = cache.get(token);
    if (hit) {
      if (stillValid(hit.claims, clockTolerance)) {
        cache.delete(token); // most recently used goes last
        cache.set(token, hit);
        return hit;
      }
      cache.delete(token); // past its time: the full check below gives the same refusal as ever
    }
    let verified: VerifiedToken;
    try {
      const result =
        typeof key === 'function'
          ? await jwtVerify(token, key, options)
          : await jwtVerify(token, await key, options);
      const claims = result.payload as JWTPayload & Record<string, unknown>;
      verified = { subject: String(claims.sub ?? 'anonymous'), claims, expiresAt: (claims.exp ?? 0) * 1000 };
    } catch (err) {
      throw new UnauthorizedError(`invalid token: ${reason(err)}`, { details: { reason: reason(err) } });
    }
    if (maxCached > 0) {
      if (cache.size >= maxCached) cache.delete(cache.keys().next().value!);
      cache.set(token, verified);
    }
    return verified;
  };
}

/** jose's time checks (`nbf`, `exp`, whole seconds, with the tolerance), for a token it accepted before. */
function stillValid(claims: JWTPayload, toleranceSec: number): boolean {
  const now = Math.floor(Date.now() / 1000);
  if (claims.nbf !== undefined && claims.nbf > now + toleranceSec) return false;
  return claims.exp !== undefined && claims.exp > now - toleranceSec;
}

function reason(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} ${err.reason}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'malformed';
  if (err instanceof joseErrors.JOSENotSupported) return 'not supported';
  return 'rejected';
}

/** Finds a bearer token: `Authorization: Bearer`, a `bearer.<token>` WebSocket subprotocol, or `?token=`. */
export function extractToken(
  headers: Record<string, string | string[] | undefined>,
  url = '',
): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string' && /^Bearer /i.test(auth)) return auth.slice(7).trim();
  const proto = headers['sec-websocket-protocol'];
  if (typeof proto === 'string')
    for (const p of proto.split(',').map((s) => s.trim())) if (p.startsWith('bearer.')) return p.slice(7);
  const q = url.indexOf('?');
  if (q >= 0) {
    const t = new URLSearchParams(url.slice(q + 1)).get('token');
    if (t) return t;
  }
  return undefined;
}
