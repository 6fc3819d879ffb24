import { randomBytes } from 'node:crypto';
import {
  type AgentEvent,
  ConfigError,
  type HistogramSnapshot,
  LatencyHistogram,
  type Logger,
  NotConnectedError,
  noopLogger,
  TimeoutError,
  type Unsubscribe,
  uuidv7,
  ValidationError,
} from '@qe/core';
import type { Redis } from 'ioredis';
import {
  type NormalizedSaga,
  type NormalizedStep,
  normalizeSaga,
  retryDelay,
  type SagaDefinition,
} from './definition.js';
import { UnknownSagaError, UnknownTransactionError } from './errors.js';
import {
  type AnySagaBus,
  type ErrorEvent,
  type ResultEvent,
  SAGA_STATUSES,
  type SagaContext,
  SagaEventTypes,
  type SagaStatus,
  type StatusEvent,
  sagaEvents,
  TERMINAL_STATUSES,
} from './events.js';
import {
  MemorySagaStore,
  RedisSagaStore,
  type SagaErrorInfo,
  type SagaState,
  type SagaStore,
  type StepState,
} from './store.js';

export interface SagaOrchestratorOptions {
  bus: AnySagaBus;
  /** Saga state in Redis (required on a cross-process transport, so another instance can take a saga over). */
  redis?: Redis;
  /** Prefix of the Redis keys. Default `qe:saga`. */
  keyPrefix?: string;
  /** Or any store. Default: Redis when `redis` is given, else in memory. */
  store?: SagaStore;
  /** This instance's id (lease owner). Default `<nodeId>:<pid>:<random>`. */
  instanceId?: string;
  /** A saga whose owner stopped renewing for this long is taken over by another instance, ms. Default 10,000. */
  leaseMs?: number;
  /** How often this instance looks for sagas to take over, ms. Default `leaseMs / 2`. */
  scanIntervalMs?: number;
  /** How long an ended saga stays queryable in Redis, ms (0: for ever). Default 7 days. */
  retainFinishedMs?: number;
  /** Take over sagas of dead instances. Default true. */
  takeover?: boolean;
  logger?: Logger;
}

export interface BeginOptions {
  /** Default: a new UUIDv7. 1-128 characters of `[A-Za-z0-9_.-]`. */
  transactionId?: string;
  /** Default: the transaction id. */
  correlationId?: string;
}

export interface StepView {
  name: string;
  status: StepState['status'];
  tries: number;
  result?: unknown;
  error?: SagaErrorInfo;
  durationMs?: number;
}

/** A transaction as `status()`, `list()` and `wait()` report it. */
export interface SagaView {
  transactionId: string;
  correlationId: string;
  sagaName: string;
  status: SagaStatus;
  currentStep?: string;
  progress: number;
  context: SagaContext;
  steps: StepView[];
  failedStep?: string;
  error?: SagaErrorInfo;
  createdAt: number;
  updatedAt: number;
  finishedAt?: number;
  /** Orchestrator instances that owned it, in order. */
  owners: string[];
}

export interface SagaStats {
  /** Sagas begun on this instance. */
  started: number;
  /** Sagas this instance brought to each end. */
  completed: number;
  compensated: number;
  failed: number;
  /** Sagas this instance took over from another. */
  takenOver: number;
  /** Sagas this instance owns now. */
  running: number;
  stepsSucceeded: number;
  stepsFailed: number;
  stepRetries: number;
  stepTimeouts: number;
  compensationsRun: number;
  /** Outcomes for commands no longer awaited (repeats, late results), ignored. */
  staleOutcomes: number;
  /** From a step's first command to its result, ms, per step name. */
  stepDurations: Record<string, HistogramSnapshot>;
  /** Every step's duration, all steps together. */
  stepLatency: HistogramSnapshot;
  /** From begin to the end, ms, of sagas that ended on this instance. */
  sagaDurations: HistogramSnapshot;
}

export type StatusListener = (status: StatusEvent, event: AgentEvent) => void;

interface Live {
  state: SagaState;
  def: NormalizedSaga;
  timers: Map<string, NodeJS.Timeout>;
  chain: Promise<void>;
  dropped: boolean;
}

/** Nothing more to do for this transaction here: the lease is gone. */
class LeaseLost extends Error {}

const TX_ID = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * Runs sagas: sends each step's command to its worker, collects results,
 * passes the context forward, retries per policy, and when a step fails for
 * good runs the compensations of the completed steps in reverse order.
 *
 * State is written before every command goes out (to Redis with a Redis
 * store), under a lease the instance renews. If the instance dies, another
 * one takes the saga over once the lease expired and re-sends the command it
 * was waiting for; commands keep their id across re-sends, so the worker
 * answers from its record instead of running twice.
 */
