import { EventPriority } from './event.js';

/** A growable ring buffer (FIFO). */
class Ring<T> {
  private buf: (T | undefined)[] = new Array(16);
  private head = 0;
  size = 0;

  push(item: T): void {
    if (this.size === this.buf.length) this.grow();
    this.buf[(this.head + this.size) & (this.buf.length - 1)] = item;
    this.size++;
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) & (this.buf.length - 1);
    this.size--;
    return item;
  }

  *drain(): Generator<T> {
    while (this.size > 0) yield this.shift() as T;
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.buf.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = this.buf[(this.head + i) & (this.buf.length - 1)];
    this.buf = next;
    this.head = 0;
  }
}

/**
 * Stride-scheduling weights per priority level (CRITICAL..BULK). With every
 * level busy, CRITICAL gets 16/31 of the dequeues and BULK 1/31: more urgent
 * levels go first, yet no level starves.
 */
export const PRIORITY_WEIGHTS = [16, 8, 4, 2, 1] as const;
const STRIDE = PRIORITY_WEIGHTS.map((w) => 16 / w);

/**
 * Five FIFO queues, one per priority level, dequeued by weighted fair
 * (stride) scheduling. A level that was idle joins at the current virtual
 * time, so it neither gets a burst of catch-up turns nor waits behind a
 * backlog: a CRITICAL item pushed behind 100,000 BULK items is the next one out.
 */
export class LevelQueue<T> {
  private readonly rings = [new Ring<T>(), new Ring<T>(), new Ring<T>(), new Ring<T>(), new Ring<T>()];
  private readonly pass = [0, 0, 0, 0, 0];
  private vtime = 0;
  size = 0;

  push(item: T, level: EventPriority): void {
    const ring = this.rings[level]!;
    if (ring.size === 0 && this.pass[level]! < this.vtime) this.pass[level] = this.vtime;
    ring.push(item);
    this.size++;
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    let best = -1;
    let bestPass = Number.POSITIVE_INFINITY;
    for (let l = 0; l < 5; l++) {
      if (this.rings[l]!.size > 0 && this.pass[l]! < bestPass) {
        best = l;
        bestPass = this.pass[l]!;
      }
    }
    this.vtime = bestPass;
    this.pass[best]! += STRIDE[best]!;
    this.size--;
    return this.rings[best]!.shift();
  }

  /** Items waiting at each level. */
  sizes(): [number, number, number, number, number] {
    const r = this.rings;
    return [r[0]!.size, r[1]!.size, r[2]!.size, r[3]!.size, r[4]!.size];
  }

  /** Removes and yields everything, most urgent level first. */
  *drain(): Generator<T> {
    for (let l = EventPriority.CRITICAL; l <= EventPriority.BULK; l++) {
      for (const item of this.rings[l]!.drain()) {
        this.size--;
        yield item;
      }
    }
  }
}
