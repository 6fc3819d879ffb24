import { SpanKind } from '@opentelemetry/api';
import { type AgentEvent, QEEventBus } from '@qe/core';
import { deletePrefix, exited, startFixture, uniquePrefix, waitFor } from '@qe/test-utils';
import { describe, expect, it } from 'vitest';
import { createTracingMiddleware, extractContext } from '../src/index.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function run(args: string[]) {
  const lines: string[] = [];
  const proc = startFixture(new URL('./fixtures/traced.ts', import.meta.url), args, {
    onLine: (l) => lines.push(l),
  });
  return { proc, lines, exited: exited(proc) };
}

type SpanJson = {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Record<string, unknown>;
};
const spansOf = (lines: string[]): SpanJson[] =>
  JSON.parse(lines.find((l) => l.startsWith('spans '))!.slice(6));

describe('tracing', () => {
  it('a trace crosses two processes: the consumer span is a child of the producer span', async () => {
    const prefix = uniquePrefix('metrics');
    const consumer = run(['consumer', URL_, prefix]);
    try {
      await waitFor(() => consumer.lines.includes('ready'), 'the consumer', 20_000);
      const producer = run(['producer', URL_, prefix]);
      await producer.exited;
      await consumer.exited;
      const produced = spansOf(producer.lines);
      const consumed = spansOf(consumer.lines);
      const request = produced.find((s) => s.name === 'request')!;
      const publish = produced.find((s) => s.kind === SpanKind.PRODUCER)!;
      const process_ = consumed.find((s) => s.kind === SpanKind.CONSUMER)!;
      expect(publish.parentSpanId).toBe(request.spanId);
      expect(process_.traceId).toBe(request.traceId);
      expect(process_.parentSpanId).toBe(publish.spanId);
      expect(publish.attributes).toMatchObject({
        'messaging.system': 'qe',
        'messaging.operation.type': 'send',
        'messaging.destination.name': 'traced.job',
      });
      expect(process_.attributes).toMatchObject({
        'messaging.operation.type': 'process',
        'messaging.consumer.group.name': 'g',
      });
    } finally {
      consumer.proc.kill('SIGKILL');
      await deletePrefix(prefix, URL_);
    }
  });

  it('costs nothing without an SDK: events pass through untouched', async () => {
    const bus = new QEEventBus({ nodeId: 'no-sdk', middleware: [createTracingMiddleware()] });
    await bus.start();
    try {
      const got: AgentEvent[] = [];
      bus.subscribe('plain.*', (e) => void got.push(e));
      const e = await bus.publish({ type: 'plain.x', agentId: 'a', data: {} });
      await waitFor(() => got.length === 1, 'delivery');
      expect(got[0]).toBe(e);
      expect(got[0]!.metadata?.traceparent).toBeUndefined();
    } finally {
      await bus.stop();
    }
  });

  it('ignores a malformed traceparent instead of failing the handler', () => {
    expect(extractContext({ traceparent: 'garbage' })).toBeDefined();
    expect(
      extractContext({ traceparent: '00-00000000000000000000000000000000-0000000000000000-01' }),
    ).toBeDefined();
  });
});
