/**
 * The call shapes of the spec documents, written as their users would
 * (spec 003: `publish(type, data)`; spec 001: `subscribe(pattern, options,
 * handler)`), beside the bus's own shapes.
 */

import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { type AgentEvent, EventPriority, QEEventBus } from '../src/index.js';

const buses: QEEventBus[] = [];
afterEach(async () => {
  for (const b of buses.splice(0)) await b.stop();
});
async function bus() {
  const b = new QEEventBus({ nodeId: 'user-service' });
  await b.start();
  buses.push(b);
  return b;
}

describe('spec call shapes', () => {
  it("spec 003: publish('user.created', data) publishes as this node, and returns the event", async () => {
    const eventBus = await bus();
    const seen: AgentEvent[] = [];
    eventBus.subscribe('user.created', async (payload) => {
      seen.push(payload);
    });
    const published = await eventBus.publish('user.created', {
      userId: 'user-123',
      email: 'user@example.com',
      timestamp: new Date(0).toISOString(),
    });
    expect(typeof published.id).toBe('string');
    await waitFor(() => seen.length === 1, 'the event');
    expect(seen[0]).toMatchObject({
      id: published.id,
      type: 'user.created',
      agentId: 'user-service',
      priority: EventPriority.NORMAL,
      data: { userId: 'user-123' },
    });
    const withOptions = await eventBus.publish(
      'user.deleted',
      { userId: 'user-123' },
      { agentId: 'admin-ui', priority: EventPriority.HIGH, metadata: { correlationId: 'req-1' } },
    );
    expect(withOptions).toMatchObject({
      agentId: 'admin-ui',
      priority: 1,
      metadata: { correlationId: 'req-1' },
    });
    await expect(eventBus.publish('user.created', {}, { prority: 1 } as never)).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'prority',
    });
    await expect(eventBus.publish('Bad Type', {})).rejects.toMatchObject({ code: 'VALIDATION' });
  });

  it('spec 001: subscribe(pattern, options, handler) and arrays of patterns', async () => {
    const eventBus = await bus();
    const got: string[] = [];
    const u = eventBus.subscribe('resource.intensive', { maxConcurrency: 5 }, async (event) => {
      got.push(event.type);
    });
    expect(typeof u.id).toBe('string');
    eventBus.subscribe(['billing.*', 'payment.*'], async (event) => {
      got.push(event.type);
    });
    await eventBus.publish('resource.intensive', {});
    await eventBus.publish('payment.processed', {});
    await waitFor(() => got.length === 2, 'both events');
    expect(got.sort()).toEqual(['payment.processed', 'resource.intensive']);
    expect(() => eventBus.subscribe('x.y', { concurrency: 5 } as never, () => {})).toThrow(/maxConcurrency/);
    expect(() => eventBus.subscribe('x.y', {} as never, {} as never)).toThrow(/handler/);
  });
});
