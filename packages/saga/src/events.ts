import { type AgentEvent, createEvent, EventPriority, EventTypes, type QEEventBus } from '@qe/core';
import { InvalidNameError } from './errors.js';

/**
 * Spec 002's saga events, as `AgentEvent` payloads. Field names are spec 002's
 * in camelCase; `toSpec002` / `fromSpec002` convert to and from the
 * snake_case wire form of the spec:
 *
 * | spec 002 | here |
 * | --- | --- |
 * | `transaction_id` | `transactionId` |
 * | `correlation_id` | `correlationId` (also `metadata.correlationId`) |
 * | `worker_name` | `workerName` |
 * | `step_name` | `stepName` |
 * | `retry_count` | `retryCount` |
 * | `execution_time_ms` | `executionTimeMs` |
 * | `error_message` / `error_type` / `stack_trace` | `errorMessage` / `errorType` / `stackTrace` |
 * | `compensation_worker` / `failed_step` | `compensationWorker` / `failedStep` |
 * | `current_step` | `currentStep` |
 * | `event_id` / `event_type` / `timestamp` | the envelope's `id` / `type` / `timestamp` |
 *
 * Channels: spec 002's `multiagents:worker:{name}` is the event type
 * `saga.command.<name>` (and `saga.compensation.<name>` for compensations);
 * results and errors come back on `saga.result.<name>` / `saga.error.<name>`;
 * `multiagents:workflow:{id}` is `saga.status.<sagaName>`; one transaction's
 * events are those with its `correlationId`.
 */
export const SagaEventTypes = {
  COMMAND: EventTypes.SAGA_COMMAND,
  RESULT: EventTypes.SAGA_RESULT,
  ERROR: EventTypes.SAGA_ERROR,
  COMPENSATION: EventTypes.SAGA_COMPENSATION,
  STATUS: EventTypes.SAGA_STATUS,
} as const;

export type SagaStatus = 'running' | 'compensating' | 'completed' | 'compensated' | 'failed';
export const SAGA_STATUSES: readonly SagaStatus[] = [
  'running',
  'compensating',
  'completed',
  'compensated',
  'failed',
];
export const TERMINAL_STATUSES: readonly SagaStatus[] = ['completed', 'compensated', 'failed'];

export type SagaContext = Record<string, unknown>;

interface SagaEventBase {
  transactionId: string;
  correlationId: string;
  sagaName: string;
}

/** Sent to a worker: run `workerName` on `context`. */
export interface CommandEvent extends SagaEventBase {
  workerName: string;
  context: SagaContext;
  stepName: string;
  /** How many times this step was sent before (0 on the first send). */
  retryCount: number;
  /** Identifies the command for idempotency: a redelivery or re-send carries the same id. */
  commandId: string;
}

/** Sent to a compensating worker: undo `stepName` because `failedStep` failed for good. */
export interface CompensationEvent extends SagaEventBase {
  compensationWorker: string;
  context: SagaContext;
  failedStep: string;
  /** The step being compensated. */
  stepName: string;
  /** What that step returned. */
  stepResult: unknown;
  retryCount: number;
  commandId: string;
}

export type CommandKind = 'command' | 'compensation';

/** A worker's result. */
export interface ResultEvent extends SagaEventBase {
  workerName: string;
  result: SagaContext;
  stepName: string;
  executionTimeMs: number;
  commandId: string;
  kind: CommandKind;
  /** True when this is the recorded result of an earlier run, re-published for a repeated command. */
  replayed: boolean;
}

/** A worker's failure (or a workflow error: `workerName` absent). */
export interface ErrorEvent extends SagaEventBase {
  errorMessage: string;
  errorType: string;
  /** The `EventBusError` code when the worker threw one (`PERMANENT` stops retries). */
  errorCode?: string;
  workerName?: string;
  stepName?: string;
  stackTrace?: string;
  executionTimeMs?: number;
  commandId?: string;
  kind?: CommandKind;
  replayed?: boolean;
}

export interface StatusEvent extends SagaEventBase {
  status: SagaStatus;
  currentStep?: string;
  /** 0..1: running: the share of steps done; compensating and compensated: the share of compensations done; failed: the share of steps done. */
  progress: number;
}

/**
 * A bus with any event map: workers and orchestrators take a
 * `QEEventBus<SagaEvents>`, a bus of your own map, or an untyped one.
 */
