/** What a producer says it sent in one phase. */
export interface SentRecord {
  /** Sequence numbers 0..attempted-1 were handed to the target. */
  attempted: number;
  /** Of those, the ones whose send failed (the target said no): not expected to arrive. */
  failed: number[];
}

/** The reconciliation of what arrived against what was sent. */
export interface LedgerCounts {
  /** Events the target accepted (attempted minus failed). */
  sent: number;
  /** Deliveries seen, duplicates included. */
  received: number;
  /** Distinct sent events seen at least once. */
  unique: number;
  /** Sent and never seen. */
  lost: number;
  /** Deliveries beyond the first of an event. */
  duplicates: number;
  /** Events whose send failed and which arrived anyway (accepted despite the error). */
  failedButDelivered: number;
  /** Deliveries of sequence numbers nobody sent (a corrupted or foreign event). */
  unknown: number;
}

/**
 * Per-producer receipt bitmap: one byte per sequence number (a saturating
 * delivery count), grown by doubling. Recording is O(1); reconciling is one
 * pass. Not shared between threads; one ledger per consumer per phase.
 */
export class Ledger {
  private readonly seen = new Map<number, Uint8Array>();
  private readonly maxSeq = new Map<number, number>();
  received = 0;
  unique = 0;
  duplicates = 0;

  /** Records one delivery of `(producer, seq)`. Returns false if it is a duplicate. */
  record(producer: number, seq: number): boolean {
    this.received++;
    let bits = this.seen.get(producer);
    if (bits === undefined || seq >= bits.length) {
      let size = bits?.length ?? 1024;
      while (size <= seq) size *= 2;
      const next = new Uint8Array(size);
      if (bits) next.set(bits);
      bits = next;
      this.seen.set(producer, bits);
    }
    const c = bits[seq]!;
    if (c < 255) bits[seq] = c + 1;
    if ((this.maxSeq.get(producer) ?? -1) < seq) this.maxSeq.set(producer, seq);
    if (c === 0) {
      this.unique++;
      return true;
    }
    this.duplicates++;
    return false;
  }

  /** How many distinct events of `producer` arrived. */
  uniqueOf(producer: number, below: number): number {
    const bits = this.seen.get(producer);
    if (!bits) return 0;
    let n = 0;
    const end = Math.min(below, bits.length);
    for (let i = 0; i < end; i++) if (bits[i]! > 0) n++;
    return n;
  }

  /** Reconciles against what every producer said it sent. */
  reconcile(sent: ReadonlyMap<number, SentRecord>): LedgerCounts {
    let sentTotal = 0;
    let unique = 0;
    let lost = 0;
    let failedButDelivered = 0;
    let unknown = 0;
    for (const [p, bits] of this.seen) {
      const rec = sent.get(p);
      const attempted = rec?.attempted ?? 0;
      for (let i = attempted; i < bits.length; i++) unknown += bits[i]!;
    }
    for (const [p, rec] of sent) {
      const bits = this.seen.get(p) ?? new Uint8Array(0);
      const failed = new Set(rec.failed);
      for (let i = 0; i < rec.attempted; i++) {
        const c = i < bits.length ? bits[i]! : 0;
        if (failed.has(i)) {
          if (c > 0) failedButDelivered++;
          continue;
        }
        sentTotal++;
        if (c > 0) unique++;
        else lost++;
      }
    }
    return {
      sent: sentTotal,
      received: this.received,
      unique,
      lost,
      duplicates: this.duplicates,
      failedButDelivered,
      unknown,
    };
  }
}
