/**
 * Wake-ups for claim long polls on this relay: a claim's row changed (offer, answer, completion). Waiters
 * also re-read the store every `pollMs`, so a change made by another relay is seen too. Bounded by `maxWaiters`.
 */
import { PortwayError } from '../../../protocol';

export class ClaimWaiters {
  private readonly waiters = new Map<string, Set<() => void>>();
  private count = 0;

  constructor(private readonly maxWaiters: number) {}

  /** Resolve on notify(claimId), after `ms`, or when `signal` aborts. */
  wait(claimId: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.count >= this.maxWaiters) return Promise.reject(new PortwayError('PW_LIMIT_REACHED', 'too many claim polls waiting'));
    return new Promise<void>((resolve) => {
      let set = this.waiters.get(claimId);
      if (!set) {
        set = new Set();
        this.waiters.set(claimId, set);
      }
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        if (set.delete(done)) this.count--;
        if (set.size === 0 && this.waiters.get(claimId) === set) this.waiters.delete(claimId);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener('abort', done);
      set.add(done);
      this.count++;
    });
  }

  notify(claimId: string): void {
    for (const done of [...(this.waiters.get(claimId) ?? [])]) done();
  }

  wakeAll(): void {
    for (const set of [...this.waiters.values()]) for (const done of [...set]) done();
  }
}
