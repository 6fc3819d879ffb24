import { describe, expect, it } from 'vitest';
import { FAULTS, selectFaults, type Topology } from './faults/index.js';
import { buildSchedule } from './schedule.js';

const topology: Topology = {
  producers: ['p0', 'p1'],
  consumers: ['g0', 'g1', 'b0'],
  persistence: 'aof',
  cluster: false,
};
const opts = (seed: number, durationMs = 120_000) => ({ seed, durationMs, faults: FAULTS, topology });

describe('buildSchedule', () => {
  it('gives the same schedule for the same seed, and a different one for another seed', () => {
    const a = buildSchedule(opts(42));
    expect(a.length).toBeGreaterThan(5);
    expect(buildSchedule(opts(42))).toEqual(a);
    expect(buildSchedule(opts(43))).not.toEqual(a);
  });

  it('keeps faults one at a time, after the warm-up, healed before the cool-down, on targets that exist', () => {
    for (const seed of [1, 2, 3, 99, 12345]) {
      const s = buildSchedule({ ...opts(seed, 600_000), warmupMs: 5000, cooldownMs: 15_000 });
      expect(s[0]!.atMs).toBe(5000);
      for (let i = 0; i < s.length; i++) {
        const f = s[i]!;
        const fault = FAULTS.find((x) => x.name === f.fault)!;
        expect(f.index).toBe(i);
        expect(fault.targets(topology)).toContain(f.target);
        expect(f.durationMs).toBeGreaterThanOrEqual(fault.durationMs[0]);
        expect(f.durationMs).toBeLessThanOrEqual(fault.durationMs[1]);
        expect(f.atMs + f.durationMs).toBeLessThanOrEqual(600_000 - 15_000);
        if (i > 0) expect(f.atMs).toBeGreaterThanOrEqual(s[i - 1]!.atMs + s[i - 1]!.durationMs + 2000);
      }
    }
  });

  it('draws only the faults asked for, and over a long run every one of them', () => {
    const faults = selectFaults(['kill-consumer', 'poison']);
    const s = buildSchedule({ seed: 5, durationMs: 1_800_000, faults, topology });
    expect(new Set(s.map((f) => f.fault))).toEqual(new Set(['kill-consumer', 'poison']));
    const all = buildSchedule(opts(5, 1_800_000));
    const single = FAULTS.filter((f) => f.targets(topology).length > 0).map((f) => f.name);
    expect(new Set(all.map((f) => f.fault))).toEqual(new Set(single));
    expect(single).not.toContain('cluster-failover');
    const withCluster = buildSchedule({ ...opts(5, 1_800_000), topology: { ...topology, cluster: true } });
    const noBroker = FAULTS.filter((f) => !f.name.endsWith('-broker')).map((f) => f.name);
    expect(new Set(withCluster.map((f) => f.fault))).toEqual(new Set(noBroker));
    const withBroker = buildSchedule({
      ...opts(5, 1_800_000),
      topology: { ...topology, cluster: true, brokers: ['broker'] },
    });
    expect(new Set(withBroker.map((f) => f.fault))).toEqual(new Set(FAULTS.map((f) => f.name)));
  });

  it('rejects an unknown fault name, naming the known ones', () => {
    expect(() => selectFaults(['kill-everything'])).toThrow(
      /unknown fault kill-everything; known: kill-consumer/,
    );
  });
});
