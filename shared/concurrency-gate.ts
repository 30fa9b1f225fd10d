/**
 * At most `limit` holders at once, the rest wait in FIFO order (the queue is bounded too).
 * Used for TLS handshakes in bursts: 200 handshakes started together all progress slowly and can all
 * miss their deadline, while 16 at a time finish in order, and the later ones can resume sessions
 * with tickets the earlier ones received.
 */
import { PortwayError } from '../protocol';

export class ConcurrencyGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaiting: number,
  ) {
    if (!(limit >= 1) || !(maxWaiting >= 0)) throw new RangeError('ConcurrencyGate needs limit >= 1 and maxWaiting >= 0');
  }

  /** Resolves with a release function once a slot is free. */
  acquire(): Promise<() => void> {
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxWaiting) return Promise.reject(new PortwayError('PW_LIMIT_REACHED', 'too many connections waiting to be opened'));
    return new Promise((resolve) => this.waiting.push(() => resolve(this.releaser())));
  }

  get pending(): number {
    return this.waiting.length;
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    };
  }
}
