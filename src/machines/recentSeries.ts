/**
 * The last minute of a manager's work, one bucket a second: responses served, errors, and the
 * dispatch-to-response latency's p50 and p99 from up to `maxSamples` samples a second. What the
 * dashboard charts; pure (the caller gives the time), so it is tested without a clock.
 */
export interface SecondView {
  /** Start of the second, in the caller's milliseconds. */
  at: number;
  served: number;
  errors: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

interface Bucket {
  second: number;
  served: number;
  errors: number;
  samples: number[];
}

export class RecentSeries {
  private readonly buckets: Bucket[] = [];

  constructor(
    private readonly seconds = 60,
    private readonly maxSamples = 512,
  ) {}

  add(nowMs: number, latencyMs: number, ok: boolean): void {
    const second = Math.floor(nowMs / 1000);
    let b = this.buckets[this.buckets.length - 1];
    if (!b || b.second !== second) {
      b = { second, served: 0, errors: 0, samples: [] };
      this.buckets.push(b);
      while (this.buckets.length > 0 && this.buckets[0]!.second <= second - this.seconds) this.buckets.shift();
    }
    b.served++;
    if (!ok) b.errors++;
    // Past the bound, samples overwrite in turn: the second's later ones count as its earlier.
    if (b.samples.length < this.maxSamples) b.samples.push(latencyMs);
    else b.samples[b.served % this.maxSamples] = latencyMs;
  }

  /** Every second of the last `seconds` up to now (seconds with nothing served are zero). */
  view(nowMs: number): SecondView[] {
    const last = Math.floor(nowMs / 1000);
    const out: SecondView[] = [];
    let i = 0;
    for (let sec = last - this.seconds + 1; sec <= last; sec++) {
      while (i < this.buckets.length && this.buckets[i]!.second < sec) i++;
      const b = this.buckets[i]?.second === sec ? this.buckets[i] : undefined;
      const sorted = b ? [...b.samples].sort((x, y) => x - y) : [];
      out.push({ at: sec * 1000, served: b?.served ?? 0, errors: b?.errors ?? 0, p50Ms: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99) });
    }
    return out;
  }
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 100) / 100;
}
