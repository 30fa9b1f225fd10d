/** Capped exponential backoff with full jitter (shared/backoff.ts), with an injected random source. */
import { Backoff } from '../../shared/backoff';

/** A random source that replays `values` in a loop. */
function replay(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length] as number;
}

const ALMOST_ONE = 1 - Number.EPSILON;

describe('Backoff', () => {
  it('draws each delay from [0, min(cap, base * 2^attempt)) — the lower end', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 10_000, stableAfterMs: 1_000, random: () => 0 });
    for (let i = 0; i < 10; i++) expect(backoff.next()).toBe(0);
  });

  it('draws each delay from [0, min(cap, base * 2^attempt)) — the upper end doubles, then stops at the cap', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 5_000, stableAfterMs: 1_000, random: () => ALMOST_ONE });
    const delays = Array.from({ length: 9 }, () => backoff.next());
    expect(delays).toEqual([99, 199, 399, 799, 1599, 3199, 4999, 4999, 4999]);
  });

  it('scales the random draw by the ceiling (full jitter, not equal jitter)', () => {
    const backoff = new Backoff({ baseMs: 1_000, capMs: 60_000, stableAfterMs: 1_000, random: replay(0.5, 0.25, 0.1) });
    expect(backoff.next()).toBe(500); // 0.5 * 1000
    expect(backoff.next()).toBe(500); // 0.25 * 2000
    expect(backoff.next()).toBe(400); // 0.1 * 4000
  });

  it('never exceeds the cap or goes negative, whatever the attempt count', () => {
    let seed = 42;
    const random = (): number => {
      seed = (seed * 48271) % 2147483647;
      return (seed - 1) / 2147483646;
    };
    const backoff = new Backoff({ baseMs: 1, capMs: 30_000, stableAfterMs: 1_000, random });
    for (let i = 0; i < 2_000; i++) {
      const delay = backoff.next();
      expect(Number.isInteger(delay)).toBe(true);
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(30_000);
    }
    expect(backoff.attempts).toBe(2_000);
  });

  it('counts attempts', () => {
    const backoff = new Backoff({ baseMs: 10, capMs: 100, stableAfterMs: 1_000, random: () => 0 });
    expect(backoff.attempts).toBe(0);
    backoff.next();
    backoff.next();
    expect(backoff.attempts).toBe(2);
  });

  it('does not reset after a connection that dropped before stableAfterMs', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 100_000, stableAfterMs: 20_000, random: () => ALMOST_ONE });
    backoff.next();
    backoff.next();
    backoff.next();
    backoff.connected(1_000_000);
    backoff.disconnected(1_000_000 + 19_999);
    expect(backoff.attempts).toBe(3);
    expect(backoff.next()).toBe(799);
  });

  it('resets after a connection that stayed up for stableAfterMs', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 100_000, stableAfterMs: 20_000, random: () => ALMOST_ONE });
    for (let i = 0; i < 5; i++) backoff.next();
    backoff.connected(5_000);
    backoff.disconnected(25_000);
    expect(backoff.attempts).toBe(0);
    expect(backoff.next()).toBe(99);
  });

  it('a peer that accepts and closes at once cannot reset it, however often', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 1_000_000, stableAfterMs: 20_000, random: () => ALMOST_ONE });
    let now = 0;
    for (let i = 0; i < 8; i++) {
      now += backoff.next() + 1;
      backoff.connected(now);
      now += 10;
      backoff.disconnected(now);
    }
    expect(backoff.attempts).toBe(8);
  });

  it('disconnected() without connected() does not reset, and each connection counts only once', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 100_000, stableAfterMs: 1_000, random: () => 0 });
    backoff.next();
    backoff.next();
    backoff.disconnected(1_000_000);
    expect(backoff.attempts).toBe(2);
    backoff.connected(0);
    backoff.disconnected(10);
    backoff.disconnected(1_000_000);
    expect(backoff.attempts).toBe(2);
  });

  it('uses Math.random when no random source is injected', () => {
    const backoff = new Backoff({ baseMs: 100, capMs: 100, stableAfterMs: 1_000 });
    for (let i = 0; i < 50; i++) {
      const delay = backoff.next();
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThan(100);
    }
  });

  it.each([
    { baseMs: 0, capMs: 100 },
    { baseMs: -1, capMs: 100 },
    { baseMs: 200, capMs: 100 },
    { baseMs: Number.NaN, capMs: 100 },
    { baseMs: 100, capMs: Number.NaN },
  ])('rejects %p with RangeError', (o) => {
    expect(() => new Backoff({ ...o, stableAfterMs: 1_000 })).toThrow(RangeError);
  });
});
