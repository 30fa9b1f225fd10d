/**
 * A claimed device's access rule at run time: the grant book (grant-book.ts) plus the live streams it admitted.
 * When the owner's grants change, and when a grant reaches its expiry, each live stream is checked again and
 * those whose key may no longer reach their service are reset (a cut stream never looks complete to either end).
 * The expiry timer is re-armed after each firing, against the device's check time (its clock, or the time
 * floor while the clock is not known), so a clock that jumps only moves the moment the check runs.
 */
import type net from 'node:net';
import type { Logger } from '../../../shared/logger';
import type { AccessDecision, GrantBook, GrantOfferResult } from './grant-book';

/** setTimeout's longest delay; later expiries are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class DeviceAccess {
  private readonly live = new Map<net.Socket, { key: string; service: string }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: { log: Logger; now: () => number },
    readonly book: GrantBook,
  ) {}

  start(): void {
    this.arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  decide(key: string, service: string, now: number): AccessDecision {
    return this.book.decide(key, service, now);
  }

  /** A stream this device admitted for `key`: checked again when the grants change or expire. */
  track(socket: net.Socket, key: string, service: string): void {
    if (socket.destroyed) return;
    this.live.set(socket, { key, service });
    socket.once('close', () => this.live.delete(socket));
  }

  /** A grant set from the relay (GrantBook.offer); a new one ends the streams it no longer allows. */
  async offer(value: unknown): Promise<GrantOfferResult & { streamsEnded: number }> {
    const result = await this.book.offer(value);
    if (!result.changed) return { ...result, streamsEnded: 0 };
    const streamsEnded = this.endUngranted();
    this.arm();
    return { ...result, streamsEnded };
  }

  private endUngranted(): number {
    let ended = 0;
    const now = this.deps.now();
    for (const [socket, { key, service }] of this.live) {
      if (this.book.decide(key, service, now).ok) continue;
      socket.destroy();
      this.live.delete(socket);
      ended++;
    }
    return ended;
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const next = this.book.nextExpiry(this.deps.now());
    if (next === undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const ended = this.endUngranted();
      if (ended > 0) this.deps.log.info({ streamsEnded: ended }, 'agent.grants.expired');
      this.arm();
    }, Math.min(Math.max(0, next - this.deps.now()), MAX_TIMER_MS));
    this.timer.unref();
  }
}
