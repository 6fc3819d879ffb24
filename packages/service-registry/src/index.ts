export {
  InvalidServiceError,
  InvalidVersionError,
  NoHealthyInstanceError,
  UnknownInstanceError,
} from './errors.js';
export {
  type AnyRegistryBus,
  type ContractDeclaration,
  type Endpoint,
  type Health,
  normalizeSpec,
  type RegistryStats,
  type ServiceChange,
  ServiceEventTypes,
  type ServiceHandle,
  type ServiceInstance,
  type ServiceQuery,
  ServiceRegistry,
  type ServiceRegistryOptions,
  type ServiceSpec,
} from './registry.js';
