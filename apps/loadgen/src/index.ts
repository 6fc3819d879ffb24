export { parseArgs } from './cli.js';
export { Ledger, type LedgerCounts, type SentRecord } from './ledger.js';
export type { PhaseSpec } from './messages.js';
export { type LoadOptions, type PhaseResult, runLoad } from './run.js';
export { runScenario, type ScenarioOptions, type ScenarioResult } from './run-scenario.js';
export {
  SCENARIOS,
  type ScenarioName,
  type ScenarioParams,
  SPEC_TARGETS,
  scenarioDefaults,
  verdict,
} from './scenarios.js';
export { type DriveOptions, type DriveResult, drive } from './schedule.js';
export { targetByName, targetNames } from './targets/index.js';
export type { LoadConsumer, LoadPayload, LoadProducer, Target, TargetContext } from './targets/target.js';