export class SagaOrchestrator {
  readonly instanceId: string;
  readonly store: SagaStore;
  private readonly bus: AnySagaBus;
  private readonly leaseMs: number;
  private readonly scanIntervalMs: number;
  private readonly takeover: boolean;
  private readonly logger: Logger;
  private readonly defs = new Map<string, NormalizedSaga>();
  private readonly owned = new Map<string, Live>();
  private readonly watchers = new Map<string, Set<StatusListener>>();
  private unsubscribe: Unsubscribe | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private scanTimer: NodeJS.Timeout | null = null;
  private scanning = false;
  private running = false;
  private readonly stepHist = new Map<string, LatencyHistogram>();
  private readonly sagaHist = new LatencyHistogram();
  private readonly allStepsHist = new LatencyHistogram();
  private readonly c = {
    started: 0,
    completed: 0,
    compensated: 0,
    failed: 0,
    takenOver: 0,
    stepsSucceeded: 0,
    stepsFailed: 0,
    stepRetries: 0,
    stepTimeouts: 0,
    compensationsRun: 0,
    staleOutcomes: 0,
  };

  constructor(options: SagaOrchestratorOptions) {
    if (options === null || typeof options !== 'object')
      throw new ConfigError('options', 'must be an object');
    if (
      options.bus === null ||
      typeof options.bus !== 'object' ||
      typeof options.bus.subscribe !== 'function'
    )
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = options.bus;
    this.leaseMs = positive('leaseMs', options.leaseMs, 10_000);
    this.scanIntervalMs = positive('scanIntervalMs', options.scanIntervalMs, Math.ceil(this.leaseMs / 2));
    this.takeover = options.takeover ?? true;
    this.logger = options.logger ?? noopLogger;
    if (
      options.instanceId !== undefined &&
      (typeof options.instanceId !== 'string' || !TX_ID.test(options.instanceId))
    )
      throw new ConfigError('instanceId', 'must be 1-128 characters of [A-Za-z0-9_.-]');
    this.instanceId =
      options.instanceId ?? `${this.bus.nodeId}.${process.pid}.${randomBytes(4).toString('hex')}`;
    if (options.store) this.store = options.store;
    else if (options.redis)
      this.store = new RedisSagaStore(
        options.redis,
        options.keyPrefix,
        options.retainFinishedMs === undefined ? {} : { retainFinishedMs: options.retainFinishedMs },
      );
    else if (this.bus.transport.capabilities.crossProcess)
      throw new ConfigError(
        'redis',
        'an orchestrator on a cross-process transport needs `redis` (or a shared `store`) so its sagas survive it',
      );
    else this.store = new MemorySagaStore();
  }

  /** Adds a saga definition. Throws `InvalidSagaDefinitionError`/`InvalidNameError` naming the bad field. */
  define(definition: SagaDefinition): this {
    const def = normalizeSaga(definition);
    if (this.defs.has(def.name))
      throw new ValidationError('name', `saga ${JSON.stringify(def.name)} is already defined`);
    this.defs.set(def.name, def);
    return this;
  }

