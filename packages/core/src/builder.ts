import { randomBytes } from 'node:crypto';
import { ValidationError } from './errors.js';
import type { AgentEvent, EventMetadata, EventPriority } from './event.js';
import { normalizeEvent } from './validate.js';

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

/**
 * Fluent builder of spec 000. Every setter returns the builder; `build()`
 * validates and returns a frozen `AgentEvent` with a UUIDv7 id and the current
 * time unless they were set.
 *
 * ```ts
 * const e = createEvent('agent.task.complete')
 *   .agentId('agent-001').swarmId('swarm-123')
 *   .priority(EventPriority.HIGH)
 *   .data({ taskId: 'task-789', result: 'success' })
 *   .correlationId('req-456')
 *   .build();
 * ```
 */
export class EventBuilder<T = unknown, K extends string = string> {
  private readonly fields: {
    id?: string;
    type: K;
    agentId?: string;
    swarmId?: string;
    timestamp?: number;
    priority?: EventPriority;
    data: unknown;
  };
  private meta: EventMetadata | undefined;
  private traceId_: string | undefined;
  private spanId_: string | undefined;

  constructor(type: K) {
    this.fields = { type, data: null };
  }

  id(id: string): this {
    this.fields.id = id;
    return this;
  }
  agentId(agentId: string): this {
    this.fields.agentId = agentId;
    return this;
  }
  swarmId(swarmId: string): this {
    this.fields.swarmId = swarmId;
    return this;
  }
  timestamp(ms: number): this {
    this.fields.timestamp = ms;
    return this;
  }
  priority(priority: EventPriority): this {
    this.fields.priority = priority;
    return this;
  }
  data<D>(data: D): EventBuilder<D, K> {
    this.fields.data = data;
    return this as unknown as EventBuilder<D, K>;
  }
  /** Merges keys into `metadata`. */
  metadata(metadata: EventMetadata): this {
    this.meta = { ...this.meta, ...metadata };
    return this;
  }
  source(source: string): this {
    return this.metadata({ source });
  }
  version(version: string): this {
    return this.metadata({ version });
  }
  correlationId(id: string): this {
    return this.metadata({ correlationId: id });
  }
  causationId(id: string): this {
    return this.metadata({ causationId: id });
  }
  /** Sets `causationId` to the cause's id and carries its `correlationId` over. */
  causedBy(cause: Pick<AgentEvent, 'id' | 'metadata'>): this {
    const correlationId = cause.metadata?.correlationId ?? cause.id;
    return this.metadata({ causationId: cause.id, correlationId });
  }
  timeout(ms: number): this {
    return this.metadata({ timeout: ms });
  }
  tags(...tags: string[]): this {
    return this.metadata({ tags: [...(this.meta?.tags ?? []), ...tags] });
  }
  /** 32 lowercase hex characters (W3C trace id). Stored as `metadata.traceparent`. */
  traceId(traceId: string): this {
    this.traceId_ = traceId;
    return this;
  }
  /** 16 lowercase hex characters (W3C parent span id). Stored as `metadata.traceparent`. */
  spanId(spanId: string): this {
    this.spanId_ = spanId;
    return this;
  }
  traceparent(traceparent: string, tracestate?: string): this {
    return this.metadata(tracestate === undefined ? { traceparent } : { traceparent, tracestate });
  }

  /** Validates and returns the frozen event. Throws `ValidationError` naming the bad field. */
  build(): AgentEvent<T, K> {
    let meta = this.meta;
    if (this.traceId_ !== undefined || this.spanId_ !== undefined) {
      const traceId = this.traceId_ ?? randomBytes(16).toString('hex');
      const spanId = this.spanId_ ?? randomBytes(8).toString('hex');
      if (!HEX32.test(traceId)) throw new ValidationError('traceId', 'must be 32 lowercase hex characters');
      if (!HEX16.test(spanId)) throw new ValidationError('spanId', 'must be 16 lowercase hex characters');
      meta = { ...meta, traceparent: `00-${traceId}-${spanId}-01` };
    }
    const input: Record<string, unknown> = { ...this.fields };
    if (meta !== undefined) input.metadata = meta;
    const event = normalizeEvent(input);
    const out = event === (input as unknown) ? { ...event } : event;
    if (out.metadata) Object.freeze(out.metadata);
    return Object.freeze(out) as AgentEvent<T, K>;
  }
}

/** Starts a builder for an event of `type`. */
export function createEvent<K extends string>(type: K): EventBuilder<unknown, K> {
  return new EventBuilder<unknown, K>(type);
}
