/** Durations typed by people (`--expires 30m`): a whole number and one unit, s, m, h or d. */
import { PortwayError } from '../protocol';

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Milliseconds; PW_BAD_REQUEST for anything else than e.g. 90s, 30m, 12h, 7d. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,9})(s|m|h|d)$/.exec(text);
  if (!m) throw new PortwayError('PW_BAD_REQUEST', `duration must look like 30m, 12h or 7d, got ${JSON.stringify(text).slice(0, 40)}`);
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (ms === 0) throw new PortwayError('PW_BAD_REQUEST', 'duration must be longer than zero');
  return ms;
}
