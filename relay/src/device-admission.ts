/**
 * Pacing of device control sessions at the relay port (docs/reliability.md, reconnection storm).
 *
 * After a relay restart every device of the fleet reconnects at once, and each session costs the relay a TLS
 * handshake with certificate checks, an MQTT CONNECT, subscriptions and retained presence. The agents' full
 * jitter spreads them only over their current backoff ceiling, which after an outage of a few seconds is
 * 2–4 s: a third of the fleet can land in one second. So the relay paces them itself. A connection whose
 * ClientHello offers ALPN `mqtt` (known before any TLS work) joins a FIFO queue, and the queue starts one TLS
 * handshake every `1 / rate` seconds, with
 *
 *     rate = clamp(ceil(fleet / spreadS), minPerSecond, maxPerSecond)   handshakes per second
 *
 * where fleet is the number of active (not revoked) devices in the store: a whole fleet is back in about
 * spreadS seconds, and a small fleet is never slowed below minPerSecond. The gap is measured from the last
 * start as it really happened, so after the relay was stalled (garbage collection, a busy machine) the queue
 * does not catch up with a burst. A connection whose expected wait exceeds maxWaitMs (kept below the agents'
 * connect timeout) is refused at once, before TLS (PW_RELAY_BUSY), and its agent comes back after its
 * backoff. When the relay is quiet a connection starts at once: a lone reconnecting device is not delayed.
 */
export interface DeviceAdmissionOptions {
  /** Take a whole fleet back over about this many seconds. */
  readonly spreadS: number;
  readonly minPerSecond: number;
  readonly maxPerSecond: number;
  /** Longest expected wait in the queue; later connections are refused. */
  readonly maxWaitMs: number;
}

/** One waiting connection. */
export interface AdmissionEntry {
  /** Begin the TLS handshake. */
  start(): void;
  /** True when the connection went away while it waited: it is skipped and takes no slot. */
  isGone(): boolean;
}

export type Admission = { readonly admitted: 'now' | 'queued' } | { readonly refused: true; readonly expectedWaitMs: number };

export interface AdmissionClock {
  /** Monotonic milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Float rounding of summed gaps must not turn a due slot into a 0 ms re-wait. */
const EPSILON_MS = 1e-6;

const NODE_CLOCK: AdmissionClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export class DeviceAdmission {
  private perSecond: number;
  private lastStartAt = -Infinity;
  private readonly queue: AdmissionEntry[] = [];
  private head = 0;
  private timer: unknown;

  constructor(
    private readonly options: DeviceAdmissionOptions,
    private readonly clock: AdmissionClock = NODE_CLOCK,
  ) {
    const { spreadS, minPerSecond, maxPerSecond, maxWaitMs } = options;
    if (!(spreadS > 0 && minPerSecond > 0 && maxPerSecond >= minPerSecond && maxWaitMs >= 0)) {
      throw new RangeError('device admission needs spreadS > 0, 0 < minPerSecond <= maxPerSecond and maxWaitMs >= 0');
    }
    this.perSecond = minPerSecond;
  }

  /** Handshakes per second for a fleet of this many active devices. */
  setFleetSize(devices: number): void {
    const { spreadS, minPerSecond, maxPerSecond } = this.options;
    this.perSecond = Math.min(maxPerSecond, Math.max(minPerSecond, Math.ceil(Math.max(0, devices) / spreadS)));
  }

  get ratePerSecond(): number {
    return this.perSecond;
  }

  /** Connections waiting for their turn. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /** Start the entry now, queue it, or refuse it (then nothing is kept of it). */
  admit(entry: AdmissionEntry): Admission {
    const now = this.clock.now();
    const gapMs = 1_000 / this.perSecond;
    if (this.waiting === 0 && now - this.lastStartAt >= gapMs - EPSILON_MS) {
      this.lastStartAt = now;
      entry.start();
      return { admitted: 'now' };
    }
    const expectedWaitMs = Math.max(0, this.lastStartAt + gapMs - now) + this.waiting * gapMs;
    if (expectedWaitMs > this.options.maxWaitMs) return { refused: true, expectedWaitMs: Math.ceil(expectedWaitMs) };
    this.queue.push(entry);
    this.schedule(now);
    return { admitted: 'queued' };
  }

  /** Drop the queue and its timer (the caller closes the connections). */
  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
    this.head = 0;
  }

  private schedule(now: number): void {
    if (this.timer !== undefined || this.waiting === 0) return;
    const delayMs = Math.max(0, this.lastStartAt + 1_000 / this.perSecond - now);
    this.timer = this.clock.setTimeout(() => this.pump(), delayMs);
  }

  /** Start the next entry still there, if its slot has come; then wait for the next slot. */
  private pump(): void {
    this.timer = undefined;
    const now = this.clock.now();
    if (now - this.lastStartAt >= 1_000 / this.perSecond - EPSILON_MS) {
      while (this.waiting > 0) {
        const entry = this.queue[this.head++] as AdmissionEntry;
        if (entry.isGone()) continue;
        this.lastStartAt = now;
        entry.start();
        break;
      }
      if (this.waiting === 0) {
        this.queue.length = 0;
        this.head = 0;
      } else if (this.head > 1_024) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
    }
    this.schedule(now);
  }
}
