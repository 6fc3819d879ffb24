export { RoutedTransport, type RoutedTransportOptions } from './RoutedTransport.js';
export { createRoutingRules, type RoutingRule, type RuleAction, type RuleStats } from './rules.js';
export {
  createStrategy,
  hashBased,
  leastConnections,
  roundRobin,
  type Strategy,
  type StrategyName,
  strategyFromConfig,
  weighted,
} from './strategies.js';
