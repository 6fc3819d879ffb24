import { NotFoundError, ValidationError } from '@qe/core';

/**
 * A worker, saga or step name that cannot be used. Names become event-type
 * segments (`saga.command.<worker>`), so they are 1-64 characters of
 * `[a-z0-9_-]`. `details.field` names the offending field.
 */
export class InvalidNameError extends ValidationError {
  constructor(field: string, value: unknown) {
    super(field, `must be 1-64 characters of [a-z0-9_-], got ${JSON.stringify(value)}`, {
      details: { value: typeof value === 'string' ? value : String(value) },
    });
  }
}

/** A saga definition that cannot run (no steps, duplicate step names, bad timeouts...). */
export class InvalidSagaDefinitionError extends ValidationError {}

/** `begin()` named a saga this orchestrator has no definition for. Code `NOT_FOUND`. */
export class UnknownSagaError extends NotFoundError {
  readonly sagaName: string;
  constructor(sagaName: string) {
    super(`no saga named ${JSON.stringify(sagaName)} is defined on this orchestrator`, {
      details: { sagaName },
    });
    this.sagaName = sagaName;
  }
}

/** A transaction id that no store knows. Code `NOT_FOUND`. */
export class UnknownTransactionError extends NotFoundError {
  readonly transactionId: string;
  constructor(transactionId: string) {
    super(`no saga transaction ${JSON.stringify(transactionId)}`, { details: { transactionId } });
    this.transactionId = transactionId;
  }
}
