import { EventEmitter } from 'node:events';
import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  type EventInput,
  EventPriority,
  PermanentError,
  uuidv7,
} from '@qe/core';
import type { Redis } from 'ioredis';
import { type AutoscaleOptions, Autoscaler, type PoolSample, type ScaleSignal } from './autoscale.js';
import {
  checkId,
  checkPositiveInt,
  checkStrings,
  DuplicateAgentError,
  InvalidSpecError,
  InvalidTransitionError,
  SwarmTimeoutError,
  TaskFailedError,
  type TaskFailReason,
  UnknownEntityError,
} from './errors.js';
import {
  type AgentDescriptor,
  type AgentStatus,
  type AnySwarmBus,
  type AssignData,
  type HeartbeatData,
  SwarmEventTypes as T,
  type TaskResultData,
} from './events.js';

// ------------------------------------------------------------------ public types

/** What a task handler receives. */
export interface TaskContext<I = unknown> {
  taskId: string;
  kind: string;
  input: I;
  attempt: number;
  agentId: string;
  /** Aborted when the task is cancelled or its attempt timed out. */
  signal: AbortSignal;
}

export type TaskHandler = (ctx: TaskContext) => unknown | Promise<unknown>;

export interface AgentSpec {
  id: string;
  type: string;
  capabilities?: string[];
  /** Tasks it runs at once. Default 1. */
  capacity?: number;
  /** Default: the type. */
  pool?: string;
  swarmId?: string;
  handler: TaskHandler;
}

export interface TaskSpec<I = unknown> {
  /** Default: a UUIDv7. */
  id?: string;
  /** A label for handlers and stats. Default `task`. */
  kind?: string;
  input?: I;
  /** Capabilities the agent must have, all of them. */
  requires?: string[];
  /** Only agents of this pool. */
  pool?: string;
  /** Only agents of this swarm. */
  swarmId?: string;
  /** 0 CRITICAL ... 4 BULK. Default NORMAL. */
  priority?: 0 | 1 | 2 | 3 | 4;
  /** Per attempt, ms. Default the node's `taskTimeoutMs`. */
  timeoutMs?: number;
  /** The task fails with reason `deadline` if it has no result by then (epoch ms). */
  deadline?: number;
  /** Task ids that must complete first (or be resolved by `task.dependency.resolve`). */
  dependsOn?: string[];
  /** Attempts before the task is dead-lettered. Default the node's `maxAttempts`. */
  maxAttempts?: number;
}

export type TaskState =
  | 'blocked'
  | 'waiting'
  | 'assigned'
  | 'completed'
  | 'failed'
  | 'dead-lettered'
  | 'cancelled';

export interface TaskView {
  id: string;
  kind: string;
  state: TaskState;
  requires: string[];
  pool?: string;
  swarmId?: string;
  priority: number;
  attempts: number;
  agentId?: string;
  submittedAt: number;
  deadline?: number;
  waitingFor: string[];
}

export interface AgentView extends HeartbeatData {
  lastSeen: number;
  local: boolean;
  /** Tasks this node has assigned to it and not seen end. */
  assignedByMe: number;
  /** Recent success rate (EWMA, 0..1) and latency (EWMA ms) as seen by this node's dispatcher. */
  successRate: number;
  latencyMs: number;
}

/** A user strategy: the id of one of `candidates` (all live, capable, with free capacity), or undefined to wait. */
export type StrategyFn = (task: TaskView, candidates: readonly AgentView[]) => string | undefined;
export type StrategyName = 'least-utilized' | 'performance-weighted';

export interface TaskResult<R = unknown> {
  taskId: string;
  result: R;
  agentId: string;
  attempts: number;
  /** When the handler started (epoch ms, the agent's clock). */
  startedAt: number;
  /** ms from assignment to the handler's start, on the agent's clock. */
  startDelayMs: number;
  durationMs: number;
}

export interface SwarmNodeOptions {
  bus: AnySwarmBus;
  /** Default: the bus's nodeId. */
  nodeId?: string;
  /** Default 1,000 ms. Every node's registry converges within one interval. */
  heartbeatIntervalMs?: number;
  /** An agent not heard for this long is declared failed. Default 3 heartbeat intervals. */
  failureTimeoutMs?: number;
  strategy?: StrategyName | StrategyFn;
  /** Attempts before a task is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** Per attempt. Default 60,000 ms. */
  taskTimeoutMs?: number;
  /** Time a pause waits for every agent of the swarm to acknowledge. Default 10,000 ms. */
  ackTimeoutMs?: number;
  /** Publish spec 003's lifecycle names beside spec 000's. Default true. */
  spec003Names?: boolean;
  /**
   * An ioredis client: of the nodes that notice an agent stopped heartbeating,
   * only the first (`SET NX`) publishes `agent.error`/`agent.failed`. Without
   * it each node that notices first-hand publishes them.
   */
  redis?: Redis;
  /** Prefix of the Redis keys. Default `qe:swarm`. */
  keyPrefix?: string;
}

export interface SwarmState {
  id: string;
  state: 'initialized' | 'running' | 'paused' | 'completed' | 'error';
  phase?: string;
  /** Allowed phase transitions, `{ from: [to, ...] }`; absent: any. */
  phases?: Record<string, string[]>;
  error?: string;
  updatedAt: number;
}

export interface TaskCounts {
  blocked: number;
  waiting: number;
  assigned: number;
  completed: number;
  failed: number;
  deadLettered: number;
  cancelled: number;
  reassigned: number;
  rejected: number;
  timedOut: number;
  duplicates: number;
}

export interface PoolStats {
  agents: number;
  capacity: number;
  active: number;
  /** active / capacity in percent (0 when the pool has no capacity). */
  utilization: number;
  waiting: number;
  /** Tasks completed per second over the last 10 s. */
  throughput: number;
}

/** `getOrchestrationStats()` (spec 003): JSON-safe, numbers and strings only. */
export interface OrchestrationStats {
  nodeId: string;
  totalAgents: number;
  activeAgents: number;
  pausedAgents: number;
  failedAgents: number;
  /** Over live agents, in percent (spec 003: `${stats.averageUtilization}%`). */
  averageUtilization: number;
  pools: Record<string, PoolStats>;
  tasks: TaskCounts;
  swarms: Record<string, { state: string; phase: string | null }>;
  scaleSignals: ScaleSignal[];
  agentFailuresDetected: number;
  heartbeatsReceived: number;
  /** Scheduling passes that left a waiting task with no agent able to take it. */
  unassignable: number;
  timestamp: number;
}

interface TaskRecord {
  id: string;
  kind: string;
  input: unknown;
  requires: string[];
  reqKey: string;
  pool: string | undefined;
  swarmId: string | undefined;
  priority: 0 | 1 | 2 | 3 | 4;
  timeoutMs: number;
  deadline: number | undefined;
  maxAttempts: number;
  waitingFor: Set<string>;
  state: TaskState;
  attempts: number;
  agentId: string | undefined;
  submittedAt: number;
  timer: NodeJS.Timeout | undefined;
  resolve: (r: TaskResult) => void;
  reject: (e: Error) => void;
}

interface LocalAgent {
  desc: AgentDescriptor;
  handler: TaskHandler;
  status: AgentStatus;
  running: Map<string, AbortController>;
  completed: number;
  failed: number;
  drained?: () => void;
}

