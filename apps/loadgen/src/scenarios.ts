import type { PhaseSpec } from './messages.js';
import type { PhaseResult } from './run.js';

/** Spec 000's targets. */
export const SPEC_TARGETS = {
  throughput: 10_000,
  sustainedRate: 5_000,
  sustainedMs: 5 * 60_000,
  burstRate: 50_000,
  avgMs: 50,
  p95Ms: 100,
  p99Ms: 200,
  rssBytes: 512 * 1024 * 1024,
} as const;

/** Spec 000's test suite. */
export type ScenarioName = 'throughput' | 'latency' | 'stress' | 'sustained' | 'burst';
/** Every scenario name, in the order the CLI lists them. */
export const SCENARIOS: readonly ScenarioName[] = ['throughput', 'latency', 'stress', 'sustained', 'burst'];

/** The knobs of a scenario; see `scenarioDefaults`. */
export interface ScenarioParams {
  /** Events/s (open loop), or the first step of `stress`; 0 = max-throughput mode. */
  rate: number;
  durationMs: number;
  /** stress: the p99 a step must stay under to pass. */
  p99BudgetMs: number;
  stepFactor: number;
  maxRate: number;
}

/** Defaults per scenario (spec 000's test suite). */
export function scenarioDefaults(name: ScenarioName): ScenarioParams {
  const base = { p99BudgetMs: SPEC_TARGETS.p99Ms, stepFactor: 1.5, maxRate: 1_000_000 };
  switch (name) {
    case 'throughput':
      return { ...base, rate: 0, durationMs: 10_000 };
    case 'latency':
      return { ...base, rate: 10_000, durationMs: 10_000 };
    case 'stress':
      return { ...base, rate: 5_000, durationMs: 5_000 };
    case 'sustained':
      return { ...base, rate: SPEC_TARGETS.sustainedRate, durationMs: SPEC_TARGETS.sustainedMs };
    case 'burst':
      return { ...base, rate: SPEC_TARGETS.burstRate, durationMs: 2_000 };
  }
}

/**
 * An open-loop phase kept up when nothing was lost, the producers issued at
 * least 97 % of the offered rate, and the last event arrived within max(1 s,
 * 10 % of the duration) after the schedule ended.
 */
export function keptUp(r: PhaseResult): boolean {
  if (r.counts.lost > 0 || r.counts.sent === 0) return false;
  if (r.spec.rate === 0) return true;
  return (
    r.sendRate >= 0.97 * r.spec.rate &&
    r.wallMs <= r.spec.durationMs + Math.max(1000, r.spec.durationMs * 0.1)
  );
}

/** Whether a stress step passed: kept up with p99 under the budget. */
export function stepPassed(r: PhaseResult, p: ScenarioParams): boolean {
  return keptUp(r) && r.histogram.quantileMs(0.99) <= p.p99BudgetMs;
}

/**
 * The phase plan: one phase, or stress's ramp. A step that loses events or
 * falls behind the schedule ends the ramp. A step that keeps up but misses
 * the p99 budget is run once more at the same rate (this machine pauses every
 * process for 10-15 ms at random moments; one pause can push a short step's
 * p99 over a tight budget); if that fails too, the rate counts as failed and
 * the ramp goes on, ending after two consecutive failed rates. Every attempt
 * is reported; the verdict takes the highest passing step.
 */
export function planFor(
  name: ScenarioName,
  p: ScenarioParams,
): (done: readonly PhaseResult[]) => PhaseSpec | null {
  if (name !== 'stress')
    return (done) => (done.length === 0 ? { rate: p.rate, durationMs: p.durationMs } : null);
  const step = (rate: number) => {
    const next = Math.round(rate * p.stepFactor);
    return next > p.maxRate ? null : { rate: next, durationMs: p.durationMs };
  };
  return (done) => {
    if (done.length === 0) return { rate: p.rate, durationMs: p.durationMs };
    const last = done[done.length - 1]!;
    if (stepPassed(last, p)) return step(last.spec.rate);
    if (!keptUp(last)) return null;
    const atRate = done.filter((r) => r.spec.rate === last.spec.rate);
    if (atRate.length < 2) return { rate: last.spec.rate, durationMs: p.durationMs };
    // this rate failed twice: stop if the rate below it failed as well
    const lower = done.filter((r) => r.spec.rate < last.spec.rate);
    const below = lower.length === 0 ? undefined : Math.max(...lower.map((r) => r.spec.rate));
    const belowFailed = below !== undefined && !done.some((r) => r.spec.rate === below && stepPassed(r, p));
    return belowFailed ? null : step(last.spec.rate);
  };
}

/** One line of a verdict: a spec 000 target, what was measured, and whether it holds. */
export interface Check {
  name: string;
  target: string;
  actual: string;
  pass: boolean;
}

