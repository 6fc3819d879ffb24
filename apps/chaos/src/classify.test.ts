import { describe, expect, it } from 'vitest';
import { type ClassifyInput, classify, type FaultWindow } from './classify.js';
import type { LedgerRecord } from './ledger.js';

const SUBS = ['group:workers', 'broadcast:b0'];
const killG0: FaultWindow = { index: 0, name: 'kill-consumer', target: 'g0', start: 10_000, end: 12_000 };
const redisKill: FaultWindow = { index: 1, name: 'redis-kill', target: 'redis', start: 30_000, end: 31_000 };

/** An event published at `t`, acknowledged, and handled once by both subscription sets. */
const clean = (key: string, t: number): LedgerRecord[] => [
  { k: 'p', key, t, node: 'p0' },
  { k: 'a', key, t: t + 1 },
  { k: 'h', key, id: `id-${key}`, sub: 'group:workers', node: 'g0', att: 1, t: t + 5, ok: true },
  { k: 'h', key, id: `id-${key}`, sub: 'broadcast:b0', node: 'b0', att: 1, t: t + 6, ok: true },
];
const handle = (
  key: string,
  sub: string,
  t: number,
  extra: Partial<Extract<LedgerRecord, { k: 'h' }>> = {},
) =>
  ({
    k: 'h',
    key,
    id: `id-${key}`,
    sub,
    node: sub === 'broadcast:b0' ? 'b0' : 'g1',
    att: 2,
    t,
    ok: true,
    ...extra,
  }) as LedgerRecord;

const input = (records: LedgerRecord[], o: Partial<ClassifyInput> = {}): ClassifyInput => ({
  records,
  faults: [killG0, redisKill],
  deadLetters: [],
  expectedSubs: SUBS,
  persistence: 'aof',
  beforeMs: 1000,
  afterMs: 5000,
  ...o,
});

