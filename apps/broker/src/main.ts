#!/usr/bin/env node
/**
 * `qe-broker`: the reference broker process.
 *
 * Exit codes, for supervisors: 0 after a clean shutdown (SIGTERM/SIGINT,
 * everything drained), 1 when the broker failed (could not start, crashed, or
 * shutdown hit its timeout with work left), 2 when the configuration is invalid
 * (fix it before restarting: retrying will not help).
 */
import { createJsonLogger, toError } from '@qe/core';
import { createBroker } from './broker.js';
import { BrokerConfigError, CONFIG_FILE_KEYS, loadBrokerConfig, redactConfig } from './config.js';

/** Clean shutdown: everything drained. */
export const EXIT_OK = 0;
/** Start failure, crash, or shutdown timed out with work left: restart with backoff. */
export const EXIT_FAILURE = 1;
/** Invalid configuration: do not restart until it is fixed. */
export const EXIT_CONFIG = 2;

const USAGE = `Usage: qe-broker [--config file.json]

Starts the QE Event Bus broker (dashboard at /, /health, /metrics, /dead-letters).
With no configuration it runs on the in-memory transport on port 3000.

Environment (a --config JSON file takes the camelCase names; the environment wins):
${Object.entries(CONFIG_FILE_KEYS)
  .map(([k, v]) => `  ${v.padEnd(28)} ${k}`)
  .join('\n')}
`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    process.exit(EXIT_OK);
  }
  let config: ReturnType<typeof loadBrokerConfig>;
  try {
    config = loadBrokerConfig({ env: process.env, argv });
  } catch (err) {
    const e = toError(err);
    const problems = err instanceof BrokerConfigError ? err.problems : [e.message];
    process.stderr.write(
      `${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'invalid configuration', problems })}\n`,
    );
    process.stderr.write(
      `qe-broker: invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`,
    );
    process.exit(EXIT_CONFIG);
  }

  const logger = createJsonLogger({
    level: config.logLevel,
    bindings: { service: config.serviceName, nodeId: config.nodeId, pid: process.pid },
  });
  logger.info('starting', { config: redactConfig(config) });

  let broker: ReturnType<typeof createBroker>;
  try {
    broker = createBroker(config, { logger });
  } catch (err) {
    logger.error('cannot start', { error: toError(err).message, code: (err as { code?: string }).code });
    process.exit(EXIT_FAILURE);
  }
  let starting: Promise<unknown> = Promise.resolve();

  let signals = 0;
  const shutdown = (reason: string, code: number) => {
    if (++signals > 1) {
      logger.warn('second signal: exiting now without draining', { reason });
      process.exit(EXIT_FAILURE);
    }
    logger.info('shutting down', { reason, timeoutMs: config.shutdownTimeoutMs });
    // a signal during start-up waits for start to settle, so stop never races a half-open server
    starting
      .then(() => broker.stop())
      .then(
        (result) => {
          logger.info('shutdown complete', { result });
          process.exit(result === 'clean' ? code : EXIT_FAILURE);
        },
        (err) => {
          logger.error('shutdown failed', { error: toError(err).message });
          process.exit(EXIT_FAILURE);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM', EXIT_OK));
  process.on('SIGINT', () => shutdown('SIGINT', EXIT_OK));
  process.on('uncaughtException', (err) => {
    logger.error('uncaught exception', { error: err.message, stack: err.stack });
    shutdown('uncaughtException', EXIT_FAILURE);
  });
  process.on('unhandledRejection', (reason) => {
    logger.error('unhandled rejection', { error: toError(reason).message });
  });

  starting = broker.start().catch((err) => {
    const e = toError(err);
    // one line for the log collector, one for the person at the terminal; no stack
    logger.error('cannot start', { error: e.message, code: (err as { code?: string }).code });
    process.stderr.write(`qe-broker: cannot start: ${e.message}\n`);
    process.exit(EXIT_FAILURE);
  });
}

void main();
