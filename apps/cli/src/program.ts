import { Command, CommanderError, Option } from 'commander';
import { type Context, DEFAULT_BROKER, type GlobalOptions, makeContext } from './context.js';
import { CliError, EXIT, UsageError } from './errors.js';
import { parseFilters, parseIntOption } from './io.js';

const EPILOG = `
Connection (every command):
  a broker       --broker <url> (QE_BROKER, default ${DEFAULT_BROKER}), --token <jwt> (QE_TOKEN)
                 history/replay use its HTTP gateway: --gateway <url> (QE_GATEWAY), else asked from /api/config
  Redis          --redis <url> (QE_REDIS) with --prefix <p> (the broker's EVENTBUS_KEY_PREFIX, default qe:eventbus)

Exit codes:
  0  ok (health: healthy)
  1  failure: unreachable, refused, not found, degraded or unhealthy (health), a bench that missed its targets
  2  bad usage: unknown command or option, a bad value, a missing argument

Output: people-friendly text (colour on a terminal; --no-color or NO_COLOR turn it off);
--json prints JSON (one object, or one per line for streams of events) for scripts.
Errors go to stderr as "qe: <what happened>" and "hint: <what to do>".`;

const collect = (v: string, prev: string[] = []) => [...prev, v];

// Commands are loaded when run, so --help and usage errors start fast (no Redis or WebSocket client loaded).
const cmds = {
  bench: () => import('./commands/bench.js'),
  dlq: () => import('./commands/dlq.js'),
  health: () => import('./commands/health.js'),
  history: () => import('./commands/history.js'),
  publish: () => import('./commands/publish.js'),
  stats: () => import('./commands/stats.js'),
  tail: () => import('./commands/tail.js'),
};

function withFilters(cmd: Command): Command {
  return cmd.option(
    '-f, --filter <key=value>',
    'keep only events with this agentId or priority (repeatable; values may be comma-separated): agentId=worker-1, priority=high,critical',
    collect,
    [],
  );
}

