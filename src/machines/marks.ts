/**
 * A set of request numbers as a watermark: every n <= floor, and some above it. An ordered
 * session only ever moves the floor; an unordered pool takes responses as they complete, so what
 * it took is the floor plus the numbers above it (docs/design.md §6, pools). The set above is
 * bounded by the session's window: nothing past answered + window is ever dispatched.
 */
export interface MarksWire {
  /** Every n <= upTo. */
  upTo: number;
  /** And these, each above upTo (absent: none). */
  also?: number[];
}

export class Marks {
  floor = 0;
  private readonly above = new Set<number>();

  static of(w: MarksWire): Marks {
    const m = new Marks();
    m.merge(w);
    return m;
  }

  has(n: number): boolean {
    return n <= this.floor || this.above.has(n);
  }

  /** Adds n; true when it was not in the set. */
  add(n: number): boolean {
    if (this.has(n)) return false;
    if (n === this.floor + 1) {
      this.floor = n;
      this.collapse();
    } else this.above.add(n);
    return true;
  }

  /** Everything in `w` too; true when that added anything. */
  merge(w: MarksWire): boolean {
    let grew = false;
    if (w.upTo > this.floor) {
      this.floor = w.upTo;
      for (const n of this.above) if (n <= this.floor) this.above.delete(n);
      grew = true;
    }
    for (const n of w.also ?? []) if (this.add(n)) grew = true;
    this.collapse();
    return grew;
  }

  /**
   * How many numbers the set holds: a superset of a set always counts more unless it is the same
   * set, so the count names a receipt (its message id) as the floor did for ordered sessions.
   */
  get count(): number {
    return this.floor + this.above.size;
  }

  /** Numbers above the floor, ascending. */
  extra(): number[] {
    return [...this.above].sort((a, b) => a - b);
  }

  toWire(): MarksWire {
    return this.above.size === 0 ? { upTo: this.floor } : { upTo: this.floor, also: this.extra() };
  }

  copy(): Marks {
    return Marks.of(this.toWire());
  }

  private collapse(): void {
    while (this.above.delete(this.floor + 1)) this.floor++;
  }
}