// biome-ignore lint/suspicious/noExplicitAny: any event map is fine; the saga layer builds its own events
export type AnySagaBus = QEEventBus<any>;

/** Type-checked `publish`/`subscribe` for saga events: `new QEEventBus<SagaEvents>(...)`. */
export interface SagaEvents {
  [type: `saga.command.${string}`]: CommandEvent;
  [type: `saga.compensation.${string}`]: CompensationEvent;
  [type: `saga.result.${string}`]: ResultEvent;
  [type: `saga.error.${string}`]: ErrorEvent;
  [type: `saga.status.${string}`]: StatusEvent;
}

const NAME = /^[a-z0-9_-]{1,64}$/;

/** Throws `InvalidNameError` unless `name` can be an event-type segment. */
export function checkName(field: string, name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) throw new InvalidNameError(field, name);
  return name;
}

export const commandType = (worker: string) => `${SagaEventTypes.COMMAND}.${checkName('workerName', worker)}`;
export const compensationType = (worker: string) =>
  `${SagaEventTypes.COMPENSATION}.${checkName('compensationWorker', worker)}`;
export const resultType = (worker: string) => `${SagaEventTypes.RESULT}.${checkName('workerName', worker)}`;
export const errorType = (worker: string) => `${SagaEventTypes.ERROR}.${checkName('workerName', worker)}`;
export const statusType = (saga: string) => `${SagaEventTypes.STATUS}.${checkName('sagaName', saga)}`;

/** What links an event to its transaction and to the event that caused it. */
export interface Causation {
  /** The publishing node (the envelope's `agentId`). */
  agentId: string;
  /** The event that caused this one (its id becomes `metadata.causationId`). */
  causationId?: string;
  priority?: EventPriority;
}

function build<T extends SagaEventBase>(type: string, data: T, c: Causation): AgentEvent<T> {
  const b = createEvent(type)
    .agentId(c.agentId)
    .priority(c.priority ?? EventPriority.NORMAL)
    .data(data)
    .correlationId(data.correlationId)
    .metadata({ tags: ['saga', data.sagaName] });
  if (c.causationId !== undefined) b.causationId(c.causationId);
  return b.build() as AgentEvent<T>;
}

/** Builders: each validates names and returns a frozen event from core's `createEvent`. */
export const sagaEvents = {
  command: (d: CommandEvent, c: Causation) => build(commandType(d.workerName), d, c),
  compensation: (d: CompensationEvent, c: Causation) => build(compensationType(d.compensationWorker), d, c),
  result: (d: ResultEvent, c: Causation) => build(resultType(d.workerName), d, c),
  error: (d: ErrorEvent, c: Causation) => build(errorType(d.workerName ?? 'workflow'), d, c),
  status: (d: StatusEvent, c: Causation) => build(statusType(d.sagaName), d, c),
};

const toSnake = (k: string) => k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
const toCamel = (k: string) => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Spec 002's snake_case form of a saga event: the payload's keys converted
 * (one level: `context` and `result` are the user's and stay as they are),
 * plus `event_id`, `event_type` (`CommandEvent`...), `timestamp` (ISO) and `metadata`.
 */
export function toSpec002(event: AgentEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {
    event_id: event.id,
    event_type: specTypeOf(event.type),
    timestamp: new Date(event.timestamp).toISOString(),
    metadata: event.metadata ?? {},
  };
  for (const [k, v] of Object.entries(event.data as Record<string, unknown>)) out[toSnake(k)] = v;
  return out;
}

/** The payload of a snake_case spec 002 event, in this package's camelCase. */
export function fromSpec002(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) {
    if (k === 'event_id' || k === 'event_type' || k === 'timestamp' || k === 'metadata') continue;
    out[toCamel(k)] = v;
  }
  return out;
}

/** `saga.command.x` → `CommandEvent`, and so on; undefined for a type outside the saga catalogue. */
export function specTypeOf(type: string): string | undefined {
  const kind = type.split('.')[1];
  switch (kind) {
    case 'command':
      return 'CommandEvent';
    case 'compensation':
      return 'CompensationEvent';
    case 'result':
      return 'ResultEvent';
    case 'error':
      return 'ErrorEvent';
    case 'status':
      return 'StatusEvent';
    default:
      return undefined;
  }
}
