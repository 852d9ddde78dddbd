/** An element of an {@link IndexedHeap}: the heap keeps its position here so removal is O(log n). */
export interface HeapItem {
  heapIndex: number;
}

/**
 * A binary min-heap by `before` (true when a goes first) that supports removing any element
 * in O(log n) and visiting the first k elements in order in O(k log k) without disturbing it.
 */
export class IndexedHeap<T extends HeapItem> {
  private readonly a: T[] = [];

  constructor(private readonly before: (x: T, y: T) => boolean) {}

  get size(): number {
    return this.a.length;
  }

  peek(): T | undefined {
    return this.a[0];
  }

  push(x: T): void {
    x.heapIndex = this.a.length;
    this.a.push(x);
    this.up(x.heapIndex);
  }

  /** Removes `x` (which must be in this heap). */
  remove(x: T): void {
    const i = x.heapIndex;
    if (this.a[i] !== x) throw new Error('IndexedHeap.remove: not in this heap');
    const last = this.a.pop()!;
    x.heapIndex = -1;
    if (last === x) return;
    this.a[i] = last;
    last.heapIndex = i;
    this.down(i);
    this.up(last.heapIndex);
  }

  /** Every element, in no particular order. */
  values(): IterableIterator<T> {
    return this.a.values();
  }

  /** The first `limit` elements in heap order, lazily (a frontier of candidate indices). */
  *ordered(limit: number): Generator<T> {
    if (this.a.length === 0 || limit <= 0) return;
    const frontier: number[] = [0];
    let n = 0;
    while (frontier.length > 0 && n < limit) {
      // The frontier stays tiny (at most limit + 1), so a linear pick is cheaper than a second heap.
      let bi = 0;
      for (let k = 1; k < frontier.length; k++) if (this.before(this.a[frontier[k]!]!, this.a[frontier[bi]!]!)) bi = k;
      const i = frontier[bi]!;
      frontier.splice(bi, 1);
      yield this.a[i]!;
      n++;
      const l = 2 * i + 1;
      if (l < this.a.length) frontier.push(l);
      if (l + 1 < this.a.length) frontier.push(l + 1);
    }
  }

  private up(i: number): void {
    const a = this.a;
    const x = a[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const y = a[p]!;
      if (!this.before(x, y)) break;
      a[i] = y;
      y.heapIndex = i;
      i = p;
    }
    a[i] = x;
    x.heapIndex = i;
  }

  private down(i: number): void {
    const a = this.a;
    const n = a.length;
    const x = a[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.before(a[r]!, a[l]!) ? r : l;
      const y = a[c]!;
      if (!this.before(y, x)) break;
      a[i] = y;
      y.heapIndex = i;
      i = c;
    }
    a[i] = x;
    x.heapIndex = i;
  }
}
