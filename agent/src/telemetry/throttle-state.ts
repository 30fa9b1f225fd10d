/**
 * Raspberry Pi under-voltage and throttling state, from the firmware's get_throttled bit mask:
 *
 *   bit 0  under-voltage now          bit 16  under-voltage has occurred since boot
 *   bit 1  ARM frequency capped now   bit 17  frequency capping has occurred
 *   bit 2  throttled now              bit 18  throttling has occurred
 *   bit 3  soft temperature limit now bit 19  soft temperature limit has occurred
 *
 * Read from sysfs (/sys/devices/platform/soc/soc:firmware/get_throttled, hex digits) when the file exists, else
 * from `vcgencmd get_throttled` ("throttled=0x50005") when vcgencmd is on PATH; on other boards: undefined.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { ThrottleState } from '../../../protocol';

export const THROTTLED_SYSFS_PATH = '/sys/devices/platform/soc/soc:firmware/get_throttled';
const VCGENCMD_TIMEOUT_MS = 2_000;

export function decodeThrottled(raw: number): ThrottleState {
  const bit = (n: number): boolean => (raw & (1 << n)) !== 0;
  return {
    raw,
    underVoltage: bit(0),
    frequencyCapped: bit(1),
    throttled: bit(2),
    softTempLimit: bit(3),
    underVoltageOccurred: bit(16),
    frequencyCappedOccurred: bit(17),
    throttledOccurred: bit(18),
    softTempLimitOccurred: bit(19),
  };
}

/** "50005", "0x50005" or "throttled=0x50005" -> 0x50005; anything else -> undefined. */
export function parseThrottledText(text: string): number | undefined {
  const m = /^(?:throttled=)?(?:0x)?([0-9a-fA-F]{1,8})$/.exec(text.trim());
  return m ? Number.parseInt(m[1] as string, 16) : undefined;
}

export interface ThrottleSource {
  readonly sysfsPath: string;
  /** vcgencmd's path, or undefined when it is not installed. */
  readonly vcgencmd: string | undefined;
}

/** The current state, or undefined when neither source exists or answers sensibly. */
export async function readThrottleState(source: ThrottleSource): Promise<ThrottleState | undefined> {
  let text: string | undefined;
  try {
    text = await readFile(source.sysfsPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined;
  }
  if (text === undefined && source.vcgencmd !== undefined) {
    const vcgencmd = source.vcgencmd;
    text = await new Promise<string | undefined>((resolve) => {
      execFile(vcgencmd, ['get_throttled'], { timeout: VCGENCMD_TIMEOUT_MS }, (err, stdout) => resolve(err ? undefined : stdout));
    });
  }
  const raw = text === undefined ? undefined : parseThrottledText(text);
  return raw === undefined ? undefined : decodeThrottled(raw);
}
