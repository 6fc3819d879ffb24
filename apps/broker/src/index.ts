export { type Broker, type CreateBrokerOptions, createBroker, type StopResult } from './broker.js';
export {
  type BrokerConfig,
  BrokerConfigError,
  CONFIG_FILE_KEYS,
  type LoadConfigInput,
  loadBrokerConfig,
  type RedisSettings,
  redactConfig,
} from './config.js';
export { renderDashboardHtml } from './dashboard.js';
export {
  BrokerMonitor,
  type CircuitView,
  type DashboardSnapshot,
  type MonitorOptions,
  type MonitorSample,
  type MonitorSource,
} from './monitor.js';
