import {
  type EventBusErrorOptions,
  ForbiddenError,
  PermanentError,
  UnauthorizedError,
  ValidationError,
} from '@qe/core';

/** One schema error, by JSON pointer into the checked value (`/data/items/0/sku`). */
export interface SchemaIssue {
  /** JSON pointer from the event root: `/data/...` or `/metadata/...`; `/data` for the root of `data`. */
  readonly path: string;
  readonly message: string;
  /** The JSON Schema keyword that failed (`required`, `type`, `format`, ...). */
  readonly keyword: string;
  readonly params: Record<string, unknown>;
}

function describeIssues(issues: readonly SchemaIssue[]): string {
  return issues.map((i) => `${i.path || '/'} ${i.message}`).join('; ');
}

/**
 * An event does not satisfy its contract (strict publish). `field` is the path of
 * the first error; `issues` (also in `details.issues`) lists every one of ajv's errors.
 */
export class SchemaValidationError extends ValidationError {
  readonly issues: readonly SchemaIssue[];
  readonly eventType: string;
  readonly contractVersion: string;
  constructor(eventType: string, contractVersion: string, issues: readonly SchemaIssue[]) {
    super(
      issues[0]?.path ?? '/data',
      `event ${eventType} does not satisfy contract v${contractVersion}: ${describeIssues(issues)}`,
      { details: { eventType, contractVersion, issues } },
    );
    this.issues = issues;
    this.eventType = eventType;
    this.contractVersion = contractVersion;
  }
}

/**
 * Thrown on consume for an event that fails its contract (or whose version the
 * subscriber does not accept). A `PermanentError`, so the bus dead-letters it at
 * once, without retries, and never hands it to the handler; the dead letter's
 * `error.message` lists the issues by path.
 */
export class ContractViolationError extends PermanentError {
  readonly issues: readonly SchemaIssue[];
  readonly eventType: string;
  readonly contractVersion: string | undefined;
  constructor(
    eventType: string,
    contractVersion: string | undefined,
    issues: readonly SchemaIssue[],
    options: EventBusErrorOptions = {},
  ) {
    super(
      `event ${eventType} violates its contract${contractVersion ? ` v${contractVersion}` : ''}: ${describeIssues(issues)}`,
      { ...options, details: { eventType, contractVersion, issues, ...options.details } },
    );
    this.issues = issues;
    this.eventType = eventType;
    this.contractVersion = contractVersion;
  }
}

/** A contract definition itself is malformed (bad schema, bad version, bad type pattern). */
export class ContractDefinitionError extends ValidationError {}

/**
 * A new contract version is not compatible with the previous one under the
 * contract's compatibility mode. `reasons` say which rule broke, by path.
 */
export class IncompatibleSchemaError extends ValidationError {
  readonly reasons: readonly string[];
  constructor(
    readonly eventType: string,
    readonly version: string,
    readonly previousVersion: string,
    readonly mode: string,
    reasons: readonly string[],
  ) {
    super(
      'schema',
      `contract ${eventType} v${version} is not ${mode}-compatible with v${previousVersion}: ${reasons.join('; ')} (register with { force: true } to override)`,
      { details: { eventType, version, previousVersion, mode, reasons } },
    );
    this.reasons = reasons;
  }
}

/** Why a cross-project message was refused. */
export type RefusalReason =
  | 'unknown_project'
  | 'bad_credential'
  | 'forbidden_type'
  | 'forbidden_target'
  | 'not_accepted'
  | 'rate_limited'
  | 'invalid';

/** A cross-project message that policy does not allow (`code: 'FORBIDDEN'`). */
export class CrossProjectForbiddenError extends ForbiddenError {
  constructor(
    readonly reason: Exclude<RefusalReason, 'bad_credential' | 'rate_limited' | 'invalid'>,
    message: string,
    details: Record<string, unknown>,
  ) {
    super(message, { details: { reason, ...details } });
  }
}

/** The sending project could not be authenticated (`code: 'UNAUTHORIZED'`). */
export class CrossProjectUnauthorizedError extends UnauthorizedError {
  readonly reason = 'bad_credential' as const;
  constructor(message: string, details: Record<string, unknown>) {
    super(message, { details: { reason: 'bad_credential', ...details } });
  }
}