  /** Subscribes to results and statuses, and starts renewing leases and looking for sagas to take over. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.unsubscribe = this.bus.subscribe(
      [`${SagaEventTypes.RESULT}.*`, `${SagaEventTypes.ERROR}.*`, `${SagaEventTypes.STATUS}.*`],
      (event) => this.onEvent(event),
      { maxConcurrency: 64, retryAttempts: 0 },
    );
    await this.unsubscribe.ready;
    this.renewTimer = setInterval(() => void this.renew(), Math.max(10, Math.floor(this.leaseMs / 3)));
    this.renewTimer.unref();
    if (this.takeover) {
      this.scanTimer = setInterval(() => void this.scan(), this.scanIntervalMs);
      this.scanTimer.unref();
      void this.scan();
    }
  }

  /**
   * Stops: timers cleared, the leases of sagas still running released so
   * another instance takes them over at its next scan. `release: false`
   * leaves the leases to expire, as a crash would (for tests and drills).
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.scanTimer) clearInterval(this.scanTimer);
    this.unsubscribe?.();
    this.unsubscribe = null;
    const lives = [...this.owned.values()];
    for (const l of lives) this.drop(l);
    await Promise.all(lives.map((l) => l.chain));
    if (options.release === false) return;
    await Promise.all(
      lives.map((l) => this.store.release(l.state.transactionId, this.instanceId).catch(() => {})),
    );
  }

  // ---------------------------------------------------------------- begin

  /** Starts a saga; resolves once its state is stored and its first commands are sent. */
  async begin(
    sagaName: string,
    input: SagaContext = {},
    options: BeginOptions = {},
  ): Promise<{ transactionId: string; correlationId: string }> {
    if (!this.running) throw new NotConnectedError('the orchestrator is not started (call start())');
    const def = this.defs.get(sagaName);
    if (!def) throw new UnknownSagaError(String(sagaName));
    if (input === null || typeof input !== 'object' || Array.isArray(input))
      throw new ValidationError('input', 'must be an object');
    const transactionId = options.transactionId ?? uuidv7();
    if (typeof transactionId !== 'string' || !TX_ID.test(transactionId))
      throw new ValidationError('transactionId', 'must be 1-128 characters of [A-Za-z0-9_.-]');
    const correlationId = options.correlationId ?? transactionId;
    if (typeof correlationId !== 'string' || correlationId.length === 0 || correlationId.length > 256)
      throw new ValidationError('correlationId', 'must be a non-empty string of at most 256 characters');
    const now = Date.now();
    const steps: Record<string, StepState> = {};
    for (const s of def.steps.values())
      steps[s.name] = { name: s.name, status: 'pending', sends: 0, attempt: 0 };
    const state: SagaState = {
      transactionId,
      correlationId,
      sagaName: def.name,
      status: 'running',
      input,
      context: { ...input },
      stage: 0,
      steps,
      completed: [],
      toCompensate: [],
      compensationTotal: 0,
      createdAt: now,
      updatedAt: now,
      owners: [this.instanceId],
    };
    if (def.deadlineMs !== undefined) state.deadlineAt = now + def.deadlineMs;
    if (!(await this.store.create(state, this.instanceId, this.leaseMs)))
      throw new ValidationError('transactionId', `transaction ${transactionId} exists`);
    this.c.started++;
    const live: Live = { state, def, timers: new Map(), chain: Promise.resolve(), dropped: false };
    this.owned.set(transactionId, live);
    if (state.deadlineAt !== undefined) this.later(live, 'deadline:', state.deadlineAt - now);
    await this.run(live, (s, out) => {
      const root = this.statusEvent(s, undefined);
      out.push(root);
      s.lastEventId = root.id;
      this.advance(live, s, out);
    });
    return { transactionId, correlationId };
  }

