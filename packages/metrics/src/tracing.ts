import {
  type Context,
  context,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { AgentEvent, ConsumeFn, EventMetadata, Middleware, PublishFn } from '@qe/core';

export interface TracingOptions {
  /** Default: `trace.getTracer('@qe/metrics')` (a no-op until an SDK registers). */
  tracer?: Tracer;
  /** `messaging.system`. Default `qe`. */
  system?: string;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The remote parent carried in an event's metadata, as a context to start a span in. */
export function extractContext(metadata: EventMetadata | undefined): Context {
  const m = metadata?.traceparent === undefined ? null : TRACEPARENT.exec(metadata.traceparent);
  if (!m) return ROOT_CONTEXT;
  const sc = {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: Number.parseInt(m[3]!, 16) & TraceFlags.SAMPLED,
    isRemote: true,
    ...(typeof metadata?.tracestate === 'string' ? {} : {}),
  };
  return isSpanContextValid(sc) ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/** W3C trace context of a span, for an event's metadata. */
export function injectSpan(span: Span): { traceparent: string; tracestate?: string } {
  const sc = span.spanContext();
  const flags = (sc.traceFlags & TraceFlags.SAMPLED).toString(16).padStart(2, '0');
  const out: { traceparent: string; tracestate?: string } = {
    traceparent: `00-${sc.traceId}-${sc.spanId}-${flags}`,
  };
  const ts = sc.traceState?.serialize();
  if (ts) out.tracestate = ts;
  return out;
}

/**
 * OpenTelemetry tracing with `@opentelemetry/api` only (no SDK dependency):
 * a PRODUCER span per published event, whose W3C `traceparent`/`tracestate`
 * travel in the event's metadata, and a CONSUMER span per handler call, child
 * of the producer span, so one trace crosses processes and transports.
 * Attributes follow the OpenTelemetry messaging conventions.
 *
 * With no SDK registered the tracer is a no-op: spans are not recording and
 * events are passed through untouched (no copy).
 */
export function createTracingMiddleware(options: TracingOptions = {}): Middleware {
  const system = options.system ?? 'qe';
  const tracerOf = () => options.tracer ?? trace.getTracer('@qe/metrics');
  // Whether an SDK is registered, looked up at most every second: with none, both
  // hooks reduce to a call of `next` (no span objects, no attribute maps).
  let checkedAt = Number.NEGATIVE_INFINITY;
  let enabled = false;
  const sdk = () => {
    if (options.tracer) return true;
    const now = performance.now();
    if (now - checkedAt > 1000) {
      checkedAt = now;
      const provider = trace.getTracerProvider() as { getDelegate?: () => object };
      const delegate = provider.getDelegate?.() ?? provider;
      enabled = delegate.constructor.name !== 'NoopTracerProvider';
    }
    return enabled;
  };
  return {
    name: 'tracing',
    publish(next: PublishFn): PublishFn {
      const traced = async (events: readonly AgentEvent[], ctx: Parameters<PublishFn>[1]) => {
        const tracer = tracerOf();
        const spans: Span[] = [];
        let out: AgentEvent[] | undefined;
        for (let i = 0; i < events.length; i++) {
          const e = events[i]!;
          const parent = context.active();
          const span = tracer.startSpan(
            `publish ${e.type}`,
            {
              kind: SpanKind.PRODUCER,
              attributes: {
                'messaging.system': system,
                'messaging.operation.type': 'send',
                'messaging.operation.name': 'publish',
                'messaging.destination.name': e.type,
                'messaging.message.id': e.id,
                'messaging.batch.message_count': events.length,
                'qe.agent_id': e.agentId,
                'qe.priority': e.priority,
              },
            },
            parent,
          );
          spans.push(span);
          if (!isSpanContextValid(span.spanContext())) continue; // no SDK: nothing to carry
          out ??= events.slice();
          out[i] = { ...e, metadata: { ...e.metadata, ...injectSpan(span) } };
        }
        try {
          await next(out ?? events, ctx);
        } catch (err) {
          for (const s of spans) {
            s.recordException(err as Error);
            s.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
          }
          throw err;
        } finally {
          for (const s of spans) s.end();
        }
      };
      return (events, ctx) => (sdk() ? traced(events, ctx) : next(events, ctx));
    },
    consume(next: ConsumeFn): ConsumeFn {
      return (event, ctx) => {
        if (!sdk()) return next(event, ctx);
        const tracer = tracerOf();
        const span = tracer.startSpan(
          `process ${event.type}`,
          {
            kind: SpanKind.CONSUMER,
            attributes: {
              'messaging.system': system,
              'messaging.operation.type': 'process',
              'messaging.operation.name': 'process',
              'messaging.destination.name': event.type,
              'messaging.message.id': event.id,
              'messaging.consumer.group.name': ctx.group ?? ctx.subscriptionId,
              'qe.attempt': ctx.attempt,
            },
          },
          extractContext(event.metadata),
        );
        if (!span.isRecording()) {
          // no SDK: skip the context switch, keep the handler's own result
          span.end();
          return next(event, ctx);
        }
        const done = (err?: unknown) => {
          if (err !== undefined) {
            span.recordException(err as Error);
            span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
          }
          span.end();
        };
        try {
          const r = context.with(trace.setSpan(context.active(), span), () => next(event, ctx));
          if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function')
            return (r as Promise<unknown>).then(
              (v) => {
                done();
                return v;
              },
              (e) => {
                done(e);
                throw e;
              },
            );
          done();
          return r;
        } catch (err) {
          done(err);
          throw err;
        }
      };
    },
  };
}