describe('classify', () => {
  it('passes a clean ledger and counts what was published, acknowledged and failed', () => {
    const records = [
      ...clean('p0.0.0', 1000),
      ...clean('p0.0.1', 11_000),
      { k: 'p', key: 'p0.0.2', t: 11_500, node: 'p0' },
      { k: 'f', key: 'p0.0.2', t: 14_500, code: 'TIMEOUT', stored: 'unknown' },
    ] satisfies LedgerRecord[];
    const c = classify(input(records));
    expect(c.verdict).toEqual({ pass: true, reasons: [] });
    expect(c.totals).toMatchObject({
      published: 3,
      acknowledged: 2,
      failed: 1,
      lost: 0,
      duplicated: 0,
      unexpected: 0,
    });
    expect(c.perFault[0]!.counts).toMatchObject({ published: 2, acknowledged: 1, failed: 1 });
    expect(c.perFault.at(-1)!.label).toBe('none');
  });

  it('finds an acknowledged event one subscription set never handled: lost, attributed to its fault, verdict fails', () => {
    const records = [
      ...clean('p0.0.0', 1000),
      ...clean('p0.0.1', 11_000).filter((r) => !(r.k === 'h' && r.sub === 'broadcast:b0')),
    ];
    const c = classify(input(records));
    expect(c.totals.lost).toBe(1);
    expect(c.perFault[0]!.counts.lost).toBe(1);
    expect(c.anomalies).toEqual([
      expect.objectContaining({
        kind: 'lost',
        key: 'p0.0.1',
        sub: 'broadcast:b0',
        fault: '#0 kill-consumer@g0',
        allowed: false,
      }),
    ]);
    expect(c.verdict.pass).toBe(false);
    expect(c.verdict.reasons).toEqual(['1 acknowledged events lost with AOF appendfsync always (must be 0)']);
  });

  it('allows a duplicate inside a fault window with the same id, and fails one outside any window or with a new id', () => {
    const inside = classify(input([...clean('p0.0.1', 11_000), handle('p0.0.1', 'group:workers', 14_000)]));
    expect(inside.totals.duplicated).toBe(1);
    expect(inside.anomalies[0]!.detail).toBe('call 2 on g1 attempt 2');
    const storedTwice = classify(
      input([...clean('p0.0.1', 11_000), handle('p0.0.1', 'broadcast:b0', 11_010, { att: 1 })]),
    );
    expect(storedTwice.anomalies[0]!.detail).toBe('call 2 on b0 attempt 1, attempt 1 again: stored twice');
    // a member paused with its attempt 1 in hand runs it after another member's claimed attempt 2: a redelivery
    const late = clean('p0.0.1', 11_000).map((r) =>
      r.k === 'h' && r.sub === 'group:workers' ? { ...r, att: 2 } : r,
    );
    const paused = classify(input([...late, handle('p0.0.1', 'group:workers', 14_000, { att: 1 })]));
    expect(paused.anomalies[0]!.detail).toBe('call 2 on g1 attempt 1');
    expect(inside.perFault[0]!.counts.duplicated).toBe(1);
    expect(inside.verdict.pass).toBe(true);

    const outside = classify(input([...clean('p0.0.0', 50_000), handle('p0.0.0', 'group:workers', 50_100)]));
    expect(outside.totals.duplicated).toBe(1);
    expect(outside.anomalies[0]).toMatchObject({ kind: 'duplicate', fault: 'none', allowed: false });
    expect(outside.verdict.reasons).toEqual(['1 duplicates outside any fault window']);

    const newId = classify(
      input([...clean('p0.0.1', 11_000), handle('p0.0.1', 'group:workers', 14_000, { id: 'other' })]),
    );
    expect(newId.verdict.reasons).toEqual(['1 duplicates with a different event id (not removable by id)']);
  });

  it('flags deliveries that should not exist: an unknown key, a poison event handled, a publish that said stored: none', () => {
    const records: LedgerRecord[] = [
      ...clean('p0.0.0', 1000),
      handle('p9.0.0', 'group:workers', 2000),
      { k: 'p', key: 'p0.0.1', t: 3000, node: 'p0', poison: true },
      { k: 'a', key: 'p0.0.1', t: 3001 },
      handle('p0.0.1', 'group:workers', 3010),
      { k: 'p', key: 'p0.0.2', t: 4000, node: 'p0' },
      { k: 'f', key: 'p0.0.2', t: 4001, code: 'TIMEOUT', stored: 'none' },
      handle('p0.0.2', 'broadcast:b0', 4010),
    ];
    const deadLetters = [{ key: 'p0.0.1', sub: 'broadcast:b0', t: 3500 }];
    const c = classify(input(records, { deadLetters }));
    expect(c.totals.unexpected).toBe(3);
    expect(c.totals.deadLettered).toBe(1);
    expect(c.anomalies.map((a) => a.detail)).toEqual([
      'no publish of this key',
      'poison event handled',
      'publish said stored: none',
    ]);
    expect(c.verdict.reasons).toEqual(['3 unexpected deliveries']);
  });

  it('counts a poison event dead-lettered in every set as dead-lettered, and one dead-lettered nowhere as lost', () => {
    const poison: LedgerRecord[] = [
      { k: 'p', key: 'p1.0.0', t: 5000, node: 'p1', poison: true },
      { k: 'a', key: 'p1.0.0', t: 5001 },
      { ...(handle('p1.0.0', 'group:workers', 5010) as Extract<LedgerRecord, { k: 'h' }>), ok: false },
    ];
    const dead = SUBS.map((sub) => ({ key: 'p1.0.0', sub, t: 6000 }));
    expect(classify(input(poison, { deadLetters: dead })).totals).toMatchObject({ deadLettered: 2, lost: 0 });
    const c = classify(input(poison));
    expect(c.totals.lost).toBe(2);
    expect(c.anomalies[0]!.detail).toBe('poison event not dead-lettered');
  });

  it('without persistence: allows a loss in a redis-kill window the bus signalled, fails a silent one', () => {
    const lostAt = (t: number) => [...clean('p0.0.0', t)].filter((r) => r.k !== 'h');
    const signal: LedgerRecord = {
      k: 'log',
      node: 'g0',
      lvl: 'warn',
      msg: 'consumer group missing; re-creating',
      t: 31_500,
    };
    const signalled = classify(input([...lostAt(29_500), signal], { persistence: 'none' }));
    expect(signalled.totals).toMatchObject({ lost: 2, lostSignalled: 2 });
    expect(signalled.verdict.pass).toBe(true);

    const silent = classify(input(lostAt(29_500), { persistence: 'none' }));
    expect(silent.verdict.reasons).toEqual([
      '2 acknowledged events lost silently (outside a signalled Redis data wipe)',
    ]);
    // the same signal does not excuse a loss in another fault's window
    const elsewhere = classify(input([...lostAt(11_000), signal], { persistence: 'none' }));
    expect(elsewhere.verdict.pass).toBe(false);
    // nor does it excuse anything with AOF on
    expect(classify(input([...lostAt(29_500), signal])).verdict.pass).toBe(false);
  });

  it('fails on a process exit no fault caused, except under memory pressure on that process', () => {
    const pressure: FaultWindow = {
      index: 2,
      name: 'memory-pressure',
      target: 'g1',
      start: 40_000,
      end: 45_000,
    };
    const exits = [
      { node: 'g1', t: 42_000, code: null, signal: 'SIGABRT' },
      { node: 'b0', t: 60_000, code: 1, signal: null },
    ];
    const c = classify(input(clean('p0.0.0', 1000), { faults: [killG0, redisKill, pressure], exits }));
    expect(c.anomalies.map((a) => [a.key, a.allowed])).toEqual([
      ['g1', true],
      ['b0', false],
    ]);
    expect(c.verdict.reasons).toEqual(['1 process exits no fault caused']);
  });

  it('pub/sub (at-most-once): a loss is allowed and counted, a duplicate fails even inside a fault window', () => {
    const ps = (key: string, t: number): LedgerRecord[] => [
      { k: 'p', key, t, node: 'sp0' },
      { k: 'a', key, t: t + 1 },
    ];
    const atMostOnce = (producer: string) => producer === 'sp0';
    const expectedSubs = (producer: string) => (producer === 'sp0' ? ['broadcast:s0'] : SUBS);
    const gap: LedgerRecord = {
      k: 'log',
      node: 's0',
      lvl: 'warn',
      msg: 'redis pub/sub: subscriber connection lost; events published until it is back are lost',
      t: 11_200,
    };
    const lost = classify(
      input([...ps('sp0.0.0', 11_000), gap, ...clean('p0.0.0', 1000)], { atMostOnce, expectedSubs }),
    );
    expect(lost.totals).toMatchObject({ lost: 1, lostAtMostOnce: 1 });
    expect(lost.anomalies[0]).toMatchObject({
      kind: 'lost',
      allowed: true,
      detail: 'at-most-once, gap logged',
    });
    expect(lost.verdict.pass).toBe(true);

    const twice = classify(
      input(
        [
          ...ps('sp0.0.1', 11_000),
          handle('sp0.0.1', 'broadcast:s0', 11_010, { node: 's0' }),
          handle('sp0.0.1', 'broadcast:s0', 11_020, { node: 's0' }),
        ],
        { atMostOnce, expectedSubs },
      ),
    );
    expect(twice.verdict.reasons).toEqual(['1 duplicates of at-most-once (pub/sub, WS broadcast) events']);
  });

  describe('the broker over WebSocket (--broker)', () => {
    const WS = ['ws:group:wsworkers', 'ws:broadcast:wb0'];
    const expectedSubs = (producer: string) => (producer === 'wp0' ? WS : SUBS);
    // as in run.ts: the WS broadcast subscriber is at-most-once across a reconnect, the WS group is not
    const atMostOnce = (producer: string, sub: string) =>
      producer.startsWith('s') ? true : sub.startsWith('ws:broadcast:') ? ('faults' as const) : false;
    const ws = (key: string, t: number): LedgerRecord[] => [
      { k: 'p', key, t, node: 'wp0' },
      { k: 'a', key, t: t + 1 },
    ];
    const call = (key: string, sub: string, t: number, o: Partial<Extract<LedgerRecord, { k: 'h' }>> = {}) =>
      handle(key, sub, t, { node: sub === WS[0] ? 'wg0' : 'wb0', att: 1, ...o });
    const killWg0: FaultWindow = {
      index: 0,
      name: 'kill-consumer',
      target: 'wg0',
      start: 10_000,
      end: 12_000,
    };
    const run = (records: LedgerRecord[]) =>
      classify(input(records, { faults: [killWg0], expectedSubs, atMostOnce }));

    it('group: an acknowledged event the group never handled is lost and fails, even inside a fault window', () => {
      const c = run([...ws('wp0.0.0', 11_000), call('wp0.0.0', WS[1]!, 11_010)]);
      expect(c.totals).toMatchObject({ lost: 1, lostAtMostOnce: 0 });
      expect(c.anomalies[0]).toMatchObject({ kind: 'lost', sub: WS[0], allowed: false });
      expect(c.verdict.reasons).toEqual([
        '1 acknowledged events lost with AOF appendfsync always (must be 0)',
      ]);
    });

    it('group: a redelivery inside the window passes; one outside, or under a new id, fails', () => {
      const ok = run([
        ...ws('wp0.0.1', 11_000),
        call('wp0.0.1', WS[0]!, 11_010),
        call('wp0.0.1', WS[0]!, 14_000, { att: 2 }),
        call('wp0.0.1', WS[1]!, 11_010),
      ]);
      expect(ok.totals.duplicated).toBe(1);
      expect(ok.verdict).toEqual({ pass: true, reasons: [] });
      const late = run([
        ...ws('wp0.0.2', 1000),
        call('wp0.0.2', WS[0]!, 1010),
        call('wp0.0.2', WS[0]!, 3000, { att: 2 }),
        call('wp0.0.2', WS[1]!, 1010),
      ]);
      expect(late.verdict.reasons).toEqual(['1 duplicates outside any fault window']);
    });

    it('broadcast: a loss inside a fault window is allowed and counted (gap logged); outside any window it fails', () => {
      const gap: LedgerRecord = { k: 'log', node: 'wb0', lvl: 'warn', msg: 'ws connection lost', t: 10_500 };
      const inside = run([...ws('wp0.0.3', 11_000), call('wp0.0.3', WS[0]!, 11_010), gap]);
      expect(inside.totals).toMatchObject({ lost: 1, lostAtMostOnce: 1 });
      expect(inside.anomalies.find((a) => a.kind === 'lost')).toMatchObject({
        sub: WS[1],
        allowed: true,
        detail: 'at-most-once, gap logged',
      });
      expect(inside.verdict.pass).toBe(true);
      const killWb0 = { ...killWg0, target: 'wb0' };
      const killed = classify(
        input([...ws('wp0.0.6', 11_000), call('wp0.0.6', WS[0]!, 11_010)], {
          faults: [killWb0],
          expectedSubs,
          atMostOnce,
        }),
      );
      expect(killed.anomalies[0]).toMatchObject({ allowed: true, detail: 'at-most-once, subscriber killed' });
      const steady = run([...ws('wp0.0.4', 1000), call('wp0.0.4', WS[0]!, 1010)]);
      expect(steady.totals).toMatchObject({ lost: 1, lostAtMostOnce: 0 });
      expect(steady.anomalies[0]).toMatchObject({
        kind: 'lost',
        allowed: false,
        detail: 'at-most-once, but outside any fault window',
      });
      expect(steady.verdict.reasons).toEqual([
        '1 at-most-once (WS broadcast) events lost outside any fault window',
      ]);
    });

    it('broadcast: an event delivered twice fails, even inside a fault window', () => {
      const c = run([
        ...ws('wp0.0.5', 11_000),
        call('wp0.0.5', WS[0]!, 11_010),
        call('wp0.0.5', WS[1]!, 11_010),
        call('wp0.0.5', WS[1]!, 11_500, { att: 2 }),
      ]);
      expect(c.verdict.reasons).toEqual(['1 duplicates of at-most-once (pub/sub, WS broadcast) events']);
    });
  });

  it('takes dead letters from the ledger too (pub/sub has no store to read back)', () => {
    const poison: LedgerRecord[] = [
      { k: 'p', key: 'p1.0.0', t: 5000, node: 'p1', poison: true },
      { k: 'a', key: 'p1.0.0', t: 5001 },
      ...SUBS.map((sub): LedgerRecord => ({ k: 'd', key: 'p1.0.0', sub, t: 5100 })),
    ];
    expect(classify(input(poison)).totals).toMatchObject({ deadLettered: 2, lost: 0 });
  });
});
