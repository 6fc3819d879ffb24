import { type AgentEvent, type EventInput, type EventMetadata, ValidationError } from '@qe/core';
import { parseJsonSafe } from '@qe/gateway-auth';

/** `qe.v1.EventMetadata` as proto-loader decodes it (camelCase, absent fields undefined). */
export interface WireMetadata {
  source?: string;
  version?: string;
  correlationId?: string;
  causationId?: string;
  retryCount?: number;
  timeout?: number;
  tags?: string[];
  traceparent?: string;
  tracestate?: string;
  extraJson?: string;
}

/** `qe.v1.Event` as proto-loader decodes it. */
export interface WireEvent {
  id?: string;
  type?: string;
  agentId?: string;
  swarmId?: string;
  timestamp?: number;
  priority?: number;
  dataJson?: string;
  metadata?: WireMetadata;
}

/** `qe.v1.Error`. */
export interface WireError {
  code: string;
  message: string;
  detailsJson?: string;
}

const TYPED_METADATA = [
  'source',
  'version',
  'correlationId',
  'causationId',
  'retryCount',
  'timeout',
  'tags',
  'traceparent',
  'tracestate',
] as const;

/**
 * A decoded `qe.v1.Event` to the bus's event input. Only shape is checked here
 * (the message is an object, `data_json` is JSON, `extra_json` an object); the
 * bus validates the event itself, naming the field. `field` prefixes field names
 * (`events[2].`) in errors.
 */
export function fromWireEvent(w: unknown, field = 'event'): EventInput {
  if (w === null || w === undefined || typeof w !== 'object') throw new ValidationError(field, 'is required');
  const e = w as WireEvent;
  if (typeof e.dataJson !== 'string' || e.dataJson === '')
    throw new ValidationError(`${field}.dataJson`, 'is required: the payload as JSON text (null for none)');
  const out: Record<string, unknown> = {
    type: e.type ?? '',
    agentId: e.agentId ?? '',
    data: parseField(e.dataJson, `${field}.dataJson`),
  };
  if (e.id !== undefined) out.id = e.id;
  if (e.swarmId !== undefined) out.swarmId = e.swarmId;
  if (e.timestamp !== undefined) out.timestamp = e.timestamp;
  if (e.priority !== undefined) out.priority = e.priority;
  if (e.metadata !== undefined && e.metadata !== null) {
    const m = e.metadata;
    const md: Record<string, unknown> = {};
    if (m.extraJson !== undefined) {
      const extra = parseField(m.extraJson, `${field}.metadata.extraJson`);
      if (extra === null || typeof extra !== 'object' || Array.isArray(extra))
        throw new ValidationError(`${field}.metadata.extraJson`, 'must be a JSON object');
      Object.assign(md, extra);
    }
    for (const k of TYPED_METADATA) {
      const v = m[k];
      if (v === undefined || (k === 'tags' && Array.isArray(v) && v.length === 0)) continue;
      md[k] = v;
    }
    out.metadata = md;
  }
  return out as unknown as EventInput;
}

function parseField(text: string, field: string): unknown {
  try {
    return parseJsonSafe(text);
  } catch (err) {
    throw new ValidationError(field, (err as Error).message.replace(/^body: /, ''));
  }
}

/** A bus event to a `qe.v1.Event`. */
export function toWireEvent(e: AgentEvent): WireEvent {
  const w: WireEvent = {
    id: e.id,
    type: e.type,
    agentId: e.agentId,
    timestamp: e.timestamp,
    priority: e.priority,
    dataJson: JSON.stringify(e.data), // undefined when there is no data: the gateway refuses that, naming the field
  };
  if (e.swarmId !== undefined) w.swarmId = e.swarmId;
  if (e.metadata) w.metadata = toWireMetadata(e.metadata);
  return w;
}

function toWireMetadata(m: EventMetadata): WireMetadata {
  const out: WireMetadata = {};
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if ((TYPED_METADATA as readonly string[]).includes(k)) (out as Record<string, unknown>)[k] = v;
    else extra[k] = v;
  }
  if (Object.keys(extra).length > 0) out.extraJson = JSON.stringify(extra);
  return out;
}

/** A decoded `qe.v1.Event` (from the gateway) to the event it carries; the client's side of `toWireEvent`. */
export function eventFromWire(w: WireEvent): AgentEvent {
  const e = fromWireEvent(w) as AgentEvent;
  return e;
}
