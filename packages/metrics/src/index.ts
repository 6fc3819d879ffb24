export { createEventMonitor, type EventWindowMetrics } from './eventMonitor.js';
export {
  createHealthMonitor,
  HealthMonitor,
  type HealthMonitorOptions,
  type HealthReport,
  type HealthSource,
  type HealthThresholds,
} from './health.js';
export { type InstrumentOptions, instrumentTransport } from './instrumentTransport.js';
export { familyOf } from './names.js';
export {
  type CircuitStatsSource,
  createPrometheusMiddleware,
  type MetricsSource,
  type PrometheusOptions,
} from './prometheus.js';
export { createTracingMiddleware, extractContext, injectSpan, type TracingOptions } from './tracing.js';
