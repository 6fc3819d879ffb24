import { randomBytes } from 'node:crypto';
import {
  type AgentEvent,
  ConfigError,
  isEventBusError,
  PermanentError,
  RetryLaterError,
  toError,
  type Unsubscribe,
  ValidationError,
} from '@qe/core';
import type { Redis } from 'ioredis';
import {
  type AnySagaBus,
  type CommandEvent,
  type CommandKind,
  type CompensationEvent,
  checkName,
  commandType,
  compensationType,
  type SagaContext,
  sagaEvents,
} from './events.js';
import { type CommandLedger, type CommandOutcome, MemoryCommandLedger, RedisCommandLedger } from './store.js';

/** What a worker function is called with. */
export interface WorkerContext {
  /** The saga's context: its input with the results of the steps before this one merged in. */
  context: SagaContext;
  transactionId: string;
  correlationId: string;
  sagaName: string;
  /** The step this command runs (for a compensation: the step being undone). */
  stepName: string;
  workerName: string;
  /**
   * The command's id: the same for every redelivery and re-send of this
   * command. Key your own side effects on it when they must not happen twice
   * even if the process dies between doing them and recording the result.
   */
  commandId: string;
  retryCount: number;
  kind: CommandKind;
  /** For a compensation: the step whose failure started it. */
  failedStep?: string;
  /** For a compensation: what the step being undone returned. */
  stepResult?: unknown;
  /** The command event itself. */
  event: AgentEvent;
}

/** A worker function: returns the result (a JSON object, merged into the saga's context) or throws. */
export type WorkerHandler = (
  ctx: WorkerContext,
) => SagaContext | undefined | void | Promise<SagaContext | undefined | void>;

export interface SagaWorkerOptions {
  bus: AnySagaBus;
  /** 1-64 characters of `[a-z0-9_-]`: the worker's channel is `saga.command.<name>`. */
  name: string;
  handler: WorkerHandler;
  /** Command records in Redis (required on a cross-process transport, so every instance shares them). */
  redis?: Redis;
  /** Prefix of the Redis keys. Default `qe:saga`. */
  keyPrefix?: string;
  /** Or any ledger. Default: Redis when `redis` is given, else in memory. */
  ledger?: CommandLedger;
  /** Commands this instance runs at once. Default 8. */
  concurrency?: number;
  /** A claim on a running command expires this long after its holder's last heartbeat, ms. Default 30,000. */
  processingMs?: number;
  /** How long an outcome is remembered for repeats, ms. Default 24 h. */
  resultTtlMs?: number;
  /** When another instance is running the same command: look again after this, ms. Default 250. */
  busyRetryMs?: number;
}

export interface WorkerStats {
  /** Commands this instance ran. */
  ran: number;
  succeeded: number;
  failed: number;
  /** Repeats answered from the record without running. */
  replayed: number;
  /** Repeats that found another instance running the command (postponed). */
  busy: number;
}

const GROUP_PREFIX = 'saga-worker-';

/**
 * A named worker: a member of the group `saga-worker-<name>` on
 * `saga.command.<name>` and `saga.compensation.<name>`, so instances on any
 * number of buses share the commands. Each command is run once: its id is
 * claimed in the ledger first, and a repeat (a redelivery after a crash, a
 * re-send after a timeout or a takeover) gets the recorded outcome back,
 * published again, instead of a second run.
 */
export class SagaWorker {
  readonly name: string;
  private readonly bus: AnySagaBus;
  private readonly handler: WorkerHandler;
  private readonly ledger: CommandLedger;
  private readonly concurrency: number;
  private readonly processingMs: number;
  private readonly resultTtlMs: number;
  private readonly busyRetryMs: number;
  private readonly holder: string;
  private unsubscribe: Unsubscribe | null = null;
  /** Outcomes of runs whose record failed (the ledger was unreachable), until recorded. Empty normally. */
  private readonly unrecorded = new Map<string, CommandOutcome>();
  private readonly counters: WorkerStats = { ran: 0, succeeded: 0, failed: 0, replayed: 0, busy: 0 };

  constructor(options: SagaWorkerOptions) {
    if (options === null || typeof options !== 'object')
      throw new ConfigError('options', 'must be an object');
    this.name = checkName('name', options.name);
    if (typeof options.handler !== 'function') throw new ValidationError('handler', 'must be a function');
    if (
      options.bus === null ||
      typeof options.bus !== 'object' ||
      typeof options.bus.subscribe !== 'function'
    )
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = options.bus;
    this.handler = options.handler;
    this.concurrency = positive('concurrency', options.concurrency, 8);
    this.processingMs = positive('processingMs', options.processingMs, 30_000);
    this.resultTtlMs = positive('resultTtlMs', options.resultTtlMs, 24 * 3600_000);
    this.busyRetryMs = positive('busyRetryMs', options.busyRetryMs, 250);
    const prefix = options.keyPrefix ?? 'qe:saga';
    if (options.ledger) this.ledger = options.ledger;
    else if (options.redis) this.ledger = new RedisCommandLedger(options.redis, prefix);
    else if (this.bus.transport.capabilities.crossProcess)
      throw new ConfigError(
        'redis',
        'a worker on a cross-process transport needs `redis` (or a shared `ledger`) so every instance sees the same command records',
      );
    else this.ledger = new MemoryCommandLedger();
    this.holder = `${this.bus.nodeId}:${process.pid}:${randomBytes(4).toString('hex')}`;
  }

