import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { type Middleware, type MiddlewareHost, QEEventBus } from '../src/index.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.stop()));
});

/** A middleware that records its attach/detach calls and publishes through its host on the first event. */
function tracked(name: string) {
  const log: string[] = [];
  let host: MiddlewareHost | undefined;
  const m: Middleware = {
    name,
    attach(h) {
      host = h;
      log.push('attach');
      return () => void log.push('detach');
    },
    consume: (next) => async (event, ctx) => {
      if (event.type !== 'notice.sent')
        await host?.publish({ type: 'notice.sent', agentId: name, data: null });
      return next(event, ctx);
    },
  };
  return { m, log, host: () => host };
}

describe('middleware attachment (issue 14, item 5)', () => {
  it('subscription middleware is attached, can publish through its host, and is detached on unsubscribe', async () => {
    const bus = new QEEventBus({ nodeId: 'att-1' });
    buses.push(bus);
    await bus.start();
    const t = tracked('per-sub');
    const notices: string[] = [];
    bus.subscribe('notice.*', (e) => void notices.push(e.agentId));
    const u = bus.subscribe('work.*', () => {}, { middleware: [t.m] });
    expect(t.log).toEqual(['attach']);
    expect(t.host()?.nodeId).toBe('att-1');
    await bus.publish({ type: 'work.item', agentId: 'a', data: null });
    await waitFor(() => notices.length === 1, 'the notice the middleware published through its host');
    expect(u()).toBe(true);
    expect(t.log).toEqual(['attach', 'detach']);
  });

  it('a middleware shared by two subscriptions is attached once and detached by the last one; stop detaches every one', async () => {
    const bus = new QEEventBus({ nodeId: 'att-2' });
    buses.push(bus);
    const wide = tracked('bus-wide');
    bus.use(wide.m);
    await bus.start();
    const shared = tracked('shared');
    const a = bus.subscribe('a.*', () => {}, { middleware: [shared.m] });
    bus.subscribe('b.*', () => {}, { middleware: [shared.m] });
    expect(shared.log).toEqual(['attach']);
    a();
    expect(shared.log).toEqual(['attach']);
    await bus.stop();
    expect(shared.log).toEqual(['attach', 'detach']);
    expect(wide.log).toEqual(['attach', 'detach']);
  });
});
