// Type-level tests: checked by `tsc` (typecheck task), not run.
import { expectTypeOf } from 'vitest';
import { type AgentEvent, QEEventBus } from './index.js';

interface MyEvents {
  'order.created': { orderId: string; total: number };
  'order.shipped': { orderId: string; carrier: string };
  'user.login': { userId: string };
}

const bus = new QEEventBus<MyEvents>({ nodeId: 'types' });

bus.subscribe('order.created', (e) => {
  expectTypeOf(e.data).toEqualTypeOf<{ orderId: string; total: number }>();
  expectTypeOf(e.type).toEqualTypeOf<'order.created'>();
});

bus.subscribe('order.*', (e) => {
  if (e.type === 'order.shipped') expectTypeOf(e.data.carrier).toBeString();
  else expectTypeOf(e.data.total).toBeNumber();
});

bus.subscribe('**', (e) => {
  expectTypeOf(e.type).toEqualTypeOf<'order.created' | 'order.shipped' | 'user.login'>();
});

void bus.publish({ type: 'user.login', agentId: 'a', data: { userId: 'u' } });
// @ts-expect-error: payload does not match the declared type
void bus.publish({ type: 'user.login', agentId: 'a', data: { orderId: 'x' } });
// @ts-expect-error: unknown event type for this map
void bus.publish({ type: 'nope.nope', agentId: 'a', data: {} });

// untyped bus: anything goes, payload unknown
const loose = new QEEventBus({ nodeId: 'loose' });
loose.subscribe('a.b', (e) => expectTypeOf(e).toEqualTypeOf<AgentEvent<unknown, string>>());
void loose.publish({ type: 'whatever.type', agentId: 'a', data: 42 });
