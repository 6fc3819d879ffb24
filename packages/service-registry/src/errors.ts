import { NotFoundError, ValidationError } from '@qe/core';

/** A service description that cannot be used. `details.field` names the offending field. Code `VALIDATION`. */
export class InvalidServiceError extends ValidationError {}

/** A version or a version range that is not semver. Code `VALIDATION`. */
export class InvalidVersionError extends ValidationError {
  constructor(field: string, value: unknown) {
    super(
      field,
      `is not a valid semver ${field === 'version' ? 'version' : 'range'}: ${JSON.stringify(value)}`,
      {
        details: { value: String(value) },
      },
    );
  }
}

/** No instance of the service exists (or none is healthy) to route to. Code `NOT_FOUND`. */
export class NoHealthyInstanceError extends NotFoundError {
  readonly service: string;
  constructor(service: string, known: number) {
    super(
      known === 0
        ? `no instance of service ${JSON.stringify(service)} is registered`
        : `none of the ${known} instances of service ${JSON.stringify(service)} is healthy`,
      { details: { service, known } },
    );
    this.service = service;
  }
}

/** No such instance on this registry. Code `NOT_FOUND`. */
export class UnknownInstanceError extends NotFoundError {
  constructor(instanceId: string) {
    super(`no service instance ${JSON.stringify(instanceId)} is registered here`, {
      details: { instanceId },
    });
  }
}