const NODE_KEYS = [
  'bus',
  'nodeId',
  'heartbeatIntervalMs',
  'failureTimeoutMs',
  'strategy',
  'maxAttempts',
  'taskTimeoutMs',
  'ackTimeoutMs',
  'spec003Names',
  'redis',
  'keyPrefix',
];
const AGENT_KEYS = ['id', 'type', 'capabilities', 'capacity', 'pool', 'swarmId', 'handler'];
const TASK_KEYS = [
  'id',
  'kind',
  'input',
  'requires',
  'pool',
  'swarmId',
  'priority',
  'timeoutMs',
  'deadline',
  'dependsOn',
  'maxAttempts',
];
const SWARM_TRANSITIONS: Record<string, SwarmState['state'][]> = {
  start: ['initialized'],
  pause: ['running'],
  resume: ['paused'],
  complete: ['running', 'paused'],
  error: ['initialized', 'running', 'paused'],
};

/**
 * One node of a swarm: hosts agents (any number, none for a pure dispatcher),
 * keeps the registry of every agent on every node from heartbeats, dispatches
 * the tasks submitted on it, and applies swarm commands. Run one per process.
 *
 * Events: `agentJoined`, `agentFailed`, `agentLeft`, `taskAssigned`,
 * `taskCompleted`, `taskFailed`, `swarm` (state changes), `scale` (signals).
 */
export class SwarmNode extends EventEmitter {
  readonly bus: AnySwarmBus;
  readonly nodeId: string;
  readonly heartbeatIntervalMs: number;
  readonly failureTimeoutMs: number;
  private readonly strategy: StrategyName | StrategyFn;
  private readonly maxAttempts: number;
  private readonly taskTimeoutMs: number;
  private readonly ackTimeoutMs: number;
  private readonly spec003: boolean;
  private readonly redis: Redis | undefined;
  private readonly keyPrefix: string;

  private readonly local = new Map<string, LocalAgent>();
  private readonly agents = new Map<string, AgentView>();
  private readonly tasks = new Map<string, TaskRecord>();
  private readonly queues: TaskRecord[][] = [[], [], [], [], []];
  private readonly heads = [0, 0, 0, 0, 0];
  private readonly swarms = new Map<string, SwarmState>();
  private readonly completedIds = new Set<string>();
  /** dependency id -> blocked tasks waiting on it */
  private readonly dependents = new Map<string, Set<TaskRecord>>();
  /** tasks with a deadline */
  private readonly withDeadline = new Set<TaskRecord>();
  private readonly failedIds = new Set<string>();
  private readonly fullUntil = new Map<string, number>();
  private readonly completions: { at: number; pool: string }[] = [];
  private readonly autoscalers: Autoscaler[] = [];
  private readonly signals: ScaleSignal[] = [];
  private readonly unsubs: (() => void)[] = [];
  private readonly outbox: { ev: EventInput; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private counts: TaskCounts = {
    blocked: 0,
    waiting: 0,
    assigned: 0,
    completed: 0,
    failed: 0,
    deadLettered: 0,
    cancelled: 0,
    reassigned: 0,
    rejected: 0,
    timedOut: 0,
    duplicates: 0,
  };
  private failuresDetected = 0;
  private heartbeats = 0;
  private unassignable = 0;
  private rr = 0;
  private scheduled = false;
  private hbTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;

  constructor(options: SwarmNodeOptions) {
    super();
    if (options === null || typeof options !== 'object')
      throw new ConfigError('options', 'must be an object');
    assertKnownKeys(options, NODE_KEYS, '');
    const bus = options.bus;
    if (!bus || typeof bus.publish !== 'function' || typeof bus.subscribe !== 'function')
      throw new ConfigError('bus', 'must be a QEEventBus');
    this.bus = bus;
    this.nodeId = checkId('nodeId', options.nodeId ?? bus.nodeId);
    this.heartbeatIntervalMs = checkPositiveInt('heartbeatIntervalMs', options.heartbeatIntervalMs, 1000, 10);
    this.failureTimeoutMs = checkPositiveInt(
      'failureTimeoutMs',
      options.failureTimeoutMs,
      3 * this.heartbeatIntervalMs,
      this.heartbeatIntervalMs + 1,
    );
    const s = options.strategy ?? 'least-utilized';
    if (typeof s !== 'function' && s !== 'least-utilized' && s !== 'performance-weighted')
      throw new InvalidSpecError(
        'strategy',
        "must be 'least-utilized', 'performance-weighted' or a function (task, candidates) => agentId",
      );
    this.strategy = s;
    this.maxAttempts = checkPositiveInt('maxAttempts', options.maxAttempts, 3);
    this.taskTimeoutMs = checkPositiveInt('taskTimeoutMs', options.taskTimeoutMs, 60_000);
    this.ackTimeoutMs = checkPositiveInt('ackTimeoutMs', options.ackTimeoutMs, 10_000);
    this.spec003 = options.spec003Names ?? true;
    if (options.redis !== undefined && typeof (options.redis as { set?: unknown }).set !== 'function')
      throw new ConfigError('redis', 'must be an ioredis client');
    this.redis = options.redis;
    this.keyPrefix = options.keyPrefix ?? 'qe:swarm';
  }

  /** Subscribes to the swarm's events and starts heartbeats and failure detection. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const me = this.nodeId;
    const subs = [
      this.bus.subscribe(
        [T.AGENT_SPAWN, T.AGENT_HEARTBEAT, T.AGENT_STATUS_UPDATE, T.AGENT_TERMINATE, T.AGENT_FAILED],
        (e: AgentEvent) => this.onAgentEvent(e),
      ),
      this.bus.subscribe([T.TASK_ASSIGNED, T.TASK_CANCEL], (e: AgentEvent) => this.onAssign(e), {
        filter: (e: AgentEvent) => (e.data as { nodeId?: string }).nodeId === me,
        maxConcurrency: 256,
      }),
      this.bus.subscribe(
        [T.TASK_COMPLETE, T.TASK_FAIL, T.TASK_UPDATE, T.TASK_DEPENDENCY_RESOLVE],
        (e: AgentEvent) => this.onTaskEvent(e),
        { maxConcurrency: 64 },
      ),
      this.bus.subscribe('swarm.**', (e: AgentEvent) => this.onSwarmEvent(e)),
    ];
    this.unsubs.push(...subs);
    await Promise.all(subs.map((u) => u.ready));
    this.hbTimer = setInterval(() => void this.heartbeat(), this.heartbeatIntervalMs);
    this.hbTimer.unref();
    const tick = Math.max(5, Math.min(250, Math.floor(this.heartbeatIntervalMs / 4)));
    this.checkTimer = setInterval(() => this.check(), tick);
    this.checkTimer.unref();
  }

  /**
   * Stops heartbeats and subscriptions. Local agents are terminated first
   * (`agent.terminate`), so other nodes hand their tasks on at once. Tasks
   * this node dispatched and that have no result yet are failed locally
   * (reason `cancelled`): their submitter is this process.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.hbTimer);
    clearInterval(this.checkTimer);
    for (const id of [...this.local.keys()])
      await this.terminateAgent(id, { drain: false }).catch(() => undefined);
    for (const u of this.unsubs.splice(0)) u();
    for (const t of this.tasks.values())
      if (!isTerminal(t.state)) this.finish(t, 'cancelled', 'cancelled', 'the node stopped');
    for (const a of this.autoscalers) a.stop();
  }

  // ---------------------------------------------------------------- agents

  /** Registers an agent hosted by this node; every node knows it within one heartbeat interval. */
  async registerAgent(spec: AgentSpec): Promise<AgentDescriptor> {
    this.assertRunning();
    if (spec === null || typeof spec !== 'object') throw new InvalidSpecError('agent', 'must be an object');
    assertKnownKeys(spec, AGENT_KEYS, 'agent.', {}, 'validation');
    const id = checkId('id', spec.id);
    const type = checkId('type', spec.type);
    if (typeof spec.handler !== 'function') throw new InvalidSpecError('handler', 'must be a function');
    if (this.local.has(id)) throw new DuplicateAgentError(id);
    const desc: AgentDescriptor = {
      id,
      type,
      capabilities: checkStrings('capabilities', spec.capabilities),
      capacity: checkPositiveInt('capacity', spec.capacity, 1),
      pool: spec.pool === undefined ? type : checkId('pool', spec.pool),
      nodeId: this.nodeId,
    };
    if (spec.swarmId !== undefined) desc.swarmId = checkId('swarmId', spec.swarmId);
    const swarm = desc.swarmId ? this.swarms.get(desc.swarmId) : undefined;
    const agent: LocalAgent = {
      desc,
      handler: spec.handler,
      status: swarm && swarm.state === 'paused' ? 'paused' : 'active',
      running: new Map(),
      completed: 0,
      failed: 0,
    };
    this.local.set(id, agent);
    this.upsert(this.heartbeatOf(agent), true);
    const base = { agentType: type, ...desc };
    const events = [
      { type: T.AGENT_SPAWN, agentId: id, swarmId: desc.swarmId, data: base },
      { type: T.AGENT_CAPABILITY_REGISTER, agentId: id, swarmId: desc.swarmId, data: { ...base } },
      ...(this.spec003
        ? [
            { type: T.AGENT_SPAWNED, agentId: id, swarmId: desc.swarmId, data: { ...base } },
            { type: T.AGENT_STARTED, agentId: id, swarmId: desc.swarmId, data: { ...base } },
          ]
        : []),
    ];
    await this.bus.publishBatch(events.map(stripUndefined));
    this.poke();
    return { ...desc, capabilities: [...desc.capabilities] };
  }

  /**
   * Takes an agent out. With `drain` (default) it takes no new task and the
   * call resolves once its running tasks ended; without, running tasks are
   * aborted and their dispatchers hand them on.
   */
  async terminateAgent(agentId: string, options: { drain?: boolean; reason?: string } = {}): Promise<void> {
    const a = this.local.get(agentId);
    if (!a) throw new UnknownEntityError('agent', agentId);
    a.status = 'draining';
    if (options.drain !== false && a.running.size > 0) {
      await this.publishStatus(a);
      await new Promise<void>((r) => {
        a.drained = r;
      });
    }
    for (const c of a.running.values()) c.abort(new Error('agent terminated'));
    a.status = 'terminated';
    this.local.delete(agentId);
    const data = stripUndefined({ ...a.desc, reason: options.reason ?? 'terminated' });
    const ev: EventInput[] = [{ type: T.AGENT_TERMINATE, agentId, swarmId: a.desc.swarmId, data }];
    if (this.spec003)
      ev.push({ type: T.AGENT_TERMINATED, agentId, swarmId: a.desc.swarmId, data: { ...data } });
    this.removeAgent(agentId, 'terminated');
    await this.bus.publishBatch(ev.map(stripUndefined)).catch(() => undefined);
  }

  /** This node's view of every agent (live, paused, draining; failed ones for one failure timeout). */
  listAgents(filter: { pool?: string; swarmId?: string; status?: AgentStatus } = {}): AgentView[] {
    const out: AgentView[] = [];
    for (const a of this.agents.values()) {
      if (filter.pool !== undefined && a.pool !== filter.pool) continue;
      if (filter.swarmId !== undefined && a.swarmId !== filter.swarmId) continue;
      if (filter.status !== undefined && a.status !== filter.status) continue;
      out.push({ ...a, capabilities: [...a.capabilities] });
    }
    return out;
  }

  getAgent(agentId: string): AgentView | undefined {
    const a = this.agents.get(agentId);
    return a ? { ...a, capabilities: [...a.capabilities] } : undefined;
  }

  private heartbeatOf(a: LocalAgent): HeartbeatData {
    const active = a.running.size;
    return stripUndefined({
      ...a.desc,
      capabilities: [...a.desc.capabilities],
      status: a.status,
      active,
      load: active / a.desc.capacity,
      completed: a.completed,
      failed: a.failed,
    }) as HeartbeatData;
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped || this.local.size === 0) return;
    const events = [...this.local.values()].map((a) =>
      stripUndefined({
        type: T.AGENT_HEARTBEAT,
        agentId: a.desc.id,
        swarmId: a.desc.swarmId,
        priority: EventPriority.HIGH,
        data: this.heartbeatOf(a),
      }),
    );
    for (const a of this.local.values()) this.upsert(this.heartbeatOf(a), true);
    try {
      await this.bus.publishBatch(events);
    } catch (err) {
      this.reportError(err);
    }
  }

