import type { AgentEvent } from '@qe/core';
import { PRIORITY_NAMES } from '@qe/core';

/** Label values stay low-cardinality: the type family (first segment) and the priority name, never ids. */
export function familyOf(type: string): string {
  const dot = type.indexOf('.');
  return dot < 0 ? type : type.slice(0, dot);
}

export function labelsOf(event: AgentEvent): { family: string; priority: string } {
  return { family: familyOf(event.type), priority: PRIORITY_NAMES[event.priority] ?? 'normal' };
}

/** Prometheus metric names must match this; prefixes are checked at construction. */
export const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
