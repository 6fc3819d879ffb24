import { describe, expect, it } from 'vitest';
import { Ledger } from './ledger.js';

describe('Ledger', () => {
  it('counts lost, duplicated, failed-but-delivered and unknown events against what was sent', () => {
    const l = new Ledger();
    for (let s = 0; s < 5000; s++) if (s !== 17 && s !== 4999) l.record(0, s); // two lost
    expect(l.record(0, 5)).toBe(false); // a duplicate
    l.record(0, 5);
    l.record(1, 0);
    l.record(1, 2); // seq 2 of producer 1 failed to send but arrived
    l.record(1, 9); // nobody sent 9 (producer 1 attempted 3)
    const c = l.reconcile(
      new Map([
        [0, { attempted: 5000, failed: [] }],
        [1, { attempted: 3, failed: [2] }],
      ]),
    );
    expect(c).toEqual({
      sent: 5000 + 2,
      received: 4998 + 2 + 3,
      unique: 4998 + 1,
      lost: 2 + 1, // producer 1 seq 1 never arrived
      duplicates: 2,
      failedButDelivered: 1,
      unknown: 1,
    });
  });

  it('grows past its initial capacity', () => {
    const l = new Ledger();
    l.record(3, 1_000_000);
    expect(l.reconcile(new Map([[3, { attempted: 1_000_001, failed: [] }]])).lost).toBe(1_000_000);
  });
});