  private async publishStatus(a: LocalAgent): Promise<void> {
    const data = this.heartbeatOf(a);
    this.upsert(data, true);
    await this.bus.publish(
      stripUndefined({ type: T.AGENT_STATUS_UPDATE, agentId: a.desc.id, swarmId: a.desc.swarmId, data }),
    );
  }

  private upsert(hb: HeartbeatData, fromLocal = false): void {
    const now = Date.now();
    const prev = this.agents.get(hb.id);
    const view: AgentView = {
      ...hb,
      lastSeen: now,
      local: this.local.has(hb.id),
      assignedByMe: prev?.assignedByMe ?? 0,
      successRate: prev?.successRate ?? 1,
      latencyMs: prev?.latencyMs ?? 0,
    };
    this.agents.set(hb.id, view);
    if (!fromLocal) this.fullUntil.delete(hb.id);
    if (!prev || prev.status === 'failed' || prev.status === 'terminated') {
      this.emit('agentJoined', { ...view });
    }
    if (!prev || prev.status !== view.status || prev.active > view.active) this.poke();
  }

  private onAgentEvent(e: AgentEvent): void {
    const d = e.data as HeartbeatData & { reason?: string; detectedBy?: string };
    if (typeof d !== 'object' || d === null || typeof d.id !== 'string') return;
    if (this.local.has(d.id)) return; // our own agents are known first-hand
    switch (e.type) {
      case T.AGENT_HEARTBEAT:
        this.heartbeats++;
        this.upsert(d);
        break;
      case T.AGENT_SPAWN:
        this.upsert({ ...d, status: d.status ?? 'active', active: 0, load: 0, completed: 0, failed: 0 });
        break;
      case T.AGENT_STATUS_UPDATE:
        this.upsert(d);
        break;
      case T.AGENT_TERMINATE:
        this.removeAgent(d.id, 'terminated');
        break;
      case T.AGENT_FAILED: {
        const a = this.agents.get(d.id);
        if (a && a.status !== 'failed' && a.status !== 'terminated' && e.timestamp >= a.lastSeen - 1)
          this.declareFailed(a, false, d.detectedBy);
        break;
      }
    }
  }

