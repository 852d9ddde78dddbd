/** Options for a per-key token bucket. */
export interface RateLimiterOptions {
  /** Tokens a key may spend at once. */
  burst: number;
  /** Tokens refilled per second. */
  perSecond: number;
  /** Keys tracked at most; the oldest are forgotten past this. Default 10,000. */
  maxKeys?: number;
}

/** A token bucket per key (an IP address), with an injected clock. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly maxKeys: number;

  constructor(
    private readonly opts: RateLimiterOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = opts.maxKeys ?? 10_000;
  }

  /** Spends one token for `key`; false when it has none left. */
  take(key: string): boolean {
    const t = this.now();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.opts.burst, b.tokens + ((t - b.at) / 1000) * this.opts.perSecond);
      b.at = t;
      this.buckets.delete(key); // re-insert: Map order is recency order
    } else {
      b = { tokens: this.opts.burst, at: t };
    }
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
