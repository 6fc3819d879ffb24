import { ValidationError } from './errors.js';
import type { AgentEvent, EventInput } from './event.js';
import { EventPriority } from './event.js';
import { uuidv7 } from './id.js';

const TYPE_RE = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
/** Upper bounds that keep one bad event from hurting everyone else. */
export const LIMITS = {
  typeLength: 255,
  idLength: 128,
  agentIdLength: 256,
  tags: 64,
} as const;

export function isValidEventType(type: unknown): type is string {
  return (
    typeof type === 'string' && type.length > 0 && type.length <= LIMITS.typeLength && TYPE_RE.test(type)
  );
}

/** The envelope's top-level keys (SEMANTICS.md); any other is a `VALIDATION` error naming it. */
export const EVENT_KEYS: ReadonlySet<string> = new Set([
  'id',
  'type',
  'agentId',
  'swarmId',
  'timestamp',
  'priority',
  'data',
  'metadata',
]);

function fail(prefix: string, field: string, message: string): never {
  throw new ValidationError(prefix + field, message);
}

/**
 * Checks an event (or event input) and returns the complete event: `id`,
 * `timestamp` and `priority` are filled in when absent, `metadata.source` is
 * set to `source` when given and absent. Throws `ValidationError` naming the
 * first bad field (`events[3].type` inside a batch). A top-level key that is not
 * part of the envelope is refused the same way (`VALIDATION` naming it), so an
 * extra key neither survives nor vanishes depending on whether `id` was given.
 *
 * Returns the same object when nothing needed filling in, so validation costs
 * no allocation on the hot path.
 */
export function normalizeEvent(input: unknown, source?: string, prefix = ''): AgentEvent {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    fail(prefix, 'event', 'must be an object');
  const e = input as Record<string, unknown>;
  const type = e.type;
  if (!isValidEventType(type))
    fail(
      prefix,
      'type',
      typeof type === 'string'
        ? `${JSON.stringify(type.slice(0, 80))} is not dot-separated segments of [a-z0-9_-] (max ${LIMITS.typeLength} chars)`
        : 'is required and must be a string',
    );
  const agentId = e.agentId;
  if (typeof agentId !== 'string' || agentId.length === 0 || agentId.length > LIMITS.agentIdLength)
    fail(prefix, 'agentId', `is required: a non-empty string of at most ${LIMITS.agentIdLength} characters`);
  const id = e.id;
  if (id !== undefined && (typeof id !== 'string' || id.length === 0 || id.length > LIMITS.idLength))
    fail(prefix, 'id', `must be a non-empty string of at most ${LIMITS.idLength} characters`);
  const ts = e.timestamp;
  if (ts !== undefined && (typeof ts !== 'number' || !Number.isFinite(ts) || ts < 0))
    fail(prefix, 'timestamp', 'must be a non-negative finite number (Unix ms)');
  const pr = e.priority;
  if (pr !== undefined && pr !== 0 && pr !== 1 && pr !== 2 && pr !== 3 && pr !== 4)
    fail(prefix, 'priority', 'must be an integer 0 (CRITICAL) to 4 (BULK)');
  const swarmId = e.swarmId;
  if (swarmId !== undefined && typeof swarmId !== 'string') fail(prefix, 'swarmId', 'must be a string');
  if (!('data' in e) || e.data === undefined) fail(prefix, 'data', 'is required (use null for no payload)');
  const md = e.metadata;
  if (md !== undefined) validateMetadata(md, prefix);
  // one rule whether or not the bus fills `id`: a key the envelope does not have is refused, never kept or dropped
  for (const k in e)
    if (!EVENT_KEYS.has(k)) fail(prefix, k, `is not an event field (${[...EVENT_KEYS].join(', ')})`);

  const needsFill =
    id === undefined ||
    ts === undefined ||
    pr === undefined ||
    (source !== undefined && (md === undefined || (md as { source?: unknown }).source === undefined));
  if (!needsFill) return e as unknown as AgentEvent;
  const now = Date.now();
  const out: Record<string, unknown> = {
    id: id ?? uuidv7(now),
    type,
    agentId,
    timestamp: ts ?? now,
    priority: pr ?? EventPriority.NORMAL,
    data: e.data,
  };
  if (swarmId !== undefined) out.swarmId = swarmId;
  if (source !== undefined && (md === undefined || (md as { source?: unknown }).source === undefined))
    out.metadata = { ...(md as object | undefined), source };
  else if (md !== undefined) out.metadata = md;
  return out as unknown as AgentEvent;
}

function validateMetadata(md: unknown, prefix: string): void {
  if (typeof md !== 'object' || md === null || Array.isArray(md))
    fail(prefix, 'metadata', 'must be an object');
  const m = md as Record<string, unknown>;
  for (const k of [
    'source',
    'version',
    'correlationId',
    'causationId',
    'traceparent',
    'tracestate',
  ] as const) {
    if (m[k] !== undefined && typeof m[k] !== 'string') fail(prefix, `metadata.${k}`, 'must be a string');
  }
  for (const k of ['retryCount', 'timeout'] as const) {
    const v = m[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0))
      fail(prefix, `metadata.${k}`, 'must be a non-negative number');
  }
  const tags = m.tags;
  if (tags !== undefined) {
    if (!Array.isArray(tags) || tags.length > LIMITS.tags || tags.some((t) => typeof t !== 'string'))
      fail(prefix, 'metadata.tags', `must be an array of at most ${LIMITS.tags} strings`);
  }
  if (m.traceparent !== undefined && !TRACEPARENT_RE.test(m.traceparent as string))
    fail(prefix, 'metadata.traceparent', 'must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)');
}

export const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * Validates a whole batch before anything is sent: either every event is
 * accepted or a `ValidationError` names the first bad one (`events[i].field`).
 */
export function normalizeBatch(inputs: unknown, source?: string): AgentEvent[] {
  if (!Array.isArray(inputs)) throw new ValidationError('events', 'must be an array');
  const out = new Array<AgentEvent>(inputs.length);
  for (let i = 0; i < inputs.length; i++) out[i] = normalizeEvent(inputs[i], source, `events[${i}].`);
  return out;
}

export type { EventInput };