  private removeAgent(agentId: string, why: 'terminated' | 'failed'): void {
    const a = this.agents.get(agentId);
    if (!a) return;
    a.status = why;
    if (why === 'terminated') this.agents.delete(agentId);
    else a.lastSeen = Date.now(); // a failed agent stays visible for one failure timeout
    this.emit(why === 'failed' ? 'agentFailed' : 'agentLeft', { ...a });
    // hand on what this node had given it
    for (const t of this.tasks.values()) {
      if (t.state === 'assigned' && t.agentId === agentId) this.retry(t, `agent ${agentId} ${why}`, true);
    }
    this.poke();
  }

  private declareFailed(a: AgentView, publish: boolean, detectedBy = this.nodeId): void {
    this.failuresDetected++;
    this.removeAgent(a.id, 'failed');
    if (!publish) return;
    const data = stripUndefined({
      ...a,
      lastSeen: undefined,
      local: undefined,
      detectedBy,
      silentForMs: Date.now() - a.lastSeen,
    });
    const ev: EventInput[] = [
      {
        type: T.AGENT_ERROR,
        agentId: a.id,
        swarmId: a.swarmId,
        data: { ...data, message: `no heartbeat for ${this.failureTimeoutMs} ms`, code: 'HEARTBEAT_TIMEOUT' },
      },
    ];
    if (this.spec003) ev.push({ type: T.AGENT_FAILED, agentId: a.id, swarmId: a.swarmId, data });
    const send = () => this.bus.publishBatch(ev.map(stripUndefined));
    if (!this.redis) {
      void send().catch((err: unknown) => this.reportError(err));
      return;
    }
    // one declaration per failure across nodes: the key lives one failure timeout
    void this.redis
      .set(`${this.keyPrefix}:agent-failed:{${a.id}}`, this.nodeId, 'PX', this.failureTimeoutMs, 'NX')
      .then((ok) => (ok === 'OK' ? send() : undefined))
      .catch((err: unknown) => this.reportError(err));
  }

  /** Periodic: failure detection, deadlines, forgetting failed agents. */
  private check(): void {
    const now = Date.now();
    if (this.counts.waiting > 0) this.poke(); // agents may have freed up (a rejection's back-off ended)
    for (const a of this.agents.values()) {
      if (a.local) continue;
      if (a.status === 'failed') {
        if (now - a.lastSeen > this.failureTimeoutMs) this.agents.delete(a.id);
      } else if (now - a.lastSeen > this.failureTimeoutMs) this.declareFailed(a, true);
    }
    for (const t of this.withDeadline) {
      if (t.deadline !== undefined && now > t.deadline && !isTerminal(t.state)) {
        if (t.state === 'assigned') this.cancelRemote(t, 'deadline');
        this.finish(t, 'failed', 'deadline', 'its deadline passed');
      }
    }
  }

  // ---------------------------------------------------------------- tasks: submitter side

  /**
   * Submits a task and resolves with its result. It waits (visible in
   * `getOrchestrationStats().tasks.waiting`) while no agent can take it.
   * Rejects with `TaskFailedError` if it failed for good, was dead-lettered
   * after `maxAttempts`, was cancelled or passed its deadline.
   */
  submit<R = unknown>(spec: TaskSpec): Promise<TaskResult<R>> {
    this.assertRunning();
    const t = this.makeTask(spec);
    const p = new Promise<TaskResult<R>>((resolve, reject) => {
      t.resolve = resolve as (r: TaskResult) => void;
      t.reject = reject;
    });
    this.tasks.set(t.id, t);
    for (const dep of [...t.waitingFor]) {
      if (this.completedIds.has(dep)) t.waitingFor.delete(dep);
      else if (this.failedIds.has(dep)) {
        queueMicrotask(() => this.finish(t, 'failed', 'dependency-failed', `dependency ${dep} failed`));
        return p;
      }
    }
    void this.send(
      stripUndefined({
        type: T.TASK_CREATE,
        agentId: this.nodeId,
        swarmId: t.swarmId,
        priority: t.priority,
        data: stripUndefined({
          taskId: t.id,
          kind: t.kind,
          requires: t.requires,
          pool: t.pool,
          dependsOn: [...t.waitingFor],
          deadline: t.deadline,
          dispatcher: this.nodeId,
        }),
      }),
    ).catch((err: unknown) => this.reportError(err));
    if (t.deadline !== undefined) this.withDeadline.add(t);
    if (t.waitingFor.size > 0) {
      t.state = 'blocked';
      this.counts.blocked++;
      for (const dep of t.waitingFor) {
        let set = this.dependents.get(dep);
        if (!set) this.dependents.set(dep, (set = new Set()));
        set.add(t);
      }
    } else this.enqueue(t);
    return p;
  }

  private makeTask(spec: TaskSpec): TaskRecord {
    if (spec === null || typeof spec !== 'object') throw new InvalidSpecError('task', 'must be an object');
    assertKnownKeys(spec, TASK_KEYS, 'task.', {}, 'validation');
    const id = spec.id === undefined ? uuidv7() : checkId('id', spec.id);
    if (this.tasks.has(id)) throw new InvalidSpecError('id', `task ${id} was already submitted on this node`);
    const priority = spec.priority ?? EventPriority.NORMAL;
    if (![0, 1, 2, 3, 4].includes(priority)) throw new InvalidSpecError('priority', 'must be 0..4');
    if (spec.deadline !== undefined && (typeof spec.deadline !== 'number' || !Number.isFinite(spec.deadline)))
      throw new InvalidSpecError('deadline', 'must be an epoch time in ms');
    const requires = checkStrings('requires', spec.requires).sort();
    const pool = spec.pool === undefined ? undefined : checkId('pool', spec.pool);
    const swarmId = spec.swarmId === undefined ? undefined : checkId('swarmId', spec.swarmId);
    return {
      id,
      kind: spec.kind === undefined ? 'task' : checkId('kind', spec.kind),
      input: spec.input,
      requires,
      reqKey: `${requires.join(',')}|${pool ?? ''}|${swarmId ?? ''}`,
      pool,
      swarmId,
      priority: priority as 0,
      timeoutMs: checkPositiveInt('timeoutMs', spec.timeoutMs, this.taskTimeoutMs),
      deadline: spec.deadline,
      maxAttempts: checkPositiveInt('maxAttempts', spec.maxAttempts, this.maxAttempts),
      waitingFor: new Set(checkStrings('dependsOn', spec.dependsOn)),
      state: 'waiting',
      attempts: 0,
      agentId: undefined,
      submittedAt: Date.now(),
      timer: undefined,
      resolve: () => {},
      reject: () => {},
    };
  }

  /** Cancels a task this node dispatched: `task.cancel`, its handler's signal aborts, `submit` rejects. */
  async cancel(taskId: string, reason = 'cancelled'): Promise<boolean> {
    const t = this.tasks.get(taskId);
    if (!t) throw new UnknownEntityError('task', taskId);
    if (isTerminal(t.state)) return false;
    if (t.state === 'assigned') this.cancelRemote(t, reason);
    this.finish(t, 'cancelled', 'cancelled', reason);
    return true;
  }

