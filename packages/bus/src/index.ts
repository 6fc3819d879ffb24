export {
  ComposedEventBus,
  type CreateEventBusOptions,
  createEventBus,
  type EventBusConfig,
  type HttpProtocolConfig,
  type LoadBalancerConfig,
  PLUGIN_PACKAGES,
  type ProtocolConfig,
  type RedisConfig,
} from './createEventBus.js';
