/**
 * Per-service hedging state: a token bucket that bounds the extra load hedges may add, and the
 * latencies the `"p95"` delay is learned from. Pure data with a JSON form, because both
 * survive a manager failover (they travel in the cursor: backups and the bucket).
 *
 * The budget is Finagle's RetryBudget / gRPC's retry throttling applied to hedges: every
 * dispatched request deposits `ratio` tokens, every extra copy withdraws one; with no token
 * left a request is not hedged. Over any long run, extra copies <= ratio x requests + reserve.
 */

export interface HedgeBudgetOptions {
  /** Extra copies allowed per request, e.g. 0.1 = at most 10 % extra server work. */
  ratio: number;
  /** Tokens the bucket starts with and never exceeds beyond the deposits (burst allowance). */
  reserve: number;
  /** Latencies kept for the learned delay. */
  window: number;
  /** Samples needed before the learned delay is trusted; until then `fallbackMs`. */
  minSamples: number;
  fallbackMs: number;
}

export const DEFAULT_HEDGE_BUDGET: HedgeBudgetOptions = { ratio: 0.1, reserve: 10, window: 256, minSamples: 20, fallbackMs: 50 };

export interface HedgeBudgetJSON {
  tokens: number;
  latencies: number[];
  requests: number;
  extra: number;
}

export class HedgeBudget {
  tokens: number;
  /** Ring of recent latencies (ms). */
  private latencies: number[] = [];
  private next = 0;
  private cachedP95: number | null = null;
  /** Totals since this state began (also carried over a failover): for status and the bench. */
  requests = 0;
  extra = 0;

  constructor(readonly opts: HedgeBudgetOptions = DEFAULT_HEDGE_BUDGET) {
    this.tokens = opts.reserve;
  }

  private get cap(): number {
    return this.opts.reserve + 100 * this.opts.ratio;
  }

  /** A request was dispatched (its first copy). */
  deposit(): void {
    this.requests++;
    this.tokens = Math.min(this.cap, this.tokens + this.opts.ratio);
  }

  /** May one more copy go out? Takes a token when it may. */
  tryWithdraw(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    this.extra++;
    return true;
  }

  observe(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    if (this.latencies.length < this.opts.window) this.latencies.push(ms);
    else this.latencies[this.next] = ms;
    this.next = (this.next + 1) % this.opts.window;
    this.cachedP95 = null;
  }

  get samples(): number {
    return this.latencies.length;
  }

  /** The learned 95th percentile, or null with too few samples. */
  p95(): number | null {
    if (this.latencies.length < this.opts.minSamples) return null;
    if (this.cachedP95 === null) {
      const sorted = [...this.latencies].sort((a, b) => a - b);
      this.cachedP95 = sorted[Math.min(sorted.length - 1, Math.ceil(0.95 * sorted.length) - 1)]!;
    }
    return this.cachedP95;
  }

  /** The delay before hedging: fixed, or learned (fallback until enough samples). */
  delay(after: number | "p95"): number {
    if (typeof after === "number") return after;
    return this.p95() ?? this.opts.fallbackMs;
  }

  toJSON(): HedgeBudgetJSON {
    // Oldest first, so a restored ring continues in order.
    const ordered = this.latencies.length < this.opts.window ? [...this.latencies] : [...this.latencies.slice(this.next), ...this.latencies.slice(0, this.next)];
    return { tokens: Math.round(this.tokens * 1000) / 1000, latencies: ordered.map((x) => Math.round(x * 100) / 100), requests: this.requests, extra: this.extra };
  }

  static fromJSON(j: HedgeBudgetJSON, opts: HedgeBudgetOptions = DEFAULT_HEDGE_BUDGET): HedgeBudget {
    const b = new HedgeBudget(opts);
    b.tokens = Math.min(j.tokens, b.cap);
    for (const x of j.latencies.slice(-opts.window)) b.observe(x);
    b.requests = j.requests;
    b.extra = j.extra;
    return b;
  }
}
