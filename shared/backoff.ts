/**
 * Capped exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS architecture blog):
 * delay = random(0, min(cap, base * 2^attempt)). The attempt counter resets only after a connection has
 * stayed healthy for `stableAfterMs`, so a peer that accepts and closes at once cannot make us hammer it.
 */
export interface BackoffOptions {
  readonly baseMs: number;
  readonly capMs: number;
  readonly stableAfterMs: number;
  readonly random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private connectedAt: number | undefined;

  constructor(private readonly options: BackoffOptions) {
    if (!(options.baseMs > 0) || !(options.capMs >= options.baseMs)) throw new RangeError('backoff needs 0 < baseMs <= capMs');
  }

  /** The delay before the next attempt. */
  next(): number {
    const ceiling = Math.min(this.options.capMs, this.options.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor((this.options.random ?? Math.random)() * ceiling);
  }

  /** Call when a connection came up. */
  connected(now: number): void {
    this.connectedAt = now;
  }

  /** Call when the connection went down; resets the attempt counter only if it was up long enough. */
  disconnected(now: number): void {
    if (this.connectedAt !== undefined && now - this.connectedAt >= this.options.stableAfterMs) this.attempt = 0;
    this.connectedAt = undefined;
  }

  get attempts(): number {
    return this.attempt;
  }
}
