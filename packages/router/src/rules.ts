import {
  type AgentEvent,
  assertKnownKeys,
  ConfigError,
  compilePattern,
  type EventPriority,
  type Middleware,
  type PublishFn,
  uuidv7,
} from '@qe/core';

/** What a rule does to an event it matches. */
export type RuleAction =
  | { redirect: string } // publish it under another type instead
  | { priority: EventPriority } // change its priority
  | { tee: string } // publish it, plus a copy under this type (an audit trail)
  | { drop: true }; // do not publish it (counted)

export interface RoutingRule {
  /** Unique; default a generated one. */
  id?: string;
  /** Event types it applies to. */
  pattern: string;
  /** And only events this accepts. */
  when?: (event: AgentEvent) => boolean;
  action: RuleAction;
}

export interface RuleStats {
  id: string;
  pattern: string;
  action: string;
  matched: number;
}

/**
 * Spec 004's routing rules as a publish middleware: rules run in the order
 * they were added; each can redirect, re-prioritise, tee or drop; a dropped
 * event stops there. Rules can be removed at any time; `stats()` shows how
 * often each matched and how many events were dropped.
 */
export function createRoutingRules(): Middleware & {
  addRoutingRule(rule: RoutingRule): string;
  removeRoutingRule(id: string): boolean;
  stats(): { rules: RuleStats[]; dropped: number };
} {
  const rules: { rule: RoutingRule & { id: string }; matches: (t: string) => boolean; matched: number }[] =
    [];
  let seq = 0;
  let dropped = 0;
  const apply = (events: readonly AgentEvent[]): AgentEvent[] => {
    const out: AgentEvent[] = [];
    for (const original of events) {
      let e = original;
      let keep = true;
      for (const r of rules) {
        if (!r.matches(e.type) || (r.rule.when && !r.rule.when(e))) continue;
        r.matched++;
        const a = r.rule.action;
        if ('drop' in a) {
          keep = false;
          dropped++;
          break;
        }
        if ('redirect' in a) e = { ...e, type: a.redirect };
        else if ('priority' in a) e = { ...e, priority: a.priority };
        else out.push({ ...e, id: uuidv7(), type: a.tee, metadata: { ...e.metadata, causationId: e.id } });
      }
      if (keep) out.push(e);
    }
    return out;
  };
  return {
    name: 'routing-rules',
    addRoutingRule(rule) {
      if (!rule || typeof rule.pattern !== 'string' || !rule.action)
        throw new ConfigError('rule', 'needs a pattern and an action');
      assertKnownKeys(rule, ['id', 'pattern', 'when', 'action'], 'rule.');
      if (rule.when !== undefined && typeof rule.when !== 'function')
        throw new ConfigError('rule.when', 'must be a function');
      compilePattern(rule.pattern);
      const a = rule.action as Record<string, unknown>;
      assertKnownKeys(a, ['redirect', 'priority', 'tee', 'drop'], 'rule.action.');
      // one action per rule; { drop: false } used to drop too (only the key was looked at)
      if (Object.keys(a).length !== 1)
        throw new ConfigError('rule.action', 'must be exactly one of redirect, priority, tee or drop');
      if ('drop' in a && a.drop !== true) throw new ConfigError('rule.action.drop', 'must be true');
      for (const t of [a.redirect, a.tee])
        if (t !== undefined && !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(String(t)))
          throw new ConfigError('rule.action', `${JSON.stringify(t)} is not an event type`);
      if ('priority' in a && ![0, 1, 2, 3, 4].includes(a.priority as number))
        throw new ConfigError('rule.action.priority', 'must be 0-4');
      const id = rule.id ?? `rule-${++seq}`;
      if (rules.some((r) => r.rule.id === id)) throw new ConfigError('rule.id', `${id} exists`);
      rules.push({ rule: { ...rule, id }, matches: compilePattern(rule.pattern).matches, matched: 0 });
      return id;
    },
    removeRoutingRule(id) {
      const i = rules.findIndex((r) => r.rule.id === id);
      if (i < 0) return false;
      rules.splice(i, 1);
      return true;
    },
    stats: () => ({
      rules: rules.map((r) => ({
        id: r.rule.id,
        pattern: r.rule.pattern,
        action: Object.keys(r.rule.action)[0]!,
        matched: r.matched,
      })),
      dropped,
    }),
    publish(next: PublishFn): PublishFn {
      return (events, ctx) => {
        if (rules.length === 0) return next(events, ctx);
        const out = apply(events);
        return out.length === 0 ? Promise.resolve() : next(out, ctx);
      };
    },
  };
}