const fmt = (n: number, d = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** The highest stress step that passed, if any. */
export function bestStep(results: readonly PhaseResult[], p: ScenarioParams): PhaseResult | undefined {
  let best: PhaseResult | undefined;
  for (const r of results) if (stepPassed(r, p) && (!best || r.spec.rate > best.spec.rate)) best = r;
  return best;
}

/** The phase whose numbers the verdict and comparison use. */
export function headline(
  name: ScenarioName,
  results: readonly PhaseResult[],
  p: ScenarioParams,
): PhaseResult | undefined {
  if (name === 'stress') return bestStep(results, p) ?? results[0];
  return results[0];
}

/** Spec 000's verdict for a scenario's results. */
export function verdict(name: ScenarioName, results: readonly PhaseResult[], p: ScenarioParams): Check[] {
  const h = headline(name, results, p);
  if (!h) return [{ name: 'ran', target: 'at least one phase', actual: 'none', pass: false }];
  const snap = h.histogram.snapshot();
  const checks: Check[] = [];
  const lost = results.reduce((a, r) => a + r.counts.lost, 0);
  const dups = results.reduce((a, r) => a + r.counts.duplicates, 0);
  checks.push({ name: 'no lost events', target: '0 lost', actual: `${fmt(lost)} lost`, pass: lost === 0 });
  checks.push({
    name: 'no duplicates',
    target: '0 duplicated',
    actual: `${fmt(dups)} duplicated`,
    pass: dups === 0,
  });
  if (name === 'throughput') {
    checks.push({
      name: 'throughput',
      target: `>= ${fmt(SPEC_TARGETS.throughput)} events/s`,
      actual: `${fmt(h.deliveredRate)} events/s`,
      pass: h.deliveredRate >= SPEC_TARGETS.throughput,
    });
  } else if (name === 'stress') {
    const best = bestStep(results, p);
    checks.push({
      name: `highest rate with p99 <= ${p.p99BudgetMs} ms`,
      target: `>= ${fmt(SPEC_TARGETS.throughput)} events/s`,
      actual: best ? `${fmt(best.spec.rate)} events/s` : 'no step passed',
      pass: best !== undefined && best.spec.rate >= SPEC_TARGETS.throughput,
    });
  } else {
    const want =
      name === 'sustained'
        ? SPEC_TARGETS.sustainedRate
        : name === 'burst'
          ? SPEC_TARGETS.burstRate
          : SPEC_TARGETS.throughput;
    checks.push({
      name: `${name === 'latency' ? 'throughput' : name} rate kept up`,
      target: `>= ${fmt(want)} events/s offered, all delivered on schedule`,
      actual: `${fmt(h.spec.rate)} offered, ${fmt(h.sendRate)} sent/s, ${fmt(h.deliveredRate)} delivered/s${keptUp(h) ? '' : ' (fell behind)'}`,
      pass: h.spec.rate >= want && keptUp(h),
    });
    if (name === 'sustained')
      checks.push({
        name: 'sustained duration',
        target: `>= ${SPEC_TARGETS.sustainedMs / 60_000} min`,
        actual: `${fmt(h.spec.durationMs / 60_000, 2)} min${h.spec.durationMs < SPEC_TARGETS.sustainedMs ? ' (shortened with --duration)' : ''}`,
        pass: h.spec.durationMs >= SPEC_TARGETS.sustainedMs,
      });
  }
  // max-throughput mode queues up to --max-in-flight sends on purpose, so its
  // latencies measure that queue; spec 000's latency targets are judged by the
  // open-loop scenarios (the table still shows them)
  if (name !== 'throughput') {
    checks.push({
      name: 'average latency',
      target: `< ${SPEC_TARGETS.avgMs} ms`,
      actual: `${fmt(snap.mean, 2)} ms`,
      pass: snap.mean < SPEC_TARGETS.avgMs,
    });
    checks.push({
      name: 'p95 latency',
      target: `< ${SPEC_TARGETS.p95Ms} ms`,
      actual: `${fmt(snap.p95, 2)} ms`,
      pass: snap.p95 < SPEC_TARGETS.p95Ms,
    });
    checks.push({
      name: 'p99 latency',
      target: `< ${SPEC_TARGETS.p99Ms} ms`,
      actual: `${fmt(snap.p99, 2)} ms`,
      pass: snap.p99 < SPEC_TARGETS.p99Ms,
    });
  }
  const rss = Math.max(...results.map((r) => Math.max(r.rss.producerMax, r.rss.consumerMax)));
  checks.push({
    name: 'memory (RSS, largest process)',
    target: '< 512 MB',
    actual: `${fmt(rss / 1048576)} MB`,
    pass: rss < SPEC_TARGETS.rssBytes,
  });
  return checks;
}
