/**
 * Failed claim attempts counted per key (a source address, a user) in a fixed window. A key with more than
 * `maxFailures` failures in its window is locked until the window ends: its requests are refused with
 * PW_RATE_LIMITED before they reach the store or a device. Bounded: at most `maxKeys` keys are tracked; the
 * oldest window is dropped first (an attacker rotating keys gains nothing over the per-key limit then, and
 * the per-user limit still holds).
 */
import { PortwayError } from '../../../protocol';

export interface RateLimitOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly maxKeys: number;
}

interface Window {
  start: number;
  failures: number;
}

export class ClaimRateLimiter {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly deps: { now: () => number },
    private readonly options: RateLimitOptions,
  ) {}

  /** PW_RATE_LIMITED when `key` is locked. */
  check(key: string, what: string): void {
    const w = this.current(key);
    if (w && w.failures >= this.options.maxFailures) {
      const retryS = Math.ceil((w.start + this.options.windowMs - this.deps.now()) / 1000);
      throw new PortwayError('PW_RATE_LIMITED', `too many failed claim attempts from this ${what}; try again in ${retryS} s`);
    }
  }

  /** Count one failure; true when this failure locked the key (the caller audits the lockout once). */
  fail(key: string): boolean {
    let w = this.current(key);
    if (!w) {
      if (this.windows.size >= this.options.maxKeys) {
        const oldest = this.windows.keys().next();
        if (!oldest.done) this.windows.delete(oldest.value);
      }
      w = { start: this.deps.now(), failures: 0 };
      this.windows.set(key, w);
    }
    w.failures++;
    return w.failures === this.options.maxFailures;
  }

  private current(key: string): Window | undefined {
    const w = this.windows.get(key);
    if (w && this.deps.now() - w.start >= this.options.windowMs) {
      this.windows.delete(key);
      return undefined;
    }
    return w;
  }
}
