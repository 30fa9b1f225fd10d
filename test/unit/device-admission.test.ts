/** Pacing of device sessions (relay/src/device-admission.ts) with an injected clock and timers. */
import { type AdmissionClock, DeviceAdmission } from '../../relay/src/device-admission';

/** A manual clock: timers fire only when the test advances time, in order, each at its due time. */
class ManualClock implements AdmissionClock {
  t = 1_000;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;
  now = (): number => this.t;
  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  };
  clearTimeout = (handle: unknown): void => {
    this.timers = this.timers.filter((timer) => timer.id !== handle);
  };
  /** Advance to `to`, firing due timers; `stallUntil` models a blocked event loop: nothing fires before it. */
  advanceTo(to: number, stallUntil = -Infinity): void {
    for (let fired = 0; fired < 100_000; fired++) {
      const due = this.timers.filter((timer) => Math.max(timer.at, stallUntil) <= to).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((timer) => timer !== due);
      this.t = Math.max(this.t, due.at, stallUntil);
      due.fn();
    }
    this.t = to;
  }
  get pending(): number {
    return this.timers.length;
  }
}

/** The largest number of times in any window [t, t + widthMs), up to float rounding of summed gaps (1 ns). */
function maxInWindow(times: readonly number[], widthMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let lo = 0, hi = 0; hi < sorted.length; hi++) {
    while ((sorted[hi] as number) - (sorted[lo] as number) >= widthMs - 1e-6) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

describe('DeviceAdmission', () => {
  const options = { spreadS: 15, minPerSecond: 20, maxPerSecond: 1_000, maxWaitMs: 5_000 };

  function setUp(overrides: Partial<typeof options> = {}): { clock: ManualClock; admission: DeviceAdmission; starts: number[]; entry: (gone?: () => boolean) => { start(): void; isGone(): boolean } } {
    const clock = new ManualClock();
    const admission = new DeviceAdmission({ ...options, ...overrides }, clock);
    const starts: number[] = [];
    return { clock, admission, starts, entry: (gone = () => false) => ({ start: () => starts.push(clock.now()), isGone: gone }) };
  }

  it('sizes the rate from the fleet: ceil(fleet / spreadS), clamped to [min, max]', () => {
    const { admission } = setUp();
    expect(admission.ratePerSecond).toBe(20);
    for (const [fleet, rate] of [[0, 20], [1, 20], [300, 20], [301, 21], [501, 34], [5_000, 334], [15_000, 1_000], [1_000_000, 1_000], [-5, 20]] as const) {
      admission.setFleetSize(fleet);
      expect([fleet, admission.ratePerSecond]).toEqual([fleet, rate]);
    }
  });

  it('starts a lone connection at once, and again after a quiet gap', () => {
    const { clock, admission, starts, entry } = setUp();
    expect(admission.admit(entry())).toEqual({ admitted: 'now' });
    clock.advanceTo(1_050);
    expect(admission.admit(entry())).toEqual({ admitted: 'now' });
    clock.advanceTo(11_000);
    expect(admission.admit(entry())).toEqual({ admitted: 'now' });
    expect(starts).toEqual([1_000, 1_050, 11_000]);
  });

  it('spaces a burst one gap apart, so no 1 s window holds more than the rate', () => {
    const { clock, admission, starts, entry } = setUp({ maxWaitMs: 60_000 });
    admission.setFleetSize(501); // 34 per second
    for (let i = 0; i < 500; i++) expect('refused' in admission.admit(entry())).toBe(false);
    clock.advanceTo(30_000);
    expect(starts).toHaveLength(500);
    expect(maxInWindow(starts, 1_000)).toBe(34);
    expect(admission.waiting).toBe(0);
    expect(clock.pending).toBe(0);
  });

  it('does not catch up with a burst after a stall: the gap counts from the last real start', () => {
    const { clock, admission, starts, entry } = setUp({ maxWaitMs: 60_000 });
    for (let i = 0; i < 100; i++) admission.admit(entry());
    // The event loop is blocked from 1.1 s to 2 s: the slots due meanwhile are not all taken at 2 s.
    clock.advanceTo(1_100);
    const before = starts.length;
    clock.advanceTo(2_200, 2_000);
    const afterStall = starts.slice(before);
    expect(afterStall[0]).toBe(2_000);
    expect(afterStall.slice(1).every((t, i) => t - (afterStall[i] as number) >= 50)).toBe(true);
    clock.advanceTo(10_000);
    expect(maxInWindow(starts, 1_000)).toBeLessThanOrEqual(20);
  });

  it('refuses a connection whose expected wait exceeds maxWaitMs, and keeps nothing of it', () => {
    const { clock, admission, starts, entry } = setUp({ maxWaitMs: 1_000 });
    // 20 per second: the first starts now, the next 20 are expected within 1 s, the 22nd is not.
    const verdicts = Array.from({ length: 25 }, () => admission.admit(entry()));
    expect(verdicts.filter((v) => !('refused' in v))).toHaveLength(21);
    expect(verdicts.slice(21)).toEqual(Array(4).fill({ refused: true, expectedWaitMs: 1_050 }));
    expect(admission.waiting).toBe(20);
    clock.advanceTo(1_100);
    expect(starts).toEqual([1_000, 1_050, 1_100]);
    // Two slots went by: two more fit now.
    expect('refused' in admission.admit(entry())).toBe(false);
    expect('refused' in admission.admit(entry())).toBe(false);
    expect('refused' in admission.admit(entry())).toBe(true);
  });

  it('skips connections that went away while waiting, without spending a slot on them', () => {
    const { clock, admission, starts, entry } = setUp();
    admission.admit(entry());
    let gone = false;
    admission.admit(entry(() => gone));
    admission.admit(entry());
    gone = true;
    clock.advanceTo(2_000);
    expect(starts).toEqual([1_000, 1_050]);
  });

  it('stop() drops the queue and its timer', () => {
    const { clock, admission, starts, entry } = setUp();
    for (let i = 0; i < 5; i++) admission.admit(entry());
    admission.stop();
    expect(admission.waiting).toBe(0);
    expect(clock.pending).toBe(0);
    clock.advanceTo(5_000);
    expect(starts).toEqual([1_000]);
  });

  it('rejects impossible options', () => {
    expect(() => setUp({ spreadS: 0 })).toThrow(RangeError);
    expect(() => setUp({ minPerSecond: 0 })).toThrow(RangeError);
    expect(() => setUp({ maxPerSecond: 10 })).toThrow(RangeError);
    expect(() => setUp({ maxWaitMs: -1 })).toThrow(RangeError);
  });
});
