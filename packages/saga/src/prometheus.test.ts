import { QEEventBus } from '@qe/core';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SagaOrchestrator, SagaWorker } from './index.js';
import { registerSagaMetrics } from './prometheus.js';

describe('Prometheus metrics', () => {
  it('mirror stats() at scrape time: counters, running, step duration quantiles', async () => {
    const bus = new QEEventBus({ nodeId: 'prom' });
    await bus.start();
    const w = new SagaWorker({
      bus,
      name: 'w',
      handler: (c) => (c.context.fail ? Promise.reject(new Error('x')) : {}),
    });
    await w.start();
    const o = new SagaOrchestrator({ bus }).define({ name: 'one', steps: [{ name: 'a', worker: 'w' }] });
    await o.start();
    const registry = new Registry();
    registerSagaMetrics(registry, o);
    await o.execute('one', {});
    await o.execute('one', { fail: true });
    const text = await registry.metrics();
    expect(text).toMatch(/^qe_sagas_started_total 2$/m);
    expect(text).toMatch(/^qe_sagas_completed_total 1$/m);
    expect(text).toMatch(/^qe_sagas_compensated_total 1$/m);
    expect(text).toMatch(/^qe_sagas_running 0$/m);
    expect(text).toMatch(/^qe_saga_step_duration_seconds\{step="a",quantile="0.5"\} [0-9.e-]+$/m);
    // a second scrape does not count twice
    expect(await registry.metrics()).toMatch(/^qe_sagas_started_total 2$/m);
    expect(() => registerSagaMetrics(new Registry(), o, { prefix: 'bad-' })).toThrow(
      expect.objectContaining({ code: 'CONFIG' }),
    );
    await o.stop();
    await bus.stop();
  });
});
