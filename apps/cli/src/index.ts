export { renderStats, type Snapshot } from './commands/stats.js';
export { CliError, EXIT, UsageError } from './errors.js';
export { buildProgram, runCli } from './program.js';
