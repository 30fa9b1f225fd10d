/**
 * The agent's open UDP sessions, per service and in total: each service admits at most its `maxSessions`
 * and the agent at most `maxUdpSessions` in all (more are refused with PW_LIMIT_REACHED; they do not count
 * against `maxStreams`), the counts go into the stream log lines (`udpSessions`) so a leak shows, and
 * `closeAll` ends every session gracefully when the agent stops.
 */
import { PortwayError } from '../../../protocol';
import type { DatagramCloseReason, DatagramSession } from '../../../shared/datagram-session';
import type { UdpServiceConfig } from '../config';

export interface UdpSessionSlot {
  /** The session that holds the slot, so `closeAll` reaches it. */
  attach(session: DatagramSession): void;
  /** Give the slot back (idempotent). */
  release(): void;
}

export class UdpSessions {
  private readonly perService = new Map<string, number>();
  private readonly sessions = new Set<DatagramSession>();
  private open = 0;

  /** `maxTotal`: sessions at once over all services (the agent's maxUdpSessions). */
  constructor(private readonly maxTotal = Number.POSITIVE_INFINITY) {}

  get total(): number {
    return this.open;
  }

  count(service: string): number {
    return this.perService.get(service) ?? 0;
  }

  /** Take a slot for one session of `service`, or throw PW_LIMIT_REACHED. */
  acquire(service: UdpServiceConfig): UdpSessionSlot {
    const current = this.count(service.name);
    if (current >= service.maxSessions) throw new PortwayError('PW_LIMIT_REACHED', `service ${service.name} already has ${service.maxSessions} UDP sessions`);
    if (this.open >= this.maxTotal) throw new PortwayError('PW_LIMIT_REACHED', `the agent already has ${this.maxTotal} UDP sessions (maxUdpSessions)`);
    this.perService.set(service.name, current + 1);
    this.open++;
    let held: DatagramSession | undefined;
    let isReleased = false;
    return {
      attach: (session) => {
        if (isReleased) return;
        held = session;
        this.sessions.add(session);
      },
      release: () => {
        if (isReleased) return;
        isReleased = true;
        if (held) this.sessions.delete(held);
        this.open--;
        const left = this.count(service.name) - 1;
        if (left > 0) this.perService.set(service.name, left);
        else this.perService.delete(service.name);
      },
    };
  }

  closeAll(reason: DatagramCloseReason): void {
    for (const session of this.sessions) session.close(reason);
  }
}
