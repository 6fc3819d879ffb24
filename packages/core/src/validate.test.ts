import { describe, expect, it } from 'vitest';
import { createEvent } from './builder.js';
import { ErrorCodes, ValidationError } from './errors.js';
import { EventPriority } from './event.js';
import { uuidv7 } from './id.js';
import { normalizeBatch, normalizeEvent } from './validate.js';

function errorOf(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (e) {
    return e as ValidationError;
  }
  throw new Error('expected a throw');
}

describe('event validation', () => {
  const ok = { type: 'task.create', agentId: 'a1', data: { n: 1 } };

  it('fills id (UUIDv7), timestamp and priority and keeps everything else', () => {
    const before = Date.now();
    const e = normalizeEvent({ ...ok, swarmId: 's', metadata: { correlationId: 'c' } });
    expect(e.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(e.timestamp).toBeGreaterThanOrEqual(before);
    expect(e.priority).toBe(EventPriority.NORMAL);
    expect(e.swarmId).toBe('s');
    expect(e.metadata).toEqual({ correlationId: 'c' });
  });

  it('returns a complete event as the same object (no copy on the hot path)', () => {
    const full = { ...ok, id: 'x', timestamp: 1, priority: 0 as const };
    expect(normalizeEvent(full)).toBe(full);
  });

  it.each([
    [{ ...ok, type: 'Task.Create' }, 'type'],
    [{ ...ok, type: 'a..b' }, 'type'],
    [{ ...ok, type: 7 }, 'type'],
    [{ ...ok, type: 'x'.repeat(300) }, 'type'],
    [{ ...ok, agentId: '' }, 'agentId'],
    [{ type: 'a', data: 1 }, 'agentId'],
    [{ ...ok, id: '' }, 'id'],
    [{ ...ok, timestamp: Number.NaN }, 'timestamp'],
    [{ ...ok, timestamp: -1 }, 'timestamp'],
    [{ ...ok, priority: 5 }, 'priority'],
    [{ ...ok, priority: 1.5 }, 'priority'],
    [{ type: 'a', agentId: 'x' }, 'data'],
    [{ ...ok, swarmId: 3 }, 'swarmId'],
    [{ ...ok, metadata: 'x' }, 'metadata'],
    [{ ...ok, metadata: { tags: 'x' } }, 'metadata.tags'],
    [{ ...ok, metadata: { retryCount: -1 } }, 'metadata.retryCount'],
    [{ ...ok, metadata: { traceparent: 'nope' } }, 'metadata.traceparent'],
    [null, 'event'],
    [[1], 'event'],
  ])('rejects %j naming field %s', (input, field) => {
    const err = errorOf(() => normalizeEvent(input));
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.code).toBe(ErrorCodes.VALIDATION);
    expect(err.field).toBe(field);
    expect(err.details?.field).toBe(field);
  });

  it('validates a batch whole and names the index of the bad event', () => {
    const err = errorOf(() => normalizeBatch([ok, ok, { ...ok, priority: 9 }]));
    expect(err.field).toBe('events[2].priority');
    expect(errorOf(() => normalizeBatch('nope')).field).toBe('events');
    expect(normalizeBatch([ok, ok])).toHaveLength(2);
  });
});

describe('createEvent builder (spec 000)', () => {
  it('builds a frozen event with every builder method', () => {
    const e = createEvent('agent.task.complete')
      .agentId('agent-001')
      .swarmId('swarm-123')
      .priority(EventPriority.HIGH)
      .data({ taskId: 'task-789', result: 'success' })
      .correlationId('req-456')
      .causationId('evt-1')
      .traceId('0af7651916cd43dd8448eb211c80319c')
      .spanId('b7ad6b7169203331')
      .tags('a', 'b')
      .version('2')
      .source('node-1')
      .timeout(500)
      .build();
    expect(e).toMatchObject({
      type: 'agent.task.complete',
      agentId: 'agent-001',
      swarmId: 'swarm-123',
      priority: 1,
      data: { taskId: 'task-789', result: 'success' },
      metadata: {
        correlationId: 'req-456',
        causationId: 'evt-1',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        tags: ['a', 'b'],
        version: '2',
        source: 'node-1',
        timeout: 500,
      },
    });
    expect(Object.isFrozen(e)).toBe(true);
    expect(() => {
      (e as { type: string }).type = 'x';
    }).toThrow(TypeError);
  });

  it('causedBy links causation and carries the correlation id', () => {
    const cause = createEvent('a.b').agentId('x').correlationId('corr').build();
    const e = createEvent('a.c').agentId('y').causedBy(cause).build();
    expect(e.metadata).toMatchObject({ causationId: cause.id, correlationId: 'corr' });
  });

  it('refuses to build without agentId or with a bad trace id', () => {
    expect(errorOf(() => createEvent('a.b').build()).field).toBe('agentId');
    expect(errorOf(() => createEvent('a.b').agentId('x').traceId('XYZ').build()).field).toBe('traceId');
    expect(errorOf(() => createEvent('A').agentId('x').build()).field).toBe('type');
  });
});

describe('uuidv7', () => {
  it('is time-ordered and unique, even past 4096 ids in one millisecond', () => {
    const ids = Array.from({ length: 20_000 }, () => uuidv7(1_700_000_000_000));
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });
});
