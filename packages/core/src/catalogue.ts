/**
 * The agent-swarm event catalogue of spec 000, as constants.
 * `EventTypes.AGENT_TASK_COMPLETE === 'agent.task.complete'`.
 */
export const EventTypes = {
  // Agent lifecycle
  AGENT_SPAWN: 'agent.spawn',
  AGENT_TERMINATE: 'agent.terminate',
  AGENT_ERROR: 'agent.error',
  AGENT_TASK_ASSIGN: 'agent.task.assign',
  AGENT_TASK_COMPLETE: 'agent.task.complete',
  AGENT_HEARTBEAT: 'agent.heartbeat',
  AGENT_STATUS_UPDATE: 'agent.status.update',
  AGENT_CAPABILITY_REGISTER: 'agent.capability.register',
  // Swarm coordination
  SWARM_INIT: 'swarm.init',
  SWARM_START: 'swarm.start',
  SWARM_PAUSE: 'swarm.pause',
  SWARM_RESUME: 'swarm.resume',
  SWARM_COMPLETE: 'swarm.complete',
  SWARM_ERROR: 'swarm.error',
  SWARM_PHASE_TRANSITION: 'swarm.phase.transition',
  // Task management
  TASK_CREATE: 'task.create',
  TASK_UPDATE: 'task.update',
  TASK_COMPLETE: 'task.complete',
  TASK_FAIL: 'task.fail',
  TASK_CANCEL: 'task.cancel',
  TASK_DEPENDENCY_RESOLVE: 'task.dependency.resolve',
  // Consensus
  CONSENSUS_START: 'consensus.start',
  CONSENSUS_VOTE: 'consensus.vote',
  CONSENSUS_ACHIEVE: 'consensus.achieve',
  CONSENSUS_FAIL: 'consensus.fail',
  // Sagas (spec 002): families; a published type appends the worker or saga name
  // (`saga.command.charge-card`, `saga.status.payment`), one channel per worker. See @qe/saga.
  SAGA_COMMAND: 'saga.command',
  SAGA_RESULT: 'saga.result',
  SAGA_ERROR: 'saga.error',
  SAGA_COMPENSATION: 'saga.compensation',
  SAGA_STATUS: 'saga.status',
  // System
  SYSTEM_STARTUP: 'system.startup',
  SYSTEM_SHUTDOWN: 'system.shutdown',
  SYSTEM_HEALTH_CHECK: 'system.health_check',
  SYSTEM_METRICS: 'system.metrics',
} as const;

export type EventType = (typeof EventTypes)[keyof typeof EventTypes];

/**
 * Payloads of the built-in catalogue. Kept deliberately open (`Record<string, unknown>`
 * plus the documented fields) so producers can add fields without breaking consumers.
 */
export interface CatalogueEvents {
  'agent.spawn': { agentType?: string; capabilities?: string[]; [k: string]: unknown };
  'agent.terminate': { reason?: string; [k: string]: unknown };
  'agent.error': { message: string; code?: string; stack?: string; [k: string]: unknown };
  'agent.task.assign': { taskId: string; [k: string]: unknown };
  'agent.task.complete': { taskId: string; result?: unknown; duration?: number; [k: string]: unknown };
  'agent.heartbeat': { load?: number; [k: string]: unknown };
  'agent.status.update': { status: string; [k: string]: unknown };
  'agent.capability.register': { capabilities: string[]; [k: string]: unknown };
  'swarm.init': Record<string, unknown>;
  'swarm.start': Record<string, unknown>;
  'swarm.pause': Record<string, unknown>;
  'swarm.resume': Record<string, unknown>;
  'swarm.complete': Record<string, unknown>;
  'swarm.error': { message: string; [k: string]: unknown };
  'swarm.phase.transition': { from?: string; to: string; [k: string]: unknown };
  'task.create': { taskId: string; [k: string]: unknown };
  'task.update': { taskId: string; [k: string]: unknown };
  'task.complete': { taskId: string; result?: unknown; [k: string]: unknown };
  'task.fail': { taskId: string; error?: string; [k: string]: unknown };
  'task.cancel': { taskId: string; reason?: string; [k: string]: unknown };
  'task.dependency.resolve': { taskId: string; dependencyId?: string; [k: string]: unknown };
  'consensus.start': { proposalId: string; [k: string]: unknown };
  'consensus.vote': { proposalId: string; vote: unknown; [k: string]: unknown };
  'consensus.achieve': { proposalId: string; [k: string]: unknown };
  'consensus.fail': { proposalId: string; reason?: string; [k: string]: unknown };
  'system.startup': Record<string, unknown>;
  'system.shutdown': Record<string, unknown>;
  'system.health_check': Record<string, unknown>;
  'system.metrics': Record<string, unknown>;
}
