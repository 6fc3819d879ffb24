import { describe, expect, it } from 'vitest';
import { SlotList } from './slot-list.js';

const item = (name: string) => ({ name, slot: -1 });

describe('SlotList', () => {
  it('adds, removes from any position and keeps every other item', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const xs = ['a', 'b', 'c', 'd', 'e'].map(item);
    for (const x of xs) l.add(x);
    expect(l.size).toBe(5);
    expect(l.delete(xs[1]!)).toBe(true); // the middle: the last takes its slot
    expect(l.delete(xs[0]!)).toBe(true); // the first
    expect(l.delete(xs[4]!)).toBe(true); // whatever is last by now
    expect(new Set([...l].map((x) => x.name))).toEqual(new Set(['c', 'd']));
    for (const x of l) expect(l.has(x)).toBe(true);
    expect(l.has(xs[1]!)).toBe(false);
    expect(xs[1]!.slot).toBe(-1);
  });

  it('ignores a second delete and a second add of the same item', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const [a, b] = [item('a'), item('b')];
    l.add(a);
    l.add(a);
    l.add(b);
    expect(l.size).toBe(2);
    expect(l.delete(a)).toBe(true);
    expect(l.delete(a)).toBe(false);
    expect([...l]).toEqual([b]);
  });

  it('does not remove an item another list holds at the same index', () => {
    const one = new SlotList<ReturnType<typeof item>>();
    const two = new SlotList<ReturnType<typeof item>>();
    const [a, b] = [item('a'), item('b')];
    one.add(a);
    two.add(b);
    expect(one.delete(b)).toBe(false);
    expect([...one]).toEqual([a]);
  });

  it('clear() removes every item, and each can be added again', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const xs = ['a', 'b', 'c'].map(item);
    for (const x of xs) l.add(x);
    l.clear();
    expect(l.size).toBe(0);
    expect(xs.every((x) => x.slot === -1 && !l.has(x))).toBe(true);
    l.add(xs[2]!);
    expect([...l]).toEqual([xs[2]]);
  });

  it('stays consistent through many random adds and deletes', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const all = Array.from({ length: 200 }, (_, i) => item(String(i)));
    const model = new Set<ReturnType<typeof item>>();
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let step = 0; step < 5000; step++) {
      const x = all[Math.floor(rand() * all.length)]!;
      if (rand() < 0.5) {
        l.add(x);
        model.add(x);
      } else expect(l.delete(x)).toBe(model.delete(x));
      expect(l.size).toBe(model.size);
    }
    expect(new Set(l)).toEqual(model);
  });
});
