import { assertKnownKeys } from '@qe/core';
import { checkId, checkNumber, checkPositiveInt, InvalidSpecError } from './errors.js';

export interface PoolSample {
  agents: number;
  capacity: number;
  active: number;
  waiting: number;
}

export interface ScaleSignal {
  pool: string;
  direction: 'up' | 'down';
  currentAgents: number;
  suggestedAgents: number;
  /** (running + waiting) / capacity, in percent, averaged over the window. */
  pressure: number;
  waiting: number;
  at: number;
}

export interface AutoscaleOptions {
  pool: string;
  /** Pressure ((running + waiting) / capacity) at or above which the pool should grow. Default 0.8. */
  scaleUpAt?: number;
  /** Pressure at or below which it should shrink. Must be below `scaleUpAt` (the hysteresis band). Default 0.3. */
  scaleDownAt?: number;
  /** The pressure must stay past a threshold for this long. Default 5,000 ms. */
  windowMs?: number;
  /** No signal within this time of the previous one. Default 10,000 ms. */
  cooldownMs?: number;
  /** The pressure the suggested size aims at. Default halfway between the thresholds. */
  targetPressure?: number;
  minAgents?: number;
  maxAgents?: number;
  /** How often the pool is sampled. Default windowMs / 5. */
  sampleEveryMs?: number;
  /** What spawns or stops agents. Errors are reported on the node's `error` event and counted. */
  onSignal: (signal: ScaleSignal) => void | Promise<void>;
}

const KEYS = [
  'pool',
  'scaleUpAt',
  'scaleDownAt',
  'windowMs',
  'cooldownMs',
  'targetPressure',
  'minAgents',
  'maxAgents',
  'sampleEveryMs',
  'onSignal',
];

/**
 * Decides when a pool should grow or shrink. It samples the pool's pressure;
 * a signal fires when every sample of the last `windowMs` is past a threshold
 * (so a spike does not count), never within `cooldownMs` of the previous
 * one, and the two thresholds are apart (hysteresis), so a pool sitting
 * between them gets no signal at all.
 */
export class Autoscaler {
  private readonly o: Required<Omit<AutoscaleOptions, 'onSignal'>> & Pick<AutoscaleOptions, 'onSignal'>;
  private readonly samples: { at: number; pressure: number; s: PoolSample }[] = [];
  private lastSignalAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  errors = 0;

  constructor(
    options: AutoscaleOptions,
    private readonly sample: () => PoolSample,
    private readonly emit: (s: ScaleSignal) => void,
  ) {
    if (options === null || typeof options !== 'object')
      throw new InvalidSpecError('autoscale', 'must be an object');
    assertKnownKeys(options, KEYS, 'autoscale.', {}, 'validation');
    checkId('pool', options.pool);
    if (typeof options.onSignal !== 'function') throw new InvalidSpecError('onSignal', 'must be a function');
    const up = checkNumber('scaleUpAt', options.scaleUpAt, 0.8, 0, 100);
    const down = checkNumber('scaleDownAt', options.scaleDownAt, 0.3, 0, 100);
    if (down >= up)
      throw new InvalidSpecError('scaleDownAt', `must be below scaleUpAt (${up}): the gap is the hysteresis`);
    const windowMs = checkPositiveInt('windowMs', options.windowMs, 5000);
    const minAgents = checkPositiveInt('minAgents', options.minAgents, 1, 0);
    const maxAgents = checkPositiveInt('maxAgents', options.maxAgents, 1000, 1);
    if (maxAgents < minAgents) throw new InvalidSpecError('maxAgents', 'must be at least minAgents');
    this.o = {
      pool: options.pool,
      scaleUpAt: up,
      scaleDownAt: down,
      windowMs,
      cooldownMs: checkPositiveInt('cooldownMs', options.cooldownMs, 10_000, 0),
      targetPressure: checkNumber('targetPressure', options.targetPressure, (up + down) / 2, 0.01, 100),
      minAgents,
      maxAgents,
      sampleEveryMs: checkPositiveInt(
        'sampleEveryMs',
        options.sampleEveryMs,
        Math.max(10, Math.floor(windowMs / 5)),
      ),
      onSignal: options.onSignal,
    };
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.o.sampleEveryMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One evaluation (exposed for the node's timer). */
  tick(now = Date.now()): ScaleSignal | undefined {
    const s = this.sample();
    const pressure = s.capacity > 0 ? (s.active + s.waiting) / s.capacity : s.waiting > 0 ? 1e9 : 0;
    this.samples.push({ at: now, pressure, s });
    while (this.samples.length > 0 && this.samples[0]!.at < now - this.o.windowMs - this.o.sampleEveryMs)
      this.samples.shift();
    const first = this.samples[0];
    if (!first || now - first.at < this.o.windowMs) return undefined; // the window is not covered yet
    if (now - this.lastSignalAt < this.o.cooldownMs) return undefined;
    const inWindow = this.samples.filter((x) => x.at >= now - this.o.windowMs);
    const up = inWindow.every((x) => x.pressure >= this.o.scaleUpAt);
    const down = !up && inWindow.every((x) => x.pressure <= this.o.scaleDownAt);
    if (!up && !down) return undefined;
    const perAgent = s.agents > 0 ? s.capacity / s.agents : 1;
    const demand = s.active + s.waiting;
    let suggested = Math.ceil(demand / (this.o.targetPressure * perAgent));
    suggested = Math.min(this.o.maxAgents, Math.max(this.o.minAgents, suggested));
    if (up && suggested <= s.agents) suggested = Math.min(this.o.maxAgents, s.agents + 1);
    if (down && suggested >= s.agents) return undefined; // already at the floor
    if (up && suggested <= s.agents) return undefined; // already at the ceiling
    const avg = inWindow.reduce((n, x) => n + Math.min(x.pressure, 1e6), 0) / inWindow.length;
    const sig: ScaleSignal = {
      pool: this.o.pool,
      direction: up ? 'up' : 'down',
      currentAgents: s.agents,
      suggestedAgents: suggested,
      pressure: Math.round(avg * 10_000) / 100,
      waiting: s.waiting,
      at: now,
    };
    this.lastSignalAt = now;
    this.samples.length = 0; // the next signal needs a fresh full window
    this.emit(sig);
    try {
      const r = this.o.onSignal(sig);
      if (r && typeof (r as Promise<void>).catch === 'function')
        (r as Promise<void>).catch(() => this.errors++);
    } catch {
      this.errors++;
    }
    return sig;
  }
}