/** The `qe` program. `setExit` receives each command's exit code. */
export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('qe');
  program
    .description(
      "QE Event Bus operator's CLI: publish, tail, history, replay, dead letters, stats, health and bench, against a broker or straight to Redis",
    )
    .version('0.1.0', '-V, --version')
    .option('-b, --broker <url>', `broker base URL (env QE_BROKER; default ${DEFAULT_BROKER})`)
    .option('-g, --gateway <url>', "the broker's HTTP gateway for history/replay (env QE_GATEWAY)")
    .option('-t, --token <jwt>', 'JWT for a broker with JWT_SECRET (env QE_TOKEN)')
    .option(
      '-r, --redis <url>',
      'talk straight to Redis instead of a broker, e.g. redis://127.0.0.1:6379 (env QE_REDIS)',
    )
    .addOption(
      new Option('-p, --prefix <prefix>', "Redis key prefix: the broker's EVENTBUS_KEY_PREFIX")
        .env('QE_PREFIX')
        .default('qe:eventbus'),
    )
    .option('--json', 'machine-readable output (JSON / NDJSON)')
    .option('--no-color', 'no ANSI colours (also NO_COLOR=1)')
    .option('--timeout <ms>', 'connect/request timeout in ms', '10000')
    .addHelpText('after', EPILOG)
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ showGlobalOptions: true })
    .exitOverride();

  const ctxOf = (cmd: Command): Context => makeContext(cmd.optsWithGlobals() as GlobalOptions);

  program
    .command('publish')
    .description(
      'publish events: <type> [json-data] from arguments, or NDJSON (one event per line) from --file or stdin',
    )
    .argument('[type]', 'event type, e.g. task.create')
    .argument('[data]', 'JSON payload, e.g. \'{"taskId":"t-1"}\' (default {})')
    .option('-F, --file <path>', 'NDJSON file of events ({"type":...,"data":...} per line); - for stdin')
    .option('-a, --agent-id <id>', 'agentId of events that do not carry one', 'qe-cli')
    .option('-P, --priority <name>', 'critical, high, normal, low, bulk (or 0-4) for events without one')
    .option('-c, --correlation-id <id>', 'metadata.correlationId for every event')
    .option('-s, --swarm-id <id>', 'swarmId for events without one')
    .addHelpText(
      'after',
      `
Examples:
  qe publish task.create '{"taskId":"t-1"}' --priority high
  qe publish --file events.ndjson
  printf '%s\\n' '{"type":"task.create","data":{"n":1}}' '{"type":"task.create","data":{"n":2}}' | qe publish
Output: the event ids (--json: {"published":n,"ids":[...]}). Over a broker: its WebSocket gateway; with --redis: a bus on the Redis transport.`,
    )
    .action(async (type: string | undefined, data: string | undefined, o, cmd: Command) => {
      await (await cmds.publish()).publish(ctxOf(cmd), type, data, o);
    });

  withFilters(
    program
      .command('tail')
      .description(
        'follow live events matching a pattern until Ctrl-C (broker: WebSocket; --redis: a bus subscription)',
      )
      .argument('<pattern>', "event pattern: * one segment, ** any number, e.g. 'task.*' or '**'"),
  )
    .option('-m, --min-priority <name>', 'only events at this priority or more urgent')
    .option('-n, --count <n>', 'exit after this many events', (v) => parseIntOption(v, '--count', 1, 1e9))
    .addHelpText(
      'after',
      `
Prints "tailing <pattern> on <url>" on stderr once subscribed; events on stdout, one per line with --json (NDJSON).
Examples:
  qe tail 'task.**'
  qe tail '**' --json --filter priority=critical,high | jq .type`,
    )
    .action(async (pattern: string, o, cmd: Command) => {
      await (await cmds.tail()).tail(ctxOf(cmd), pattern, parseFilters(o.filter), o);
    });

  withFilters(
    program
      .command('history')
      .description(
        'recent events, oldest first (broker: its HTTP gateway GET /events; --redis: QEEventBus.getRecentEvents)',
      )
      .argument('[pattern]', 'event pattern', '**'),
  )
    .option('-S, --since <time>', 'from this time: epoch ms, ISO date, or ago: 30s, 5m, 2h, 1d')
    .option('-l, --limit <n>', 'the most recent n events', '100')
    .option('-c, --correlation-id <id>', 'only one transaction (metadata.correlationId)')
    .addHelpText(
      'after',
      `
Examples:
  qe history 'task.*' --since 10m --limit 20
  qe history --redis redis://127.0.0.1:6379 --correlation-id order-42 --json`,
    )
    .action(async (pattern: string, o, cmd: Command) => {
      await (await cmds.history()).history(ctxOf(cmd), pattern, parseFilters(o.filter), o);
    });

  withFilters(
    program
      .command('replay')
      .description(
        'every stored event in a time range, oldest first (--redis: QEEventBus.replay over the streams)',
      )
      .argument('[pattern]', 'event pattern', '**'),
  )
    .option('--from <time>', 'start (inclusive): epoch ms, ISO date, or ago: 30s, 5m, 2h, 1d')
    .option('--to <time>', 'end (inclusive), same forms; default now')
    .option('-l, --limit <n>', 'at most n events')
    .option('-c, --correlation-id <id>', 'only one transaction (metadata.correlationId)')
    .addHelpText(
      'after',
      `
Over a broker the range is read from its HTTP gateway's history (the last 10,000 events at most) and
filtered here; with --redis it is a replay of the streams, as far back as they reach.
Examples:
  qe replay 'order.**' --from 2h --to 1h
  qe replay --redis redis://127.0.0.1:6379 --correlation-id saga-7 --json`,
    )
    .action(async (pattern: string, o, cmd: Command) => {
      await (await cmds.history()).replay(ctxOf(cmd), pattern, parseFilters(o.filter), o);
    });

  const dlq = program
    .command('dlq')
    .description("dead letters, through the broker's dead-letter API (an admin token when JWT_SECRET is set)")
    .addHelpText(
      'after',
      `
Examples:
  qe dlq list --pattern 'task.*'
  qe dlq show <id>
  qe dlq redrive <id> <id>     qe dlq redrive --pattern 'task.*'     qe dlq redrive --all
  qe dlq purge <id>            qe dlq purge --pattern 'task.*'       qe dlq purge --all`,
    );
  dlq
    .command('list')
    .description('list dead letters')
    .option('--pattern <pattern>', 'only events of these types')
    .option('-l, --limit <n>', 'at most n', '100')
    .option('--after <id>', 'page on: the dead letters after this id')
    .action(async (o, cmd: Command) => (await cmds.dlq()).dlqList(ctxOf(cmd), o));
  dlq
    .command('show')
    .description('one dead letter: the event, the error, attempts')
    .argument('<id>', 'dead letter id (from qe dlq list)')
    .action(async (id: string, _o, cmd: Command) => (await cmds.dlq()).dlqShow(ctxOf(cmd), id));
  dlq
    .command('redrive')
    .description('send dead letters back to the subscription that failed them')
    .argument('[ids...]', 'dead letter ids')
    .option('--pattern <pattern>', 'every dead letter of these event types')
    .option('--all', 'every dead letter')
    .action(async (ids: string[], o, cmd: Command) => (await cmds.dlq()).dlqRedrive(ctxOf(cmd), ids, o));
  dlq
    .command('purge')
    .description('delete dead letters (everything only with --all)')
    .argument('[ids...]', 'dead letter ids')
    .option('--pattern <pattern>', 'every dead letter of these event types')
    .option('--all', 'every dead letter')
    .action(async (ids: string[], o, cmd: Command) => (await cmds.dlq()).dlqPurge(ctxOf(cmd), ids, o));

  program
    .command('stats')
    .description(
      "a live, top-like view of the broker's /api/dashboard: rates, latency, lag, breakers (q to quit)",
    )
    .option('-1, --once', 'print one snapshot and exit')
    .option('-i, --interval <ms>', 'refresh period', '1000')
    .addHelpText('after', '\nWith --json: the raw snapshot (--once), or one per line every interval.')
    .action(async (o, cmd: Command) => (await cmds.stats()).stats(ctxOf(cmd), o));

  program
    .command('health')
    .description(
      "the broker's /health (or, with --redis, a bus health check): exit 0 healthy, 1 degraded, unhealthy or unreachable",
    )
    .action(async (_o, cmd: Command) => setExit(await (await cmds.health()).health(ctxOf(cmd))));

  program
    .command('bench')
    .description(
      'run the load generator (qe-loadgen, apps/loadgen) with these arguments; exit code is its verdict',
    )
    .argument('[scenario]', 'throughput, latency, stress, sustained or burst')
    .argument(
      '[loadgen-options...]',
      'passed on: --target memory|redis|raw-redis|ws|http, --rate, --duration, ...',
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .helpOption(false)
    .addOption(new Option('-h, --help', "show this help and qe-loadgen's options").hideHelp())
    .addHelpText(
      'after',
      `
qe's --broker and --redis become qe-loadgen's --broker-url and --redis-url.
Examples:
  qe bench latency --target memory --rate 1000 --duration 1s
  qe --broker http://127.0.0.1:3000 bench latency --target ws --rate 2000 --duration 10s`,
    )
    .action(async (_scenario: string, _rest: string[], o: { help?: boolean }, cmd: Command) => {
      // unknown options are kept in order in cmd.args: hand them all to qe-loadgen
      if (o.help || cmd.args.length === 0) {
        // qe's part of the help, then qe-loadgen's own (its scenarios, targets and options)
        cmd.outputHelp();
        process.stdout.write('\nqe-loadgen --help:\n');
        await (await cmds.bench()).bench(ctxOf(cmd), ['--help'], false);
        return setExit(o.help ? 0 : 2);
      }
      const args = [...cmd.args];
      const g = cmd.optsWithGlobals() as GlobalOptions;
      setExit(
        await (await cmds.bench()).bench(
          ctxOf(cmd),
          args,
          g.broker !== undefined || process.env.QE_BROKER !== undefined,
        ),
      );
    });

  return program;
}

/** Runs `qe` with these arguments (without node and the script); resolves with the exit code. */
export async function runCli(argv: readonly string[]): Promise<number> {
  let code: number = EXIT.OK;
  const program = buildProgram((c) => {
    code = c;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0)
        return EXIT.OK;
      return EXIT.USAGE; // commander has printed the message
    }
    if (err instanceof CliError) {
      process.stderr.write(`qe: ${err.message}\n`);
      if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
      return err.exitCode;
    }
    process.stderr.write(`qe: ${(err as Error)?.stack ?? String(err)}\n`);
    return EXIT.FAILURE;
  }
}

export { UsageError };
