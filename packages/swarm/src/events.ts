import { EventTypes, type QEEventBus } from '@qe/core';

// biome-ignore lint/suspicious/noExplicitAny: the swarm publishes its own types on any bus
export type AnySwarmBus = QEEventBus<any>;

/**
 * Event types the swarm publishes and listens to. Spec 000's names are the
 * wire protocol for agents (`agent.spawn`, `agent.heartbeat`, ...); spec
 * 003's lifecycle names (`agent.spawned`, `agent.started`, `agent.failed`,
 * `agent.terminated`) are published beside them once per transition, so a
 * subscriber that knows either spec finds its names (see the README's table).
 */
export const SwarmEventTypes = {
  // spec 000, agents
  AGENT_SPAWN: EventTypes.AGENT_SPAWN,
  AGENT_HEARTBEAT: EventTypes.AGENT_HEARTBEAT,
  AGENT_TERMINATE: EventTypes.AGENT_TERMINATE,
  AGENT_ERROR: EventTypes.AGENT_ERROR,
  AGENT_CAPABILITY_REGISTER: EventTypes.AGENT_CAPABILITY_REGISTER,
  AGENT_STATUS_UPDATE: EventTypes.AGENT_STATUS_UPDATE,
  // spec 003, agents
  AGENT_SPAWNED: 'agent.spawned',
  AGENT_STARTED: 'agent.started',
  AGENT_FAILED: 'agent.failed',
  AGENT_TERMINATED: 'agent.terminated',
  // tasks (spec 000, and spec 003's task.assigned)
  TASK_CREATE: EventTypes.TASK_CREATE,
  TASK_ASSIGNED: 'task.assigned',
  TASK_UPDATE: EventTypes.TASK_UPDATE,
  TASK_COMPLETE: EventTypes.TASK_COMPLETE,
  TASK_FAIL: EventTypes.TASK_FAIL,
  TASK_CANCEL: EventTypes.TASK_CANCEL,
  TASK_DEPENDENCY_RESOLVE: EventTypes.TASK_DEPENDENCY_RESOLVE,
  // swarms
  SWARM_INIT: EventTypes.SWARM_INIT,
  SWARM_START: EventTypes.SWARM_START,
  SWARM_PAUSE: EventTypes.SWARM_PAUSE,
  SWARM_RESUME: EventTypes.SWARM_RESUME,
  SWARM_COMPLETE: EventTypes.SWARM_COMPLETE,
  SWARM_ERROR: EventTypes.SWARM_ERROR,
  SWARM_PHASE_TRANSITION: EventTypes.SWARM_PHASE_TRANSITION,
  // consensus
  CONSENSUS_START: EventTypes.CONSENSUS_START,
  CONSENSUS_VOTE: EventTypes.CONSENSUS_VOTE,
  CONSENSUS_ACHIEVE: EventTypes.CONSENSUS_ACHIEVE,
  CONSENSUS_FAIL: EventTypes.CONSENSUS_FAIL,
} as const;

/** What an agent looks like in every node's registry (and in `agent.heartbeat` events). */
export interface AgentDescriptor {
  id: string;
  type: string;
  capabilities: string[];
  /** Tasks it runs at once. */
  capacity: number;
  pool: string;
  swarmId?: string;
  /** The node (process) that hosts it. */
  nodeId: string;
}

export type AgentStatus = 'active' | 'paused' | 'draining' | 'failed' | 'terminated';

/** Payload of `agent.heartbeat`: the whole descriptor, so a node that joins late learns everything from one. */
export interface HeartbeatData extends AgentDescriptor {
  status: AgentStatus;
  /** Tasks running now. */
  active: number;
  /** active / capacity, 0..1 (spec 000's `load`). */
  load: number;
  completed: number;
  failed: number;
}

export interface AssignData {
  taskId: string;
  agentId: string;
  nodeId: string;
  dispatcher: string;
  attempt: number;
  kind: string;
  input: unknown;
  timeoutMs: number;
  assignedAt: number;
}

export interface TaskResultData {
  taskId: string;
  agentId: string;
  dispatcher: string;
  attempt: number;
  result?: unknown;
  error?: string;
  errorName?: string;
  permanent?: boolean;
  assignedAt: number;
  startedAt: number;
  duration: number;
}
