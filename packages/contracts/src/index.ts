export {
  AUDIT_OUTCOMES,
  type AuditEntry,
  type AuditEntryInput,
  type AuditLog,
  type AuditOutcome,
  type AuditQuery,
  checkAuditQuery,
  MemoryAuditLog,
  RedisAuditLog,
  type RedisAuditLogOptions,
} from './audit.js';
export { COMPATIBILITY_MODES, type CompatibilityMode, compatibilityProblems } from './compat.js';
export {
  type ContractDiscoveryStats,
  type DeclaringInstance,
  discoverContracts,
  type ServiceDirectory,
} from './discovery.js';
export {
  ContractDefinitionError,
  ContractViolationError,
  CrossProjectForbiddenError,
  CrossProjectUnauthorizedError,
  IncompatibleSchemaError,
  type RefusalReason,
  type SchemaIssue,
  SchemaValidationError,
} from './errors.js';
export { type AuditHandlerOptions, createAuditHandler } from './http.js';
export {
  type ContractValidationMiddleware,
  type ContractValidationOptions,
  type ContractValidationStats,
  contractValidation,
} from './middleware.js';
export {
  type CrossProjectMessage,
  CrossProjectMessenger,
  type CrossProjectOptions,
  type CrossProjectStats,
  generateCredential,
  hashCredential,
  type ProjectConfig,
  type ProjectRecord,
  type SendOptions,
} from './projects.js';
export {
  type Contract,
  type ContractChange,
  type ContractCheck,
  type ContractDefinition,
  ContractRegistry,
  type ContractRegistryOptions,
  type JsonSchema,
  type RegisterOptions,
} from './registry.js';
export { compareVersions, parseVersion, VersionRange } from './version.js';
