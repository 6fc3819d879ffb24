import { InvalidSagaDefinitionError } from './errors.js';
import { checkName } from './events.js';

/** How often a step (or a compensation) is tried, counting the first try, and the backoff between tries. */
export interface RetryPolicy {
  /** Tries in all, the first included. Default 1 for steps (no retry), 5 for compensations. */
  attempts?: number;
  /** Delay before the second try, ms, doubled per try. Default 100. */
  delayMs?: number;
  /** Backoff cap, ms. Default 5,000. */
  maxDelayMs?: number;
}

export interface StepDefinition {
  /** Unique within the saga; 1-64 characters of `[a-z0-9_-]`. */
  name: string;
  /** The worker that runs the step. */
  worker: string;
  /** The worker that undoes it when a later step fails for good. None: nothing to undo. */
  compensate?: string;
  /** How long one try may take before it is sent again (or, tries used up, fails). Default: the saga's `stepTimeoutMs`. */
  timeoutMs?: number;
  /** Default: the saga's `retry`. */
  retry?: RetryPolicy;
  /** Default: the saga's `compensationRetry`. */
  compensationRetry?: RetryPolicy;
}

/** Steps that run at the same time; the saga moves on when all of them are done. */
export interface ParallelDefinition {
  parallel: StepDefinition[];
}

export interface SagaDefinition {
  /** 1-64 characters of `[a-z0-9_-]` (it names the status channel `saga.status.<name>`). */
  name: string;
  /** In order; a `{ parallel: [...] }` entry runs its steps concurrently. */
  steps: (StepDefinition | ParallelDefinition)[];
  /** The whole saga must be done within this, ms, or it is compensated. Default: none. */
  deadlineMs?: number;
  /** Default per-step timeout, ms. Default 60,000. */
  stepTimeoutMs?: number;
  retry?: RetryPolicy;
  compensationRetry?: RetryPolicy;
}

export interface NormalizedRetry {
  attempts: number;
  delayMs: number;
  maxDelayMs: number;
}

export interface NormalizedStep {
  name: string;
  worker: string;
  compensate: string | undefined;
  timeoutMs: number;
  retry: NormalizedRetry;
  compensationRetry: NormalizedRetry;
  /** Index of its stage. */
  stage: number;
}

export interface NormalizedSaga {
  name: string;
  stages: NormalizedStep[][];
  steps: Map<string, NormalizedStep>;
  deadlineMs: number | undefined;
}

function posInt(field: string, v: unknown, allowZero = false): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1))
    throw new InvalidSagaDefinitionError(
      field,
      `must be a ${allowZero ? 'non-negative' : 'positive'} integer`,
    );
  return v;
}

function retryOf(field: string, r: RetryPolicy | undefined, base: NormalizedRetry): NormalizedRetry {
  if (r === undefined) return base;
  if (r === null || typeof r !== 'object') throw new InvalidSagaDefinitionError(field, 'must be an object');
  return {
    attempts: posInt(`${field}.attempts`, r.attempts) ?? base.attempts,
    delayMs: posInt(`${field}.delayMs`, r.delayMs, true) ?? base.delayMs,
    maxDelayMs: posInt(`${field}.maxDelayMs`, r.maxDelayMs, true) ?? base.maxDelayMs,
  };
}

/** Validates a definition; throws `InvalidSagaDefinitionError` / `InvalidNameError` naming the field. */
export function normalizeSaga(def: SagaDefinition): NormalizedSaga {
  if (def === null || typeof def !== 'object')
    throw new InvalidSagaDefinitionError('saga', 'must be an object');
  const name = checkName('name', def.name);
  if (!Array.isArray(def.steps) || def.steps.length === 0)
    throw new InvalidSagaDefinitionError('steps', 'must be a non-empty array');
  const stepTimeoutMs = posInt('stepTimeoutMs', def.stepTimeoutMs) ?? 60_000;
  const retry = retryOf('retry', def.retry, { attempts: 1, delayMs: 100, maxDelayMs: 5000 });
  const compRetry = retryOf('compensationRetry', def.compensationRetry, {
    attempts: 5,
    delayMs: 100,
    maxDelayMs: 5000,
  });
  const steps = new Map<string, NormalizedStep>();
  const stages: NormalizedStep[][] = [];
  def.steps.forEach((entry, i) => {
    if (entry === null || typeof entry !== 'object')
      throw new InvalidSagaDefinitionError(`steps[${i}]`, 'must be a step or { parallel: [...] }');
    const group = 'parallel' in entry ? entry.parallel : [entry];
    if (!Array.isArray(group) || group.length === 0)
      throw new InvalidSagaDefinitionError(`steps[${i}].parallel`, 'must be a non-empty array of steps');
    const stage: NormalizedStep[] = [];
    group.forEach((s, j) => {
      const f = 'parallel' in entry ? `steps[${i}].parallel[${j}]` : `steps[${i}]`;
      if (s === null || typeof s !== 'object') throw new InvalidSagaDefinitionError(f, 'must be a step');
      const stepName = checkName(`${f}.name`, s.name);
      if (steps.has(stepName))
        throw new InvalidSagaDefinitionError(`${f}.name`, `duplicate step name ${JSON.stringify(stepName)}`);
      const step: NormalizedStep = {
        name: stepName,
        worker: checkName(`${f}.worker`, s.worker),
        compensate: s.compensate === undefined ? undefined : checkName(`${f}.compensate`, s.compensate),
        timeoutMs: posInt(`${f}.timeoutMs`, s.timeoutMs) ?? stepTimeoutMs,
        retry: retryOf(`${f}.retry`, s.retry, retry),
        compensationRetry: retryOf(`${f}.compensationRetry`, s.compensationRetry, compRetry),
        stage: stages.length,
      };
      steps.set(stepName, step);
      stage.push(step);
    });
    stages.push(stage);
  });
  return { name, stages, steps, deadlineMs: posInt('deadlineMs', def.deadlineMs) };
}

/** Backoff before try `tries + 1` (tries made so far >= 1): doubled per try, capped, no jitter. */
export function retryDelay(r: NormalizedRetry, tries: number): number {
  return Math.min(r.maxDelayMs, r.delayMs * 2 ** Math.max(0, tries - 1));
}