  /** Joins the worker's group; resolves when commands published from now on reach it. */
  async start(): Promise<void> {
    if (this.unsubscribe) return;
    this.unsubscribe = this.bus.subscribe(
      [commandType(this.name), compensationType(this.name)],
      (event) => this.onCommand(event),
      { group: GROUP_PREFIX + this.name, maxConcurrency: this.concurrency },
    );
    await this.unsubscribe.ready;
  }

  /** Leaves the group (commands in flight finish; the bus acks them). */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  stats(): WorkerStats {
    return { ...this.counters };
  }

  private async onCommand(event: AgentEvent): Promise<void> {
    const d = event.data as Partial<CommandEvent & CompensationEvent>;
    const kind: CommandKind = event.type.startsWith('saga.compensation.') ? 'compensation' : 'command';
    if (
      d === null ||
      typeof d !== 'object' ||
      typeof d.commandId !== 'string' ||
      typeof d.transactionId !== 'string' ||
      typeof d.correlationId !== 'string' ||
      typeof d.stepName !== 'string'
    )
      throw new PermanentError(
        `${event.type} ${event.id}: not a saga command (commandId, transactionId missing)`,
      );
    const unrecorded = this.unrecorded.get(d.commandId);
    if (unrecorded) {
      // this instance ran it but could not record the outcome: record it now, never run it again
      const recorded = await this.ledger.complete(d.commandId, unrecorded, this.resultTtlMs);
      this.unrecorded.delete(d.commandId);
      await this.publishOutcome(event, d, kind, recorded, recorded !== unrecorded);
      return;
    }
    const claim = await this.ledger.claim(d.commandId, this.holder, this.processingMs);
    if (claim.state === 'busy') {
      this.counters.busy++;
      throw new RetryLaterError(this.busyRetryMs, `command ${d.commandId} is running on another instance`);
    }
    if (claim.state === 'done') {
      this.counters.replayed++;
      await this.publishOutcome(event, d, kind, claim.outcome, true);
      return;
    }
    this.counters.ran++;
    const heartbeat = setInterval(
      () => {
        void this.ledger.heartbeat(d.commandId!, this.holder, this.processingMs).catch(() => {});
      },
      Math.max(10, Math.floor(this.processingMs / 3)),
    );
    heartbeat.unref();
    const started = performance.now();
    let outcome: CommandOutcome;
    try {
      const ctx: WorkerContext = {
        context: (d.context ?? {}) as SagaContext,
        transactionId: d.transactionId,
        correlationId: d.correlationId,
        sagaName: d.sagaName ?? '',
        stepName: d.stepName,
        workerName: this.name,
        commandId: d.commandId,
        retryCount: d.retryCount ?? 0,
        kind,
        event,
      };
      if (kind === 'compensation') {
        ctx.failedStep = d.failedStep;
        ctx.stepResult = d.stepResult;
      }
      const r = await this.handler(ctx);
      if (r !== undefined && (r === null || typeof r !== 'object' || Array.isArray(r)))
        throw new ValidationError('result', `worker ${this.name} must return an object or nothing`);
      outcome = { ok: true, result: (r ?? {}) as SagaContext, executionTimeMs: performance.now() - started };
      this.counters.succeeded++;
    } catch (thrown) {
      const err = toError(thrown);
      outcome = {
        ok: false,
        error: {
          message: err.message,
          type: err.name,
          ...(isEventBusError(err) ? { code: err.code } : {}),
          ...(err.stack === undefined ? {} : { stack: err.stack }),
        },
        executionTimeMs: performance.now() - started,
      };
      this.counters.failed++;
    } finally {
      clearInterval(heartbeat);
    }
    let recorded: CommandOutcome;
    try {
      recorded = await this.ledger.complete(d.commandId, outcome, this.resultTtlMs);
    } catch (err) {
      // the bus retries the delivery; the retry records this outcome instead of running again
      this.unrecorded.set(d.commandId, outcome);
      throw err;
    }
    await this.publishOutcome(event, d, kind, recorded, recorded !== outcome);
  }

  private async publishOutcome(
    cmd: AgentEvent,
    d: Partial<CommandEvent & CompensationEvent>,
    kind: CommandKind,
    o: CommandOutcome,
    replayed: boolean,
  ): Promise<void> {
    const base = {
      transactionId: d.transactionId!,
      correlationId: d.correlationId!,
      sagaName: d.sagaName ?? '',
      workerName: this.name,
      stepName: d.stepName!,
      commandId: d.commandId!,
      kind,
      replayed,
      executionTimeMs: o.executionTimeMs,
    };
    const c = { agentId: this.bus.nodeId, causationId: cmd.id, priority: cmd.priority };
    await this.bus.publish(
      o.ok
        ? sagaEvents.result({ ...base, result: o.result }, c)
        : sagaEvents.error(
            {
              ...base,
              errorMessage: o.error.message,
              errorType: o.error.type,
              ...(o.error.code === undefined ? {} : { errorCode: o.error.code }),
              ...(o.error.stack === undefined ? {} : { stackTrace: o.error.stack }),
            },
            c,
          ),
    );
  }
}

/** Registers and starts a worker (spec 002's `@worker("name")`). */
export async function registerWorker(
  bus: AnySagaBus,
  name: string,
  handler: WorkerHandler,
  options: Omit<SagaWorkerOptions, 'bus' | 'name' | 'handler'> = {},
): Promise<SagaWorker> {
  const w = new SagaWorker({ ...options, bus, name, handler });
  await w.start();
  return w;
}

function positive(setting: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ConfigError(setting, 'must be a positive integer');
  return v;
}
