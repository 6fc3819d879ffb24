export { scheduleExpiry } from './expiry.js';
export { createTokenVerifier, extractToken, type JwtConfig, type VerifiedToken } from './jwt.js';
export { patternIsSubset, patternsIntersect } from './patterns.js';
export {
  ALLOW_ALL,
  assertAdmin,
  assertPublish,
  assertSubscribe,
  canPublish,
  canSubscribe,
  DENY_ALL,
  type PatternRules,
  type Permissions,
  permissionsFromClaims,
} from './permissions.js';
export { checkMessageRateLimit, type MessageRateLimitSettings } from './rateLimit.js';
export { parseJsonSafe } from './safeJson.js';
