/** client/src/report-limiter.ts: one line per code per interval, suppressed lines counted (fake clock, pure logic). */
import { ReportLimiter } from '../../client/src/report-limiter';

describe('ReportLimiter', () => {
  it('prints the first line of a code, suppresses repeats within the interval, and says how many', () => {
    let now = 1_000;
    const limiter = new ReportLimiter({ intervalMs: 5_000, now: () => now });
    expect(limiter.take('PW_DEVICE_OFFLINE')).toEqual({ isPrinted: true, suppressed: 0 });
    for (let i = 1; i <= 99; i++) expect(limiter.take('PW_DEVICE_OFFLINE')).toEqual({ isPrinted: false, suppressed: i });
    expect(limiter.take('PW_SERVICE_REFUSED')).toEqual({ isPrinted: true, suppressed: 0 });
    now += 5_000;
    expect(limiter.take('PW_DEVICE_OFFLINE')).toEqual({ isPrinted: true, suppressed: 99 });
    expect(limiter.take('PW_DEVICE_OFFLINE')).toEqual({ isPrinted: false, suppressed: 1 });
  });
});