  /** Marks an external dependency as resolved for every task waiting on it (publishes `task.dependency.resolve`). */
  async resolveDependency(dependencyId: string): Promise<void> {
    checkId('dependencyId', dependencyId);
    await this.bus.publish({
      type: T.TASK_DEPENDENCY_RESOLVE,
      agentId: this.nodeId,
      data: { taskId: dependencyId, dependencyId, resolvedBy: this.nodeId },
    });
  }

  getTask(taskId: string): TaskView | undefined {
    const t = this.tasks.get(taskId);
    return t ? viewOf(t) : undefined;
  }

  listTasks(state?: TaskState): TaskView[] {
    const out: TaskView[] = [];
    for (const t of this.tasks.values()) if (state === undefined || t.state === state) out.push(viewOf(t));
    return out;
  }

  private cancelRemote(t: TaskRecord, reason: string): void {
    const a = t.agentId ? this.agents.get(t.agentId) : undefined;
    if (!a) return;
    void this.bus
      .publish({
        type: T.TASK_CANCEL,
        agentId: this.nodeId,
        data: { taskId: t.id, agentId: a.id, nodeId: a.nodeId, attempt: t.attempts, reason },
      })
      .catch(() => undefined);
  }

  private enqueue(t: TaskRecord, front = false): void {
    t.state = 'waiting';
    this.counts.waiting++;
    const q = this.queues[t.priority]!;
    if (front && this.heads[t.priority]! > 0) q[--this.heads[t.priority]!] = t;
    else if (front) q.unshift(t);
    else q.push(t);
    this.poke();
  }

