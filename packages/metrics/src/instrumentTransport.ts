import {
  type AgentEvent,
  ConfigError,
  type ConsumerSpec,
  type DeadLetterInfo,
  type Delivery,
  type DeliverySink,
  type PublishOptions,
  type Transport,
  type TransportConsumer,
} from '@qe/core';
import { Counter, register as defaultRegistry, Gauge, Histogram, type Registry } from 'prom-client';
import { METRIC_NAME } from './names.js';

export interface InstrumentOptions {
  registry?: Registry;
  /** Default `qe_`. */
  prefix?: string;
}

/**
 * Wraps a transport so its traffic is counted: publishes (events, errors,
 * duration), deliveries, acks, nacks and dead letters, plus the transport's own
 * `stats()` as gauges at scrape time. The wrapper is a `Transport` itself; it
 * changes no behaviour.
 */
export function instrumentTransport<T extends Transport>(
  inner: T,
  options: InstrumentOptions = {},
): Transport {
  const registry = options.registry ?? defaultRegistry;
  const p = options.prefix ?? 'qe_';
  if (!METRIC_NAME.test(`${p}x`))
    throw new ConfigError('prefix', `${JSON.stringify(p)} is not a valid metric name prefix`);
  const registers = [registry];
  const labels = ['transport'];
  const t = { transport: inner.name };
  const publishes = new Counter({
    name: `${p}transport_published_total`,
    help: 'Events the transport accepted.',
    labelNames: labels,
    registers,
  });
  const publishErrors = new Counter({
    name: `${p}transport_publish_errors_total`,
    help: 'Publish calls the transport rejected.',
    labelNames: labels,
    registers,
  });
  const publishSeconds = new Histogram({
    name: `${p}transport_publish_duration_seconds`,
    help: 'Time for the transport to accept a publish call.',
    labelNames: labels,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registers,
  });
  const settled = new Counter({
    name: `${p}transport_deliveries_total`,
    help: 'Deliveries handed to the bus, by how they were settled.',
    labelNames: ['transport', 'outcome'],
    registers,
  });
  new Gauge({
    name: `${p}transport_connected`,
    help: '1 when the transport is connected.',
    labelNames: labels,
    registers,
    collect() {
      this.set(t, inner.isConnected() ? 1 : 0);
    },
  });
  new Gauge({
    name: `${p}transport_backlog`,
    help: 'Events waiting inside the transport for this node, when it knows.',
    labelNames: labels,
    registers,
    collect() {
      const b = inner.stats().backlog;
      if (typeof b === 'number') this.set(t, b);
    },
  });

  const wrapDelivery = (d: Delivery): Delivery => ({
    get event(): AgentEvent {
      return d.event;
    },
    get attempt() {
      return d.attempt;
    },
    get publishedAt() {
      return d.publishedAt;
    },
    get transportId() {
      return d.transportId;
    },
    ack() {
      settled.inc({ ...t, outcome: 'ack' });
      d.ack();
    },
    nack(delayMs?: number) {
      settled.inc({ ...t, outcome: 'nack' });
      d.nack(delayMs);
    },
    deadLetter(info: DeadLetterInfo) {
      settled.inc({ ...t, outcome: 'dead_letter' });
      return d.deadLetter(info);
    },
  });

  const wrapper: Transport = {
    get name() {
      return inner.name;
    },
    get capabilities() {
      return inner.capabilities;
    },
    get deadLetters() {
      return inner.deadLetters;
    },
    connect: (ctx) => inner.connect(ctx),
    close: (options?: { timeoutMs?: number }) => inner.close(options),
    isConnected: () => inner.isConnected(),
    async publish(events: readonly AgentEvent[], opts?: PublishOptions) {
      const end = publishSeconds.startTimer(t);
      try {
        await inner.publish(events, opts);
        publishes.inc(t, events.length);
      } catch (err) {
        publishErrors.inc(t);
        throw err;
      } finally {
        end();
      }
    },
    consume(spec: ConsumerSpec, sink: DeliverySink): Promise<TransportConsumer> {
      return inner.consume(spec, {
        deliver: (d) => sink.deliver(wrapDelivery(d)),
        deliverMany: (ds) => sink.deliverMany(ds.map(wrapDelivery)),
        capacity: () => sink.capacity(),
        ready: () => sink.ready(),
        sheds: (pr) => sink.sheds(pr),
      });
    },
    healthCheck: () => inner.healthCheck(),
    stats: () => inner.stats(),
  };
  if (inner.getRecentEvents) wrapper.getRecentEvents = (q) => inner.getRecentEvents!(q);
  if (inner.replay) wrapper.replay = (q, f) => inner.replay!(q, f);
  // without it the bus would fall back to in-memory timers for long retries: a change of behaviour
  if (inner.scheduleRetry) wrapper.scheduleRetry = (e, target, ms) => inner.scheduleRetry!(e, target, ms);
  return wrapper;
}