  /** `begin` and `wait`. */
  async execute(
    sagaName: string,
    input: SagaContext = {},
    options: BeginOptions & { timeoutMs?: number } = {},
  ): Promise<SagaView> {
    const { transactionId } = await this.begin(sagaName, input, options);
    return this.wait(transactionId, options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs });
  }

  // ---------------------------------------------------------------- query and watch

  /** The transaction's state, wherever it runs. `UnknownTransactionError` when no store has it. */
  async status(transactionId: string): Promise<SagaView> {
    const s = await this.store.load(String(transactionId));
    if (!s) throw new UnknownTransactionError(String(transactionId));
    return this.view(s);
  }

  /** Transactions by status (all when omitted), newest first. */
  async list(query: { status?: SagaStatus; limit?: number } = {}): Promise<SagaView[]> {
    if (query.status !== undefined && !SAGA_STATUSES.includes(query.status))
      throw new ValidationError('status', `must be one of ${SAGA_STATUSES.join(', ')}`);
    const limit = query.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1)
      throw new ValidationError('limit', 'must be a positive integer');
    return (await this.store.list(query.status, limit)).map((s) => this.view(s));
  }

  /** How many transactions the store holds per status. */
  counts(): Promise<Record<SagaStatus, number>> {
    return this.store.counts();
  }

  /**
   * One transaction's events (commands, results, errors, compensations,
   * statuses), in publish order, from the bus's history: replay over the
   * transaction's lifetime by its correlation id (`replay({ correlationId })`).
   * Needs a transport with replay (memory, Redis Streams); events trimmed
   * from the history are missing.
   */
  async history(transactionId: string): Promise<AgentEvent[]> {
    const s = await this.store.load(String(transactionId));
    if (!s) throw new UnknownTransactionError(String(transactionId));
    const out: AgentEvent[] = [];
    const range = {
      from: s.createdAt - 1000,
      ...(s.finishedAt === undefined ? {} : { to: s.finishedAt + 5000 }),
    };
    await this.bus.replay({ pattern: 'saga.**', ...range, correlationId: s.correlationId }, (e) => {
      out.push(e);
    });
    return out;
  }

  /**
   * Calls `listener` with every `StatusEvent` of the transaction (`'*'`: of
   * every transaction), from whichever instance runs it. Returns a function
   * that stops watching.
   */
  watch(transactionId: string, listener: StatusListener): () => void {
    if (typeof listener !== 'function') throw new ValidationError('listener', 'must be a function');
    let set = this.watchers.get(transactionId);
    if (!set) this.watchers.set(transactionId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.watchers.delete(transactionId);
    };
  }

  /** Resolves with the transaction's final state; `TimeoutError` after `timeoutMs` (default 60,000). */
  async wait(transactionId: string, options: { timeoutMs?: number } = {}): Promise<SagaView> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const first = await this.status(transactionId);
    if (TERMINAL_STATUSES.includes(first.status)) return first;
    return new Promise<SagaView>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, v?: SagaView) => {
        if (done) return;
        done = true;
        stop();
        clearTimeout(timer);
        clearInterval(poll);
        if (err) reject(err);
        else resolve(v!);
      };
      const check = () =>
        this.status(transactionId).then(
          (v) => {
            if (TERMINAL_STATUSES.includes(v.status)) finish(null, v);
          },
          (e: Error) => finish(e),
        );
      const stop = this.watch(transactionId, (st) => {
        if (TERMINAL_STATUSES.includes(st.status)) void check();
      });
      // status events are the signal; the store is read again now and then in case one was missed
      const poll = setInterval(() => void check(), 500);
      const timer = setTimeout(
        () => finish(new TimeoutError(`saga ${transactionId} did not end within ${timeoutMs} ms`)),
        timeoutMs,
      );
      void check();
    });
  }

  stats(): SagaStats {
    const stepDurations: Record<string, HistogramSnapshot> = {};
    for (const [k, h] of this.stepHist) stepDurations[k] = h.snapshot();
    return {
      ...this.c,
      running: this.owned.size,
      stepDurations,
      stepLatency: this.allStepsHist.snapshot(),
      sagaDurations: this.sagaHist.snapshot(),
    };
  }

  /** Zeroes the counters and histograms of `stats()` (e.g. after a warm-up, or per scrape window). */
  resetStats(): void {
    for (const k of Object.keys(this.c) as (keyof typeof this.c)[]) this.c[k] = 0;
    this.stepHist.clear();
    this.sagaHist.reset();
    this.allStepsHist.reset();
  }

  // ---------------------------------------------------------------- events in

  private onEvent(event: AgentEvent): void {
    const d = event.data as { transactionId?: unknown };
    if (d === null || typeof d !== 'object' || typeof d.transactionId !== 'string') return;
    if (event.type.startsWith(`${SagaEventTypes.STATUS}.`)) {
      this.notify(event);
      return;
    }
    const live = this.owned.get(d.transactionId);
    if (!live) return; // another instance's saga (or a late outcome of one that ended)
    void this.run(live, (s, out) => this.onOutcome(live, s, out, event));
  }

  private notify(event: AgentEvent): void {
    const st = event.data as StatusEvent;
    for (const key of [st.transactionId, '*']) {
      const set = this.watchers.get(key);
      if (!set) continue;
      for (const l of [...set]) {
        try {
          l(st, event);
        } catch (err) {
          this.logger.error('saga watch listener threw', { error: String(err) });
        }
      }
    }
  }

  private onOutcome(live: Live, s: SagaState, out: AgentEvent[], event: AgentEvent): boolean {
    const d = event.data as ResultEvent | ErrorEvent;
    const ok = event.type.startsWith(`${SagaEventTypes.RESULT}.`);
    const step = typeof d.stepName === 'string' ? s.steps[d.stepName] : undefined;
    const def = step ? live.def.steps.get(step.name) : undefined;
    if (!step || !def) return this.stale();
    if (d.kind === 'compensation') {
      if (step.status !== 'compensating' || step.compCommandId !== d.commandId) return this.stale();
      this.clearTimer(live, `c:${step.name}`);
      if (ok) {
        step.status = 'compensated';
        s.toCompensate.shift();
        this.c.compensationsRun++;
      } else if (
        (step.compSends ?? 0) < def.compensationRetry.attempts &&
        (d as ErrorEvent).errorCode !== 'PERMANENT'
      ) {
        step.compRetryAt = Date.now() + retryDelay(def.compensationRetry, step.compSends ?? 1);
        step.compCommandId = undefined;
        step.status = 'compensation_wait';
        step.error = errorOf(d as ErrorEvent, step.name);
      } else {
        step.status = 'compensation_failed';
        step.error = errorOf(d as ErrorEvent, step.name);
        s.error = step.error;
        return this.finish(live, s, out, 'failed', event.id);
      }
      s.lastEventId = event.id;
      this.advance(live, s, out);
      return true;
    }
    if (step.status !== 'running' || step.commandId !== d.commandId) return this.stale();
    this.clearTimer(live, `s:${step.name}`);
    s.lastEventId = event.id;
    if (ok) {
      const r = d as ResultEvent;
      step.status = 'done';
      step.result = r.result;
      step.durationMs = nowMs() - (step.startedAt ?? nowMs());
      step.error = undefined;
      s.context = { ...s.context, ...(r.result ?? {}) };
      s.completed.push(step.name);
      this.c.stepsSucceeded++;
      this.hist(step.name).recordMs(step.durationMs);
      this.allStepsHist.recordMs(step.durationMs);
      this.advance(live, s, out);
      // progress, once the next step is under way (the end publishes its own status)
      if (s.status === 'running') out.push(this.statusEvent(s, event.id));
      return true;
    } else {
      const e = d as ErrorEvent;
      step.error = errorOf(e, step.name);
      if (step.sends < def.retry.attempts && e.errorCode !== 'PERMANENT') {
        step.status = 'retry_wait';
        step.retryAt = Date.now() + retryDelay(def.retry, step.sends);
        this.c.stepRetries++;
      } else {
        step.status = 'failed';
        this.c.stepsFailed++;
        s.failedStep ??= step.name;
        s.error ??= step.error;
      }
    }
    this.advance(live, s, out);
    return true;
  }

  private stale(): false {
    this.c.staleOutcomes++;
    return false;
  }

  // ---------------------------------------------------------------- the state machine

  /**
   * Decides what to do next from the state alone (so a takeover runs the same
   * code): dispatch pending steps of the current stage, move to the next
   * stage, start or continue compensation, or finish.
   */
  private advance(live: Live, s: SagaState, out: AgentEvent[]): void {
    const cause = s.lastEventId;
    if (s.status === 'running') {
      if (s.deadlineAt !== undefined && Date.now() >= s.deadlineAt) {
        this.expire(live, s);
      }
      for (;;) {
        const stage = live.def.stages[s.stage]!;
        const states = stage.map((d) => s.steps[d.name]!);
        if (states.some((x) => x.status === 'failed')) {
          if (states.some((x) => x.status === 'running' || x.status === 'retry_wait')) {
            // a parallel sibling is still out: its outcome decides whether it needs compensating
            for (const x of states) if (x.status === 'retry_wait') x.status = 'failed';
            if (states.some((x) => x.status === 'running')) return;
          }
          this.startCompensation(live, s, out, cause);
          return;
        }
        if (states.every((x) => x.status === 'done')) {
          s.stage++;
          if (s.stage >= live.def.stages.length) {
            this.finish(live, s, out, 'completed', cause);
            return;
          }
          continue;
        }
        for (const d of stage) {
          const x = s.steps[d.name]!;
          if (x.status === 'pending') this.send(live, s, out, d, x, true, cause);
          else if (x.status === 'retry_wait') {
            if ((x.retryAt ?? 0) <= Date.now()) this.send(live, s, out, d, x, true, cause);
            else this.later(live, `r:${d.name}`, x.retryAt! - Date.now());
          }
        }
        return;
      }
    }
    if (s.status === 'compensating') {
      const next = s.toCompensate[0];
      if (next === undefined) {
        this.finish(live, s, out, 'compensated', cause);
        return;
      }
      const d = live.def.steps.get(next)!;
      const x = s.steps[next]!;
      if (x.status === 'compensating') return; // waiting for its outcome
      if (x.status === 'compensation_wait' && (x.compRetryAt ?? 0) > Date.now()) {
        this.later(live, `cr:${next}`, x.compRetryAt! - Date.now());
        return;
      }
      this.sendCompensation(live, s, out, d, x, true, cause);
    }
  }

  /** The saga deadline passed: running steps end as failed (uncertain: they may still take effect). */
  private expire(live: Live, s: SagaState): void {
    const err: SagaErrorInfo = {
      message: `saga deadline of ${live.def.deadlineMs} ms passed`,
      type: 'TimeoutError',
      code: 'TIMEOUT',
    };
    for (const d of live.def.stages[s.stage]!) {
      const x = s.steps[d.name]!;
      if (x.status === 'running' || x.status === 'retry_wait' || x.status === 'pending') {
        if (x.status === 'running') x.uncertain = true;
        x.status = 'failed';
        x.error = err;
        this.clearTimer(live, `s:${d.name}`);
        s.failedStep ??= d.name;
      }
    }
    s.error ??= err;
  }

  private startCompensation(live: Live, s: SagaState, out: AgentEvent[], cause: string | undefined): void {
    s.status = 'compensating';
    const uncertain = live.def.stages[s.stage]!.filter((d) => s.steps[d.name]!.uncertain).map((d) => d.name);
    s.toCompensate = [...uncertain, ...[...s.completed].reverse()].filter(
      (n) => live.def.steps.get(n)!.compensate !== undefined,
    );
    s.compensationTotal = s.toCompensate.length;
    out.push(this.statusEvent(s, cause));
    this.advance(live, s, out);
  }

  private finish(
    live: Live,
    s: SagaState,
    out: AgentEvent[],
    status: 'completed' | 'compensated' | 'failed',
    cause: string | undefined,
  ): true {
    s.status = status;
    s.finishedAt = Date.now();
    for (const k of [...live.timers.keys()]) this.clearTimer(live, k);
    out.push(this.statusEvent(s, cause));
    return true;
  }

  private send(
    live: Live,
    s: SagaState,
    out: AgentEvent[],
    d: NormalizedStep,
    x: StepState,
    fresh: boolean,
    cause: string | undefined,
    countTry = true,
  ): void {
    if (fresh) {
      x.attempt++;
      x.commandId = `${s.transactionId}:${d.name}:${x.attempt}`;
      x.status = 'running';
      if (x.sends === 0) x.startedAt = nowMs();
      x.retryAt = undefined;
    }
    if (countTry || x.sends === 0) x.sends++;
    x.sentAt = Date.now();
    const e = sagaEvents.command(
      {
        transactionId: s.transactionId,
        correlationId: s.correlationId,
        sagaName: s.sagaName,
        workerName: d.worker,
        context: s.context,
        stepName: d.name,
        retryCount: x.sends - 1,
        commandId: x.commandId!,
      },
      { agentId: this.bus.nodeId, ...(cause === undefined ? {} : { causationId: cause }) },
    );
    out.push(e);
    s.lastEventId = e.id;
    this.later(live, `s:${d.name}`, d.timeoutMs);
  }

  private sendCompensation(
    live: Live,
    s: SagaState,
    out: AgentEvent[],
    d: NormalizedStep,
    x: StepState,
    fresh: boolean,
    cause: string | undefined,
    countTry = true,
  ): void {
    if (fresh) {
      x.compAttempt = (x.compAttempt ?? 0) + 1;
      x.compCommandId = `${s.transactionId}:${d.name}:c${x.compAttempt}`;
      x.status = 'compensating';
      x.compRetryAt = undefined;
    }
    if (countTry || !x.compSends) x.compSends = (x.compSends ?? 0) + 1;
    x.compSentAt = Date.now();
    const e = sagaEvents.compensation(
      {
        transactionId: s.transactionId,
        correlationId: s.correlationId,
        sagaName: s.sagaName,
        compensationWorker: d.compensate!,
        context: s.context,
        failedStep: s.failedStep ?? d.name,
        stepName: d.name,
        stepResult: x.result ?? null,
        retryCount: x.compSends - 1,
        commandId: x.compCommandId!,
      },
      { agentId: this.bus.nodeId, ...(cause === undefined ? {} : { causationId: cause }) },
    );
    out.push(e);
    s.lastEventId = e.id;
    this.later(live, `c:${d.name}`, d.timeoutMs);
  }

  /** A timer fired: a step or compensation timed out, a retry or the deadline is due. */
  private onTimer(live: Live, key: string): void {
    void this.run(live, (s, out) => {
      const [kind, name] = splitKey(key);
      if (kind === 'deadline') {
        if (s.status !== 'running') return false;
        // the timer is the signal (it can fire a millisecond before Date.now() reaches deadlineAt)
        this.expire(live, s);
        this.advance(live, s, out);
        return true;
      }
      const d = live.def.steps.get(name)!;
      const x = s.steps[name]!;
      if (kind === 's') {
        if (x.status !== 'running') return false;
        this.c.stepTimeouts++;
        if (x.sends < d.retry.attempts) {
          // the same command again: if the first send is still running, the worker answers once it is done
          this.c.stepRetries++;
          this.send(live, s, out, d, x, false, s.lastEventId);
          return true;
        }
        x.status = 'failed';
        x.uncertain = true;
        x.error = {
          message: `step ${name} timed out after ${x.sends} tries`,
          type: 'TimeoutError',
          code: 'TIMEOUT',
          step: name,
        };
        s.failedStep ??= name;
        s.error ??= x.error;
        this.c.stepsFailed++;
        this.advance(live, s, out);
        return true;
      }
      if (kind === 'c') {
        if (x.status !== 'compensating') return false;
        if ((x.compSends ?? 0) < d.compensationRetry.attempts) {
          this.sendCompensation(live, s, out, d, x, false, s.lastEventId);
          return true;
        }
        x.status = 'compensation_failed';
        x.error = {
          message: `compensation of ${name} timed out`,
          type: 'TimeoutError',
          code: 'TIMEOUT',
          step: name,
        };
        s.error = x.error;
        return this.finish(live, s, out, 'failed', s.lastEventId);
      }
      // a retry is due (r: step, cr: compensation)
      this.advance(live, s, out);
      return true;
    });
  }

  // ---------------------------------------------------------------- persistence

  /**
   * Serializes work on one transaction: `fn` changes a copy of the state and
   * lists events to publish; the copy is stored (fenced by the lease) before
   * any of them goes out, and becomes the live state only once stored.
   */
  private run(live: Live, fn: (s: SagaState, out: AgentEvent[]) => boolean | void): Promise<void> {
    const next = live.chain.then(async () => {
      if (live.dropped) return;
      const s = copyState(live.state);
      const out: AgentEvent[] = [];
      const changed = fn(s, out);
      if (changed === false) return;
      s.updatedAt = Date.now();
      let saved: boolean;
      try {
        saved = await this.store.save(s, this.instanceId);
      } catch (err) {
        // not stored: the live state stays as it was; a timer or a repeated outcome brings us back here
        this.logger.error('saga state not stored', { transactionId: s.transactionId, error: String(err) });
        this.rearm(live);
        return;
      }
      if (!saved) {
        this.drop(live);
        throw new LeaseLost(s.transactionId);
      }
      live.state = s;
      if (TERMINAL_STATUSES.includes(s.status)) this.ended(live);
      if (out.length > 0)
        try {
          await (out.length === 1 ? this.bus.publish(out[0]!) : this.bus.publishBatch(out));
        } catch (err) {
          // the step's timer re-sends the command
          this.logger.error('saga events not published', {
            types: out.map((e) => e.type),
            error: String(err),
          });
        }
    });
    live.chain = next.catch((err) => {
      if (!(err instanceof LeaseLost))
        this.logger.error('saga step failed', {
          transactionId: live.state.transactionId,
          error: String(err),
        });
    });
    return next.catch((err) => {
      if (err instanceof LeaseLost) return;
      throw err;
    });
  }

  private ended(live: Live): void {
    const s = live.state;
    if (s.status === 'completed') this.c.completed++;
    else if (s.status === 'compensated') this.c.compensated++;
    else this.c.failed++;
    this.sagaHist.recordMs((s.finishedAt ?? Date.now()) - s.createdAt);
    this.drop(live);
  }

  private drop(live: Live): void {
    live.dropped = true;
    for (const t of live.timers.values()) clearTimeout(t);
    live.timers.clear();
    if (this.owned.get(live.state.transactionId) === live) this.owned.delete(live.state.transactionId);
  }

  /** Timers for everything the stored state waits on (after a takeover, or a failed write). */
  private rearm(live: Live, keep = false): void {
    const s = live.state;
    const now = Date.now();
    if (s.deadlineAt !== undefined && s.status === 'running')
      this.later(live, 'deadline:', s.deadlineAt - now, keep);
    for (const d of live.def.steps.values()) {
      const x = s.steps[d.name]!;
      if (x.status === 'running')
        this.later(live, `s:${d.name}`, (x.sentAt ?? now) + d.timeoutMs - now, keep);
      else if (x.status === 'retry_wait') this.later(live, `r:${d.name}`, (x.retryAt ?? now) - now, keep);
      else if (x.status === 'compensating')
        this.later(live, `c:${d.name}`, (x.compSentAt ?? now) + d.timeoutMs - now, keep);
      else if (x.status === 'compensation_wait')
        this.later(live, `cr:${d.name}`, (x.compRetryAt ?? now) - now, keep);
    }
    // anything else waiting (a pending step whose send was never stored): look again in a while
    if (!keep) this.later(live, 'kick:', Math.min(1000, this.leaseMs));
  }

  private later(live: Live, key: string, ms: number, keep = false): void {
    if (keep && live.timers.has(key)) return;
    this.clearTimer(live, key);
    const t = setTimeout(
      () => {
        live.timers.delete(key);
        this.onTimer(live, key);
      },
      Math.max(0, ms),
    );
    t.unref();
    live.timers.set(key, t);
  }

  private clearTimer(live: Live, key: string): void {
    const t = live.timers.get(key);
    if (t) {
      clearTimeout(t);
      live.timers.delete(key);
    }
  }

  // ---------------------------------------------------------------- leases and takeover

  private async renew(): Promise<void> {
    const ids = [...this.owned.keys()];
    if (ids.length === 0) return;
    try {
      const lost = await this.store.renew(ids, this.instanceId, this.leaseMs);
      for (const id of lost) {
        const live = this.owned.get(id);
        if (live) this.drop(live);
      }
    } catch (err) {
      this.logger.error('saga lease renewal failed', { error: String(err) });
    }
  }

  private async scan(): Promise<void> {
    if (this.scanning || !this.running) return;
    this.scanning = true;
    try {
      for (const id of await this.store.orphans(100)) {
        if (!this.running) break;
        if (this.owned.has(id)) continue;
        const peek = await this.store.load(id);
        if (!peek || TERMINAL_STATUSES.includes(peek.status) || !this.defs.has(peek.sagaName)) continue;
        if (!(await this.store.acquire(id, this.instanceId, this.leaseMs))) continue;
        await this.adopt(id);
      }
    } catch (err) {
      this.logger.error('saga takeover scan failed', { error: String(err) });
    } finally {
      this.scanning = false;
    }
  }

  /** Continues a saga whose lease this instance just took. */
  private async adopt(id: string): Promise<void> {
    const state = await this.store.load(id);
    const def = state ? this.defs.get(state.sagaName) : undefined;
    if (!state || !def || TERMINAL_STATUSES.includes(state.status)) {
      await this.store.release(id, this.instanceId);
      return;
    }
    const live: Live = { state, def, timers: new Map(), chain: Promise.resolve(), dropped: false };
    this.owned.set(id, live);
    this.c.takenOver++;
    this.logger.info('saga taken over', { transactionId: id, from: state.owners.at(-1) });
    await this.run(live, (s, out) => {
      s.owners.push(this.instanceId);
      // whatever the last owner sent may never have gone out: send it again, same command id
      for (const d of live.def.steps.values()) {
        const x = s.steps[d.name]!;
        if (x.status === 'running') this.send(live, s, out, d, x, false, s.lastEventId, false);
        else if (x.status === 'compensating')
          this.sendCompensation(live, s, out, d, x, false, s.lastEventId, false);
      }
      this.advance(live, s, out);
    });
    // timers the sends above did not arm (a retry or the deadline due later)
    if (!live.dropped) this.rearm(live, true);
  }

  // ---------------------------------------------------------------- views

  private statusEvent(s: SagaState, cause: string | undefined): AgentEvent {
    const v = this.view(s);
    const e = sagaEvents.status(
      {
        transactionId: s.transactionId,
        correlationId: s.correlationId,
        sagaName: s.sagaName,
        status: s.status,
        ...(v.currentStep === undefined ? {} : { currentStep: v.currentStep }),
        progress: v.progress,
      },
      { agentId: this.bus.nodeId, ...(cause === undefined ? {} : { causationId: cause }) },
    );
    return e;
  }

  private view(s: SagaState): SagaView {
    const def = this.defs.get(s.sagaName);
    const names = Object.keys(s.steps);
    let currentStep: string | undefined;
    let progress: number;
    if (s.status === 'compensating' || s.status === 'compensated') {
      currentStep = s.status === 'compensating' ? s.toCompensate[0] : s.failedStep;
      progress = s.compensationTotal === 0 ? 1 : 1 - s.toCompensate.length / s.compensationTotal;
    } else {
      progress = s.status === 'completed' ? 1 : s.completed.length / Math.max(1, names.length);
      if (s.status === 'running') {
        const stage = def?.stages[s.stage];
        currentStep = stage?.find((d) => s.steps[d.name]!.status !== 'done')?.name;
      } else if (s.status !== 'completed') currentStep = s.failedStep;
    }
    const v: SagaView = {
      transactionId: s.transactionId,
      correlationId: s.correlationId,
      sagaName: s.sagaName,
      status: s.status,
      progress,
      context: s.context,
      steps: names.map((n) => {
        const x = s.steps[n]!;
        const sv: StepView = { name: n, status: x.status, tries: x.sends };
        if (x.result !== undefined) sv.result = x.result;
        if (x.error !== undefined) sv.error = x.error;
        if (x.durationMs !== undefined) sv.durationMs = x.durationMs;
        return sv;
      }),
      createdAt: s.createdAt,
      updatedAt: s.updatedAt,
      owners: [...s.owners],
    };
    if (currentStep !== undefined) v.currentStep = currentStep;
    if (s.failedStep !== undefined) v.failedStep = s.failedStep;
    if (s.error !== undefined) v.error = s.error;
    if (s.finishedAt !== undefined) v.finishedAt = s.finishedAt;
    return v;
  }

  private hist(step: string): LatencyHistogram {
    let h = this.stepHist.get(step);
    if (!h) this.stepHist.set(step, (h = new LatencyHistogram()));
    return h;
  }
}

/**
 * A copy deep enough for a transition: transitions replace `context`, results
 * and errors, and change only the step records and the arrays in place.
 */
function copyState(st: SagaState): SagaState {
  const steps: Record<string, StepState> = {};
  for (const k in st.steps) steps[k] = { ...st.steps[k]! };
  return {
    ...st,
    steps,
    completed: [...st.completed],
    toCompensate: [...st.toCompensate],
    owners: [...st.owners],
  };
}

/** Epoch ms with a fraction (step durations below 1 ms on the memory transport). */
const nowMs = () => performance.timeOrigin + performance.now();

function splitKey(key: string): [string, string] {
  const i = key.indexOf(':');
  return [key.slice(0, i), key.slice(i + 1)];
}

function errorOf(e: ErrorEvent, step: string): SagaErrorInfo {
  const info: SagaErrorInfo = { message: e.errorMessage, type: e.errorType, step };
  if (e.errorCode !== undefined) info.code = e.errorCode;
  return info;
}

function positive(setting: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ConfigError(setting, 'must be a positive integer');
  return v;
}
