/** ClaimRateLimiter: failures per key in a fixed window, lockout reported once, bounded key table. */
import { PortwayError } from '../../protocol';
import { ClaimRateLimiter } from '../../relay/src/claims/claim-rate-limiter';

describe('ClaimRateLimiter', () => {
  let now = 1_000_000;
  const limiter = (maxKeys = 100): ClaimRateLimiter => new ClaimRateLimiter({ now: () => now }, { maxFailures: 3, windowMs: 60_000, maxKeys });

  it('locks a key after maxFailures in its window, says so once, and unlocks when the window ends', () => {
    const l = limiter();
    expect([l.fail('a'), l.fail('a'), l.fail('a'), l.fail('a')]).toEqual([false, false, true, false]);
    expect(() => l.check('a', 'address')).toThrow(PortwayError);
    try {
      l.check('a', 'address');
    } catch (err) {
      expect(err).toMatchObject({ code: 'PW_RATE_LIMITED', message: 'too many failed claim attempts from this address; try again in 60 s' });
    }
    expect(() => l.check('b', 'address')).not.toThrow();
    now += 60_000;
    expect(() => l.check('a', 'address')).not.toThrow();
    expect(l.fail('a')).toBe(false);
  });

  it('keeps at most maxKeys keys, dropping the oldest window', () => {
    const l = limiter(2);
    for (let i = 0; i < 3; i++) l.fail('old');
    l.fail('k1');
    l.fail('k2');
    expect(() => l.check('old', 'address')).not.toThrow();
    for (let i = 0; i < 3; i++) l.fail('k2');
    expect(() => l.check('k2', 'user')).toThrow('from this user');
  });
});
