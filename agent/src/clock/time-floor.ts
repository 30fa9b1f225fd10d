/**
 * Devices without a real-time clock (docs/security.md): a Raspberry Pi boots with the last time it saved, or
 * 1970, until NTP (systemd-timesyncd) sets the clock. The agent keeps a time floor, a moment it knows has
 * passed: the larger of `time-floor.json` in its state directory (written while the clock is plausible, at
 * start and then at most every `writeEveryMs`, 6 h by default, so the SD card is not worn) and the start of
 * its own device certificate (the relay issued it, so that time has passed).
 *
 * The clock is "known" when it reads at or after the floor. While it is not, relay connections are checked at
 * the floor instead of the system clock (shared/relay-cert-at.ts: the pinned CA, the signature, the name and
 * both validity periods, never skipped); once the clock jumps past the floor (NTP set it), connections go back
 * to OpenSSL's usual checks at the system time. Transitions are logged: agent.clock.unknown, agent.clock.known.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { relayCaOf, type RelayCertCheck } from '../../../shared/relay-cert-at';
import type { Logger } from '../../../shared/logger';
import { writeFileAtomic } from '../../../shared/write-file-atomic';
import { describeCert } from '../../../shared/x509';

export const TIME_FLOOR_FILE = 'time-floor.json';
export const TIME_FLOOR_WRITE_MS = 6 * 3600 * 1000;

export class TimeFloor {
  private floorMs = 0;
  private written = 0;
  private state: 'unset' | 'known' | 'unknown' = 'unset';
  private timer: NodeJS.Timeout | undefined;
  private readonly ca;

  constructor(
    private readonly deps: { log: Logger; now: () => number },
    private readonly options: { stateDir: string; relayCaPem: string; writeEveryMs?: number },
  ) {
    this.ca = relayCaOf(options.relayCaPem);
  }

  /** Read the saved floor and raise it to the device certificate's start. */
  async load(certPem: string): Promise<void> {
    try {
      const saved = JSON.parse(await fs.readFile(this.file, 'utf8')) as { floorMs?: unknown };
      if (typeof saved.floorMs === 'number' && Number.isSafeInteger(saved.floorMs)) this.floorMs = Math.max(this.floorMs, saved.floorMs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.log.warn({ reason: (err as Error).message }, 'agent.clock.floor_unreadable');
    }
    this.raiseTo(certPem);
    this.isClockKnown();
  }

  /** A certificate the relay just issued (renewal): its start has passed. */
  raiseTo(certPem: string): void {
    this.floorMs = Math.max(this.floorMs, describeCert(certPem).notBefore.getTime());
  }

  get floor(): number {
    return this.floorMs;
  }

  isClockKnown(): boolean {
    const now = this.deps.now();
    const known = now >= this.floorMs;
    const state = known ? 'known' : 'unknown';
    if (state !== this.state) {
      const fields = { systemTime: new Date(now).toISOString(), floor: new Date(this.floorMs).toISOString() };
      if (known) this.deps.log.info(fields, 'agent.clock.known');
      else this.deps.log.warn(fields, 'agent.clock.unknown');
      this.state = state;
    }
    return known;
  }

  /** For relay connections: undefined (OpenSSL's checks at the system clock) when the clock is known, else a check at the floor. */
  readonly certCheck = (): RelayCertCheck | undefined => (this.isClockKnown() ? undefined : { ca: this.ca, atMs: this.floorMs });

  /** Saves the floor now (if the clock is known) and every writeEveryMs. */
  start(): void {
    this.save().catch((err: unknown) => this.deps.log.warn({ reason: (err as Error).message }, 'agent.clock.floor_write_failed'));
    this.timer = setInterval(() => {
      this.save().catch((err: unknown) => this.deps.log.warn({ reason: (err as Error).message }, 'agent.clock.floor_write_failed'));
    }, this.options.writeEveryMs ?? TIME_FLOOR_WRITE_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async save(): Promise<void> {
    if (!this.isClockKnown()) return;
    const now = this.deps.now();
    if (now - this.written < (this.options.writeEveryMs ?? TIME_FLOOR_WRITE_MS) / 2) return;
    this.floorMs = Math.max(this.floorMs, now);
    await writeFileAtomic(this.file, JSON.stringify({ floorMs: this.floorMs }), 0o644);
    this.written = now;
  }

  private get file(): string {
    return path.join(this.options.stateDir, TIME_FLOOR_FILE);
  }
}
