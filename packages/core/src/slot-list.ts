/** An item that remembers where a SlotList keeps it. */
export interface Slotted {
  /** Index in the list, -1 when not in one. */
  slot: number;
}

/**
 * An unordered set of items, each knowing its index: adding and removing write
 * one or two array slots and never build a new table.
 *
 * Why not a Set: a transport adds and removes one in-flight delivery per
 * event (the bus one timer per in-memory retry). A Set churned like that rehashes into a new table again and again, and
 * each old table points to its successor. Once a burst got one table promoted
 * to the old generation, every later table, and the deliveries it held, outlived
 * the young GCs that should have freed them. Measured in the Redis benchmark's
 * consumer: after a 0.6 s stall, young-GC pauses grew from under 1 ms to 10-50 ms
 * and stayed there for the rest of the run. With this list they fall back below
 * 1 ms once the backlog is handled.
 */
export class SlotList<T extends Slotted> implements Iterable<T> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    if (item.slot >= 0 && this.items[item.slot] === item) return;
    item.slot = this.items.length;
    this.items.push(item);
  }

  has(item: T): boolean {
    return item.slot >= 0 && this.items[item.slot] === item;
  }

  /** Removes `item` (the last item takes its slot); false when it was not here. */
  delete(item: T): boolean {
    const i = item.slot;
    if (i < 0 || this.items[i] !== item) return false;
    const last = this.items.pop()!;
    if (last !== item) {
      this.items[i] = last;
      last.slot = i;
    }
    item.slot = -1;
    return true;
  }

  /** Removes every item. */
  clear(): void {
    for (const item of this.items) item.slot = -1;
    this.items.length = 0;
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.items[Symbol.iterator]();
  }
}
