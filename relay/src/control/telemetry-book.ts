/**
 * The latest telemetry of each device, as published (retained) on pw/v1/dev/{id}/telemetry. Payloads are
 * checked before they are kept: larger than MAX_TELEMETRY_BYTES, not JSON, or not a DeviceTelemetry, and the
 * sample is dropped, counted by reason and logged (at most one line per device and reason per
 * DROP_LOG_INTERVAL_MS, with the count since the last line), so a device sending garbage can neither crash the relay nor flood its log.
 * An empty retained payload clears the device's entry. The book holds at most `maxDevices` entries.
 */
import { deviceTelemetrySchema, MAX_TELEMETRY_BYTES, type DeviceTelemetry } from '../../../protocol';
import type { Logger } from '../../../shared/logger';

export type TelemetryDropReason = 'too_large' | 'bad_json' | 'invalid' | 'full';

export interface TelemetryEntry {
  readonly telemetry: DeviceTelemetry;
  /** Relay clock when it arrived (the device's own `at` may be off before NTP). */
  readonly receivedAt: number;
}

const DROP_LOG_INTERVAL_MS = 60_000;

export class TelemetryBook {
  private readonly latest = new Map<string, TelemetryEntry>();
  private readonly dropLog = new Map<string, { at: number; count: number }>();
  readonly drops: Record<TelemetryDropReason, number> = { too_large: 0, bad_json: 0, invalid: 0, full: 0 };

  constructor(
    private readonly deps: { log: Logger; now: () => number },
    private readonly options: { readonly maxDevices: number },
  ) {}

  get(deviceId: string): TelemetryEntry | undefined {
    return this.latest.get(deviceId);
  }

  /** Returns whether the sample was kept. */
  accept(deviceId: string, payload: Buffer): boolean {
    if (payload.length === 0) {
      this.latest.delete(deviceId);
      return false;
    }
    if (payload.length > MAX_TELEMETRY_BYTES) return this.drop(deviceId, 'too_large', `${payload.length} bytes`);
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      // a malformed payload is what this branch exists for: counted and logged by drop()
      return this.drop(deviceId, 'bad_json', 'not JSON');
    }
    const parsed = deviceTelemetrySchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return this.drop(deviceId, 'invalid', issue ? `${issue.path.join('.') || '(payload)'}: ${issue.message}`.slice(0, 200) : 'invalid');
    }
    if (!this.latest.has(deviceId) && this.latest.size >= this.options.maxDevices) return this.drop(deviceId, 'full', `${this.latest.size} devices`);
    this.latest.set(deviceId, { telemetry: parsed.data, receivedAt: this.deps.now() });
    return true;
  }

  private drop(deviceId: string, reason: TelemetryDropReason, detail: string): false {
    this.drops[reason]++;
    const now = this.deps.now();
    const key = `${deviceId} ${reason}`;
    const last = this.dropLog.get(key);
    if (last && now - last.at < DROP_LOG_INTERVAL_MS) {
      last.count++;
      return false;
    }
    if (this.dropLog.size >= this.options.maxDevices) this.dropLog.clear();
    this.dropLog.set(key, { at: now, count: 0 });
    this.deps.log.warn({ deviceId, reason, detail, droppedSinceLastLog: last?.count ?? 0 }, 'relay.telemetry.dropped');
    return false;
  }
}