  private poke(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.schedule();
    });
  }

  private eligibleAgents(t: TaskRecord, now: number): AgentView[] {
    const out: AgentView[] = [];
    for (const a of this.agents.values()) {
      if (a.status !== 'active') continue;
      if (t.pool !== undefined && a.pool !== t.pool) continue;
      if (t.swarmId !== undefined && a.swarmId !== t.swarmId) continue;
      if (a.swarmId !== undefined) {
        const s = this.swarms.get(a.swarmId);
        if (s && s.state !== 'running' && s.state !== 'initialized') continue;
      }
      if (a.assignedByMe >= a.capacity) continue;
      const full = this.fullUntil.get(a.id);
      if (full !== undefined && full > now) continue;
      let ok = true;
      for (const c of t.requires)
        if (!a.capabilities.includes(c)) {
          ok = false;
          break;
        }
      if (ok) out.push(a);
    }
    return out;
  }

  private schedule(): void {
    const now = Date.now();
    const noneFor = new Set<string>();
    let free = 0;
    for (const a of this.agents.values())
      if (a.status === 'active') free += Math.max(0, a.capacity - a.assignedByMe);
    for (let p = 0; p < 5; p++) {
      const q = this.queues[p]!;
      let i = this.heads[p]!;
      for (; i < q.length && free > 0; i++) {
        const t = q[i]!;
        if (t.state !== 'waiting') {
          if (i === this.heads[p]) this.heads[p]!++;
          continue;
        }
        if (noneFor.has(t.reqKey)) continue;
        const candidates = this.eligibleAgents(t, now);
        const chosen = candidates.length ? this.choose(t, candidates) : undefined;
        if (!chosen) {
          noneFor.add(t.reqKey);
          continue;
        }
        if (i === this.heads[p]) this.heads[p]!++;
        else q.splice(i--, 1);
        free--;
        this.assign(t, chosen, now);
      }
      if (this.heads[p]! > 1024 && this.heads[p]! * 2 > q.length) {
        q.splice(0, this.heads[p]!);
        this.heads[p] = 0;
      }
    }
    if (this.counts.waiting > 0) this.unassignable++;
  }

  private choose(t: TaskRecord, candidates: AgentView[]): AgentView | undefined {
    const s = this.strategy;
    if (typeof s === 'function') {
      let id: string | undefined;
      try {
        id = s(
          viewOf(t),
          candidates.map((c) => ({ ...c })),
        );
      } catch (err) {
        this.reportError(err);
        return undefined;
      }
      return id === undefined ? undefined : candidates.find((c) => c.id === id);
    }
    // rotate the starting point so equal candidates share the work
    const n = candidates.length;
    const start = this.rr++ % n;
    let best: AgentView | undefined;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (let k = 0; k < n; k++) {
      const a = candidates[(start + k) % n]!;
      const util = a.assignedByMe / a.capacity;
      let score: number;
      if (s === 'least-utilized') score = -util;
      else {
        // success rate, penalized by latency relative to the fastest candidate's scale, times free share
        const lat = a.latencyMs > 0 ? a.latencyMs : 1;
        score = (a.successRate ** 2 * (1 - util)) / Math.log2(2 + lat);
      }
      if (score > bestScore) {
        bestScore = score;
        best = a;
      }
    }
    return best;
  }

  private assign(t: TaskRecord, a: AgentView, now: number): void {
    this.counts.waiting--;
    this.counts.assigned++;
    t.state = 'assigned';
    t.attempts++;
    t.agentId = a.id;
    a.assignedByMe++;
    const attempt = t.attempts;
    t.timer = setTimeout(() => {
      if (t.state === 'assigned' && t.attempts === attempt) {
        this.counts.timedOut++;
        this.cancelRemote(t, 'timeout');
        this.retry(t, `attempt ${attempt} timed out after ${t.timeoutMs} ms`, true);
      }
    }, t.timeoutMs);
    t.timer.unref?.();
    const data: AssignData = {
      taskId: t.id,
      agentId: a.id,
      nodeId: a.nodeId,
      dispatcher: this.nodeId,
      attempt,
      kind: t.kind,
      input: t.input,
      timeoutMs: t.timeoutMs,
      assignedAt: now,
    };
    this.emit('taskAssigned', { taskId: t.id, agentId: a.id, attempt });
    this.send(
      stripUndefined({
        type: T.TASK_ASSIGNED,
        agentId: this.nodeId,
        swarmId: a.swarmId,
        priority: t.priority,
        data,
      }),
    ).catch((err: unknown) => {
      this.reportError(err);
      if (t.state === 'assigned' && t.attempts === attempt)
        this.retry(t, 'assignment could not be published', false);
    });
  }

  /** Ends the current attempt; the task goes back to waiting, or is dead-lettered after its last attempt. */
  private retry(t: TaskRecord, why: string, counted: boolean): void {
    if (t.state !== 'assigned') return;
    if (!counted) t.attempts--;
    if (t.attempts >= t.maxAttempts) {
      this.finish(t, 'dead-lettered', 'dead-lettered', `${why}; ${t.attempts} attempts`);
      return;
    }
    if (counted) this.counts.reassigned++;
    this.release(t);
    this.enqueue(t, true);
  }

  /** Ends the current attempt's bookkeeping; the caller moves the task on (its state is still `assigned`). */
  private release(t: TaskRecord): void {
    clearTimeout(t.timer);
    this.counts.assigned--;
    const a = t.agentId ? this.agents.get(t.agentId) : undefined;
    if (a && a.assignedByMe > 0) a.assignedByMe--;
  }

  private finish(
    t: TaskRecord,
    state: TaskState,
    reason: TaskFailReason | 'completed',
    message: string,
  ): void {
    if (isTerminal(t.state)) return;
    if (t.state === 'assigned') this.release(t);
    else if (t.state === 'waiting') this.counts.waiting--;
    else if (t.state === 'blocked') this.counts.blocked--;
    t.state = state;
    clearTimeout(t.timer);
    if (state === 'cancelled') this.counts.cancelled++;
    else if (state === 'dead-lettered') this.counts.deadLettered++;
    else if (state === 'failed') this.counts.failed++;
    this.failedIds.add(t.id);
    trim(this.failedIds);
    const err = new TaskFailedError(t.id, reason as TaskFailReason, message, t.attempts);
    this.emit('taskFailed', { taskId: t.id, reason, message, attempts: t.attempts });
    void this.bus
      .publish(
        stripUndefined({
          type: T.TASK_FAIL,
          agentId: this.nodeId,
          swarmId: t.swarmId,
          data: {
            taskId: t.id,
            dispatcher: this.nodeId,
            final: true,
            reason,
            error: message,
            attempts: t.attempts,
            deadLettered: state === 'dead-lettered',
          },
        }),
      )
      .catch(() => undefined);
    this.tasks.delete(t.id);
    this.forget(t);
    t.reject(err);
    this.failDependents(t.id);
  }

  /** Drops a finished task from the indexes. */
  private forget(t: TaskRecord): void {
    this.withDeadline.delete(t);
    for (const dep of t.waitingFor) {
      const set = this.dependents.get(dep);
      set?.delete(t);
      if (set?.size === 0) this.dependents.delete(dep);
    }
  }

  private failDependents(id: string): void {
    const set = this.dependents.get(id);
    if (!set) return;
    this.dependents.delete(id);
    for (const d of [...set])
      if (d.state === 'blocked') this.finish(d, 'failed', 'dependency-failed', `dependency ${id} failed`);
  }

  private resolveDep(id: string, publish: boolean): void {
    const set = this.dependents.get(id);
    if (!set) return;
    this.dependents.delete(id);
    for (const d of set) {
      if (d.state !== 'blocked' || !d.waitingFor.delete(id)) continue;
      if (publish)
        void this.bus
          .publish({
            type: T.TASK_DEPENDENCY_RESOLVE,
            agentId: this.nodeId,
            data: { taskId: d.id, dependencyId: id, dispatcher: this.nodeId },
          })
          .catch(() => undefined);
      if (d.waitingFor.size === 0) {
        this.counts.blocked--;
        this.enqueue(d);
      }
    }
  }

  private onTaskEvent(e: AgentEvent): void {
    const d = e.data as TaskResultData & {
      status?: string;
      reason?: string;
      final?: boolean;
      dependencyId?: string;
    };
    if (e.type === T.TASK_DEPENDENCY_RESOLVE) {
      // an external resolution names the dependency; ours name the dependent and carry `dispatcher`
      if (d.dispatcher === undefined && typeof d.dependencyId === 'string')
        this.resolveDep(d.dependencyId, true);
      return;
    }
    if (e.type === T.TASK_COMPLETE) {
      if (!this.completedIds.has(d.taskId)) {
        this.completedIds.add(d.taskId);
        trim(this.completedIds);
        const a = this.agents.get(d.agentId);
        if (a) this.completions.push({ at: Date.now(), pool: a.pool });
        if (this.completions.length > 100_000) this.completions.splice(0, 50_000);
        this.resolveDep(d.taskId, true);
      }
    } else if (e.type === T.TASK_FAIL && d.final && d.dispatcher !== this.nodeId) {
      this.failedIds.add(d.taskId);
      this.failDependents(d.taskId);
    }
    if (d.dispatcher !== this.nodeId) return;
    const t = this.tasks.get(d.taskId);
    if (t?.state !== 'assigned' || t.attempts !== d.attempt || t.agentId !== d.agentId) {
      if (e.type === T.TASK_COMPLETE || e.type === T.TASK_FAIL) this.counts.duplicates++;
      return;
    }
    const a = this.agents.get(d.agentId);
    if (e.type === T.TASK_UPDATE) {
      if (d.status === 'rejected') {
        this.counts.rejected++;
        this.fullUntil.set(d.agentId, Date.now() + Math.min(250, this.heartbeatIntervalMs));
        this.retry(t, `rejected by ${d.agentId}: ${d.reason}`, false);
        setTimeout(() => this.poke(), Math.min(250, this.heartbeatIntervalMs) + 1).unref?.();
      }
      return;
    }
    if (a) {
      const ok = e.type === T.TASK_COMPLETE ? 1 : 0;
      a.successRate = a.successRate * 0.8 + ok * 0.2;
      a.latencyMs = a.latencyMs === 0 ? d.duration : a.latencyMs * 0.8 + d.duration * 0.2;
    }
    if (e.type === T.TASK_COMPLETE) {
      this.release(t);
      t.state = 'completed';
      this.counts.completed++;
      this.tasks.delete(t.id);
      this.forget(t);
      const r: TaskResult = {
        taskId: t.id,
        result: d.result,
        agentId: d.agentId,
        attempts: t.attempts,
        startedAt: d.startedAt,
        startDelayMs: d.startedAt - d.assignedAt,
        durationMs: d.duration,
      };
      this.emit('taskCompleted', r);
      t.resolve(r);
      this.poke();
    } else if (e.type === T.TASK_FAIL) {
      if (d.permanent) {
        this.finish(t, 'failed', 'failed', d.error ?? 'failed');
      } else this.retry(t, `attempt ${t.attempts} failed on ${d.agentId}: ${d.error}`, true);
    }
  }

  // ---------------------------------------------------------------- tasks: agent side

  private onAssign(e: AgentEvent): void {
    const d = e.data as AssignData & { reason?: string };
    const a = this.local.get(d.agentId);
    if (e.type === T.TASK_CANCEL) {
      a?.running.get(`${d.taskId}#${d.attempt}`)?.abort(new Error(`cancelled: ${d.reason ?? ''}`));
      return;
    }
    const reject = (reason: string): void => {
      void this.bus
        .publish({
          type: T.TASK_UPDATE,
          agentId: d.agentId,
          data: {
            taskId: d.taskId,
            agentId: d.agentId,
            dispatcher: d.dispatcher,
            attempt: d.attempt,
            status: 'rejected',
            reason,
          },
        })
        .catch(() => undefined);
    };
    if (!a) {
      reject('unknown agent');
      return;
    }
    if (a.status !== 'active') {
      reject(`agent is ${a.status}`);
      return;
    }
    if (a.desc.swarmId) {
      const s = this.swarms.get(a.desc.swarmId);
      if (s && s.state !== 'running' && s.state !== 'initialized') {
        reject(`swarm is ${s.state}`);
        return;
      }
    }
    if (a.running.size >= a.desc.capacity) {
      reject('at capacity');
      return;
    }
    const ctrl = new AbortController();
    const key = `${d.taskId}#${d.attempt}`;
    a.running.set(key, ctrl);
    const startedAt = Date.now();
    this.emit('taskStarted', {
      taskId: d.taskId,
      agentId: a.desc.id,
      attempt: d.attempt,
      startedAt,
      assignedAt: d.assignedAt,
    });
    const base = {
      taskId: d.taskId,
      agentId: a.desc.id,
      dispatcher: d.dispatcher,
      attempt: d.attempt,
      assignedAt: d.assignedAt,
      startedAt,
    };
    void (async () => {
      let ev: EventInput;
      try {
        const result = await a.handler({
          taskId: d.taskId,
          kind: d.kind,
          input: d.input,
          attempt: d.attempt,
          agentId: a.desc.id,
          signal: ctrl.signal,
        });
        if (ctrl.signal.aborted) throw ctrl.signal.reason ?? new Error('aborted');
        a.completed++;
        ev = {
          type: T.TASK_COMPLETE,
          agentId: a.desc.id,
          swarmId: a.desc.swarmId,
          data: { ...base, result, duration: Date.now() - startedAt },
        };
      } catch (err) {
        a.failed++;
        const er = err instanceof Error ? err : new Error(String(err));
        ev = {
          type: T.TASK_FAIL,
          agentId: a.desc.id,
          swarmId: a.desc.swarmId,
          data: {
            ...base,
            error: er.message,
            errorName: er.name,
            permanent: err instanceof PermanentError,
            final: false,
            duration: Date.now() - startedAt,
          },
        };
      }
      a.running.delete(key);
      if (a.running.size === 0) a.drained?.();
      if (a.status === 'terminated' && ctrl.signal.aborted) return;
      await this.send(stripUndefined(ev)).catch((err: unknown) => this.reportError(err));
    })();
  }

  /**
   * Task events (create, assign, results) go out in batches: everything queued
   * in one turn of the event loop is one `publishBatch`, so a burst of tasks
   * costs a few transport calls instead of one per event. A batch the bus
   * refuses is retried event by event, so one bad event fails alone.
   */
  private send(ev: EventInput): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.outbox.push({ ev, resolve, reject });
      if (this.outbox.length === 1) setImmediate(() => void this.flush());
    });
  }

  private async flush(): Promise<void> {
    while (this.outbox.length > 0) {
      const batch = this.outbox.splice(0, 500);
      try {
        await this.bus.publishBatch(batch.map((b) => b.ev));
        for (const b of batch) b.resolve();
      } catch {
        await Promise.all(
          batch.map((b) =>
            this.bus.publish(b.ev).then(
              () => b.resolve(),
              (err: unknown) => b.reject(err),
            ),
          ),
        );
      }
    }
  }

  // ---------------------------------------------------------------- swarms

  /** Publishes `swarm.init`; nodes learn the swarm (and its allowed phase transitions). */
  async initSwarm(
    swarmId: string,
    options: { phases?: Record<string, string[]>; phase?: string } = {},
  ): Promise<SwarmState> {
    checkId('swarmId', swarmId);
    if (options.phases !== undefined) {
      if (typeof options.phases !== 'object' || options.phases === null)
        throw new InvalidSpecError('phases', 'must be { from: [to, ...] }');
      for (const [k, v] of Object.entries(options.phases)) {
        checkId(`phases.${k}`, k);
        checkStrings(`phases.${k}`, v);
      }
    }
    if (options.phase !== undefined) checkId('phase', options.phase);
    const cur = this.swarms.get(swarmId);
    if (cur && cur.state !== 'completed' && cur.state !== 'error')
      throw new InvalidTransitionError(swarmId, cur.state, 'initialized');
    await this.bus.publish({
      type: T.SWARM_INIT,
      agentId: this.nodeId,
      swarmId,
      data: stripUndefined({ swarmId, phases: options.phases, phase: options.phase }),
    });
    return this.waitSwarm(swarmId, (s) => s.state === 'initialized');
  }

  startSwarm(swarmId: string): Promise<SwarmState> {
    return this.swarmCommand(swarmId, 'start', T.SWARM_START, 'running');
  }
  /**
   * Pauses a swarm: its agents take no new task (running ones finish). Resolves
   * once every live agent of the swarm acknowledged (`agent.status.update` with
   * status `paused`), or rejects with `SwarmTimeoutError` after `ackTimeoutMs`.
   */
  async pauseSwarm(swarmId: string): Promise<SwarmState> {
    const s = await this.swarmCommand(swarmId, 'pause', T.SWARM_PAUSE, 'paused');
    const deadline = Date.now() + this.ackTimeoutMs;
    while (true) {
      const pending = [...this.agents.values()].filter((a) => a.swarmId === swarmId && a.status === 'active');
      if (pending.length === 0) return s;
      if (Date.now() > deadline)
        throw new SwarmTimeoutError(
          `${pending.length} agents of swarm ${swarmId} did not acknowledge the pause`,
          {
            details: { swarmId, pending: pending.map((a) => a.id).slice(0, 20) },
          },
        );
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  resumeSwarm(swarmId: string): Promise<SwarmState> {
    return this.swarmCommand(swarmId, 'resume', T.SWARM_RESUME, 'running');
  }
  completeSwarm(swarmId: string): Promise<SwarmState> {
    return this.swarmCommand(swarmId, 'complete', T.SWARM_COMPLETE, 'completed');
  }
  failSwarm(swarmId: string, message: string): Promise<SwarmState> {
    return this.swarmCommand(swarmId, 'error', T.SWARM_ERROR, 'error', { message: String(message) });
  }

  /** A phase transition (`swarm.phase.transition`), checked against the phases given to `initSwarm`. */
  async transitionSwarm(swarmId: string, to: string): Promise<SwarmState> {
    checkId('to', to);
    const s = this.swarms.get(swarmId);
    if (!s) throw new UnknownEntityError('swarm', swarmId);
    if (s.state === 'completed' || s.state === 'error')
      throw new InvalidTransitionError(swarmId, s.state, `phase ${to}`);
    if (s.phases && s.phase !== undefined && !(s.phases[s.phase] ?? []).includes(to))
      throw new InvalidTransitionError(swarmId, `phase ${s.phase}`, `phase ${to}`);
    await this.bus.publish({
      type: T.SWARM_PHASE_TRANSITION,
      agentId: this.nodeId,
      swarmId,
      data: stripUndefined({ swarmId, from: s.phase, to }),
    });
    return this.waitSwarm(swarmId, (x) => x.phase === to);
  }

  getSwarm(swarmId: string): SwarmState | undefined {
    const s = this.swarms.get(swarmId);
    return s ? structuredClone(s) : undefined;
  }

  private async swarmCommand(
    swarmId: string,
    cmd: keyof typeof SWARM_TRANSITIONS,
    type: string,
    target: SwarmState['state'],
    extra: Record<string, unknown> = {},
  ): Promise<SwarmState> {
    checkId('swarmId', swarmId);
    const s = this.swarms.get(swarmId);
    if (!s) throw new UnknownEntityError('swarm', swarmId);
    if (!SWARM_TRANSITIONS[cmd]!.includes(s.state))
      throw new InvalidTransitionError(swarmId, s.state, target);
    await this.bus.publish({ type, agentId: this.nodeId, swarmId, data: { swarmId, ...extra } });
    return this.waitSwarm(swarmId, (x) => x.state === target);
  }

  private async waitSwarm(swarmId: string, ok: (s: SwarmState) => boolean): Promise<SwarmState> {
    const deadline = Date.now() + this.ackTimeoutMs;
    while (true) {
      const s = this.swarms.get(swarmId);
      if (s && ok(s)) return structuredClone(s);
      if (Date.now() > deadline)
        throw new SwarmTimeoutError(`swarm ${swarmId} did not reach the state asked for`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  private onSwarmEvent(e: AgentEvent): void {
    const d = (e.data ?? {}) as {
      swarmId?: string;
      phases?: Record<string, string[]>;
      phase?: string;
      to?: string;
      message?: string;
    };
    const id = d.swarmId ?? e.swarmId;
    if (!id) return;
    const now = Date.now();
    let s = this.swarms.get(id);
    if (e.type === T.SWARM_INIT) {
      s = stripUndefined({
        id,
        state: 'initialized',
        phases: d.phases,
        phase: d.phase,
        updatedAt: now,
      }) as SwarmState;
      this.swarms.set(id, s);
    } else {
      if (!s) {
        s = { id, state: 'running', updatedAt: now };
        this.swarms.set(id, s);
      }
      const before = s.state;
      if (e.type === T.SWARM_START || e.type === T.SWARM_RESUME) s.state = 'running';
      else if (e.type === T.SWARM_PAUSE) s.state = 'paused';
      else if (e.type === T.SWARM_COMPLETE) s.state = 'completed';
      else if (e.type === T.SWARM_ERROR) {
        s.state = 'error';
        s.error = d.message;
      } else if (e.type === T.SWARM_PHASE_TRANSITION && d.to) s.phase = d.to;
      s.updatedAt = now;
      if (before !== s.state) this.applySwarm(s);
    }
    this.emit('swarm', structuredClone(s));
    this.poke();
  }

  /** Our agents follow their swarm: paused (and acknowledged) or active again. */
  private applySwarm(s: SwarmState): void {
    for (const a of this.local.values()) {
      if (a.desc.swarmId !== s.id || a.status === 'draining' || a.status === 'terminated') continue;
      const want: AgentStatus = s.state === 'running' || s.state === 'initialized' ? 'active' : 'paused';
      if (a.status === want) continue;
      a.status = want;
      void this.publishStatus(a).catch((err: unknown) => this.reportError(err));
    }
  }

  // ---------------------------------------------------------------- stats and scaling

  /**
   * Watches a pool and calls `onSignal` when it should grow or shrink (see
   * `AutoscaleOptions`). Returns a function that stops watching.
   */
  autoscale(options: AutoscaleOptions): () => void {
    const a = new Autoscaler(
      options,
      () => this.poolSample(options.pool),
      (sig) => {
        this.signals.push(sig);
        if (this.signals.length > 50) this.signals.shift();
        this.emit('scale', sig);
      },
    );
    this.autoscalers.push(a);
    a.start();
    return () => a.stop();
  }

  private poolSample(pool: string): PoolSample {
    const st = this.poolStats()[pool];
    return st
      ? { agents: st.agents, capacity: st.capacity, active: st.active, waiting: st.waiting }
      : { agents: 0, capacity: 0, active: 0, waiting: 0 };
  }

  private poolStats(): Record<string, PoolStats> {
    const now = Date.now();
    const pools: Record<string, PoolStats> = {};
    const get = (p: string) =>
      (pools[p] ??= { agents: 0, capacity: 0, active: 0, utilization: 0, waiting: 0, throughput: 0 });
    for (const a of this.agents.values()) {
      if (a.status === 'failed' || a.status === 'terminated') continue;
      const p = get(a.pool);
      p.agents++;
      p.capacity += a.capacity;
      p.active += Math.max(a.active, a.assignedByMe);
    }
    // waiting tasks count in their pool, or in the first pool with an agent able to run them
    const byKey = new Map<string, string>();
    for (const t of this.tasks.values()) {
      if (t.state !== 'waiting' && t.state !== 'blocked') continue;
      let pool = t.pool ?? byKey.get(t.reqKey);
      if (pool === undefined) {
        pool = 'unassigned';
        for (const a of this.agents.values())
          if (
            (!t.swarmId || a.swarmId === t.swarmId) &&
            t.requires.every((c) => a.capabilities.includes(c))
          ) {
            pool = a.pool;
            break;
          }
        byKey.set(t.reqKey, pool);
      }
      get(pool).waiting++;
    }
    let cut = 0;
    while (cut < this.completions.length && this.completions[cut]!.at < now - 10_000) cut++;
    if (cut) this.completions.splice(0, cut);
    for (const c of this.completions) get(c.pool).throughput += 0.1;
    for (const p of Object.values(pools)) {
      p.utilization = p.capacity > 0 ? round2((Math.min(p.active, p.capacity) / p.capacity) * 100) : 0;
      p.throughput = round2(p.throughput);
    }
    return pools;
  }

  /** Spec 003's `getOrchestrationStats()`, JSON-safe (plain numbers and strings). */
  getOrchestrationStats(): OrchestrationStats {
    let total = 0;
    let active = 0;
    let paused = 0;
    let failed = 0;
    let cap = 0;
    let busy = 0;
    for (const a of this.agents.values()) {
      if (a.status === 'failed') {
        failed++;
        continue;
      }
      total++;
      if (a.status === 'active') active++;
      if (a.status === 'paused') paused++;
      cap += a.capacity;
      busy += Math.min(a.capacity, Math.max(a.active, a.assignedByMe));
    }
    const swarms: OrchestrationStats['swarms'] = {};
    for (const s of this.swarms.values()) swarms[s.id] = { state: s.state, phase: s.phase ?? null };
    return {
      nodeId: this.nodeId,
      totalAgents: total,
      activeAgents: active,
      pausedAgents: paused,
      failedAgents: failed,
      averageUtilization: cap > 0 ? round2((busy / cap) * 100) : 0,
      pools: this.poolStats(),
      tasks: { ...this.counts },
      swarms,
      scaleSignals: this.signals.map((s) => ({ ...s })),
      agentFailuresDetected: this.failuresDetected,
      heartbeatsReceived: this.heartbeats,
      unassignable: this.unassignable,
      timestamp: Date.now(),
    };
  }

  /** An `error` event when someone listens; never a throw from a timer or a catch handler. */
  private reportError(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private assertRunning(): void {
    if (!this.started || this.stopped)
      throw new InvalidSpecError('node', this.stopped ? 'the swarm node is stopped' : 'call start() first');
  }
}

function isTerminal(s: TaskState): boolean {
  return s === 'completed' || s === 'failed' || s === 'dead-lettered' || s === 'cancelled';
}

function viewOf(t: TaskRecord): TaskView {
  return stripUndefined({
    id: t.id,
    kind: t.kind,
    state: t.state,
    requires: [...t.requires],
    pool: t.pool,
    swarmId: t.swarmId,
    priority: t.priority,
    attempts: t.attempts,
    agentId: t.agentId,
    submittedAt: t.submittedAt,
    deadline: t.deadline,
    waitingFor: [...t.waitingFor],
  }) as TaskView;
}

function trim(s: Set<string>): void {
  if (s.size <= 200_000) return;
  let n = 0;
  for (const k of s) {
    s.delete(k);
    if (++n >= 100_000) break;
  }
}

const round2 = (n: number) => Math.round(n * 100) / 100;

// biome-ignore lint/suspicious/noExplicitAny: generic helper
export function stripUndefined<O extends Record<string, any>>(o: O): O {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}
