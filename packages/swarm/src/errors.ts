import { EventBusError, NotFoundError, TimeoutError, ValidationError } from '@qe/core';

/** An id (agent, task, swarm, proposal, voter) that cannot be used. `details.field` names it. */
export class InvalidIdError extends ValidationError {
  constructor(field: string, value: unknown) {
    super(field, `must be 1-128 characters of [A-Za-z0-9_.:-], got ${JSON.stringify(value)}`, {
      details: { value: typeof value === 'string' ? value : String(value) },
    });
  }
}

/** Agent, task, swarm or scaling settings that cannot work. Code `VALIDATION`. */
export class InvalidSpecError extends ValidationError {}

/** The registry already holds a live agent with this id. Code `VALIDATION`. */
export class DuplicateAgentError extends ValidationError {
  constructor(agentId: string) {
    super('id', `an agent ${JSON.stringify(agentId)} is already registered on this node`, {
      details: { agentId },
    });
  }
}

/** A swarm transition the state machine refuses (e.g. `resume` of a running swarm). Code `VALIDATION`. */
export class InvalidTransitionError extends ValidationError {
  constructor(swarmId: string, from: string, to: string) {
    super('transition', `swarm ${JSON.stringify(swarmId)} cannot go from ${from} to ${to}`, {
      details: { swarmId, from, to },
    });
  }
}

/** No such task, agent, swarm or proposal. Code `NOT_FOUND`. */
export class UnknownEntityError extends NotFoundError {
  constructor(kind: 'task' | 'agent' | 'swarm' | 'proposal', id: string) {
    super(`no ${kind} ${JSON.stringify(id)}`, { details: { kind, id } });
  }
}

/** A task that ended without a result: failed for good, dead-lettered, cancelled or past its deadline. */
export class TaskFailedError extends EventBusError {
  readonly taskId: string;
  readonly reason: TaskFailReason;
  readonly attempts: number;
  constructor(taskId: string, reason: TaskFailReason, message: string, attempts: number) {
    super('HANDLER', `task ${taskId} ${reason}: ${message}`, { details: { taskId, reason, attempts } });
    this.taskId = taskId;
    this.reason = reason;
    this.attempts = attempts;
  }
}

export type TaskFailReason = 'dead-lettered' | 'failed' | 'cancelled' | 'deadline' | 'dependency-failed';

/** A wait (pause acknowledgement, proposal outcome) passed its time. Code `TIMEOUT`. */
export class SwarmTimeoutError extends TimeoutError {}

const ID = /^[A-Za-z0-9_.:-]{1,128}$/;
export function checkId(field: string, value: unknown): string {
  if (typeof value !== 'string' || !ID.test(value)) throw new InvalidIdError(field, value);
  return value;
}
export function checkPositiveInt(field: string, value: unknown, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new InvalidSpecError(field, `must be an integer >= ${min}, got ${String(value)}`);
  return value;
}
export function checkNumber(
  field: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max)
    throw new InvalidSpecError(field, `must be a number in [${min}, ${max}], got ${String(value)}`);
  return value;
}
export function checkStrings(field: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new InvalidSpecError(field, 'must be an array of strings');
  for (const [i, v] of value.entries()) checkId(`${field}[${i}]`, v);
  return [...new Set(value as string[])];
}
