import { EventPriority, EventTypes } from '@qe/core';

/** The data of every load event: which phase, producer and sequence number, and when it was due. */
export interface LoadPayload {
  /** Phase (a stress step, or 0). */
  ph: number;
  /** Producer index. */
  p: number;
  /** Sequence number, dense from 0 per producer and phase. */
  s: number;
  /** Epoch ms the event was due (open loop) or issued (max mode). */
  t: number;
  pad?: string;
}

/** Everything a target needs to connect; the same in every process of a run. */
export interface TargetContext {
  runId: string;
  /** Redis key prefix of this run (each run its own, cleaned up after). */
  keyPrefix: string;
  redisUrl: string;
  /** The broker's base URL, for the ws and http targets. */
  brokerUrl?: string;
  /** Redis Cluster nodes, for the redis-cluster targets. */
  redisCluster?: { host: string; port: number }[];
  /** Spread events over the catalogue's families and all five priorities. */
  mix: boolean;
}

/** The sending side. */
export interface LoadProducer {
  /**
   * Sends the events; resolves with the indexes (into `events`) the target
   * refused, rejects when it refused them all. Safe to call again before an
   * earlier call settled.
   */
  send(events: readonly LoadPayload[]): Promise<readonly number[]>;
  close(): Promise<void>;
}

/** The receiving side: calls `onEvent` once per delivery (duplicates included). */
export interface LoadConsumer {
  close(): Promise<void>;
}

/** Called by a consumer once per delivery, synchronously, in arrival order. */
export type OnEvent = (payload: LoadPayload) => void;

/** A system under load: how to produce into it and consume from it. */
export interface Target {
  readonly name: string;
  /** Producer and consumer must live in one process (the in-process bus). */
  readonly inProcess: boolean;
  /** Resolves once the consumer is live: events sent after that reach it. */
  consumer(ctx: TargetContext, onEvent: OnEvent): Promise<LoadConsumer>;
  producer(ctx: TargetContext, index: number): Promise<LoadProducer>;
  /** Removes what the run left behind (Redis keys). */
  cleanup?(ctx: TargetContext): Promise<void>;
}

const MIX_TYPES = [
  EventTypes.AGENT_TASK_ASSIGN,
  EventTypes.AGENT_HEARTBEAT,
  EventTypes.TASK_CREATE,
  EventTypes.TASK_COMPLETE,
  EventTypes.SWARM_PHASE_TRANSITION,
  EventTypes.CONSENSUS_VOTE,
  EventTypes.SYSTEM_METRICS,
];

/** The event envelope a bus-based target publishes for a payload. */
export function busEventFor(
  payload: LoadPayload,
  mix: boolean,
): { type: string; agentId: string; priority: EventPriority; data: LoadPayload } {
  if (!mix)
    return {
      type: 'loadgen.event',
      agentId: `loadgen-p${payload.p}`,
      priority: EventPriority.NORMAL,
      data: payload,
    };
  const k = payload.s;
  return {
    type: MIX_TYPES[k % MIX_TYPES.length]!,
    agentId: `loadgen-p${payload.p}-a${k % 16}`,
    priority: (k % 5) as EventPriority,
    data: payload,
  };
}

/** Reads a payload back from an event's data, or undefined if it is not one of ours. */
export function asPayload(data: unknown): LoadPayload | undefined {
  if (data === null || typeof data !== 'object') return undefined;
  const d = data as Record<string, unknown>;
  if (
    typeof d.p !== 'number' ||
    typeof d.s !== 'number' ||
    typeof d.t !== 'number' ||
    typeof d.ph !== 'number'
  )
    return undefined;
  return d as unknown as LoadPayload;
}
