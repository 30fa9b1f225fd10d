/**
 * One UDP session seen as a byte stream, so the end-to-end pump (shared/e2e-pump.ts) can carry it like a
 * TCP connection: on the agent (one connected UDP socket toward the service) and on the forward proxy (one
 * client source address on the listening socket).
 *
 * - Readable side: each datagram from the local UDP side (`deliver`) becomes one DATAGRAM frame
 *   (protocol/datagram-frames.ts). UDP has no backpressure, so when the stream is slower than the sender
 *   and `maxBacklogBytes` are already waiting, new datagrams are dropped (reason `backlog`), as a router would.
 * - Writable side: frames from the peer are decoded and each datagram is sent to the local UDP side; the
 *   write completes once the kernel took them, which slows the stream down to what the socket accepts.
 * - End: after `idleTimeoutMs` without a datagram either way (counted from `start()`), or on `close(reason)`, the readable side ends
 *   (the pump sends FIN); the peer answers with its FIN (the pump ends the writable side) and the session
 *   closes. A peer FIN first ends this side too. A peer that does not answer within `closeGraceMs` is cut.
 * - Drops are counted by reason and never fail the session.
 */
import { Duplex } from 'node:stream';
import { DatagramDecoder, encodeDatagram, MAX_DATAGRAM_BYTES, PortwayError, type DatagramEvent } from '../protocol';

/** `refused`: the local side answered a datagram with ICMP port unreachable (nothing listens there). */
export type DatagramDropReason = 'oversized' | 'truncated' | 'backlog' | 'send-failed' | 'refused';
export type DatagramCloseReason = 'idle' | 'peer' | 'evicted' | 'stopping';

export interface DatagramCounters {
  /** Datagrams from the local UDP side, framed toward the peer. */
  datagramsIn: number;
  /** Datagrams from the peer, sent to the local UDP side. */
  datagramsOut: number;
  readonly dropped: Record<DatagramDropReason, number>;
}

export interface DatagramSessionOptions {
  readonly idleTimeoutMs: number;
  /** Framed bytes waiting for the stream before new datagrams are dropped. */
  readonly maxBacklogBytes: number;
  /** After this side ended, how long the peer has to end its side. */
  readonly closeGraceMs: number;
}

export interface DatagramSessionDeps {
  /** Send one datagram to the local UDP side; `done` runs once the kernel took it (or it failed). */
  send(datagram: Buffer, done: (err?: Error | null) => void): void;
  readonly now?: () => number;
}

export class DatagramSession extends Duplex {
  readonly counters: DatagramCounters = { datagramsIn: 0, datagramsOut: 0, dropped: { oversized: 0, truncated: 0, backlog: 0, 'send-failed': 0, refused: 0 } };
  /** Why the session ended (the first reason wins). */
  closeReason: DatagramCloseReason | undefined;
  private readonly decoder = new DatagramDecoder();
  private lastActiveAt: number;
  private idleTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private isReadableEnded = false;

  constructor(
    private readonly deps: DatagramSessionDeps,
    private readonly options: DatagramSessionOptions,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: options.maxBacklogBytes });
    this.lastActiveAt = this.now();
    this.once('close', () => this.clearTimers());
  }

  /**
   * The stream is open: start the idle clock (idempotent). Not before, so a stream that is slow to open
   * does not idle out the datagrams queued for it.
   */
  start(): void {
    if (this.idleTimer || this.isReadableEnded || this.destroyed) return;
    this.lastActiveAt = this.now();
    this.armIdle(this.options.idleTimeoutMs);
  }

  /** When the last datagram crossed, either way (ms, on the deps clock). */
  get lastActivityAt(): number {
    return this.lastActiveAt;
  }

  /** A datagram from the local UDP side. */
  deliver(datagram: Buffer): void {
    if (this.isReadableEnded || this.destroyed) return;
    if (datagram.length > MAX_DATAGRAM_BYTES) {
      this.counters.dropped.oversized++;
      return;
    }
    if (this.readableLength + datagram.length > this.options.maxBacklogBytes) {
      this.counters.dropped.backlog++;
      return;
    }
    this.lastActiveAt = this.now();
    this.counters.datagramsIn++;
    this.push(encodeDatagram(datagram));
  }

  /** End this side gracefully (idempotent); the peer ends its side in turn. */
  close(reason: DatagramCloseReason): void {
    this.closeReason ??= reason;
    if (this.isReadableEnded || this.destroyed) return;
    this.isReadableEnded = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.push(null);
    if (!this.writableFinished) {
      this.graceTimer = setTimeout(() => this.destroy(new PortwayError('PW_STREAM_ABORTED', 'the peer did not end the UDP session in time')), this.options.closeGraceMs);
      this.graceTimer.unref();
    }
  }

  override _read(): void {
    // Datagrams are pushed as they arrive; UDP cannot be paused, so the backlog bound drops instead.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    let pending = 1;
    const done = (): void => {
      if (--pending === 0) callback();
    };
    this.decoder.push(chunk, (event) => {
      if (event.kind !== 'datagram') {
        this.countDrop(event);
        return;
      }
      pending++;
      this.lastActiveAt = this.now();
      this.counters.datagramsOut++;
      this.deps.send(event.data, (err) => {
        if (err) this.counters.dropped['send-failed']++;
        done();
      });
    });
    done();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.decoder.end((event) => this.countDrop(event));
    this.close('peer');
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.clearTimers();
    callback(error);
  }

  private countDrop(event: DatagramEvent): void {
    if (event.kind === 'dropped') this.counters.dropped[event.reason]++;
  }

  private armIdle(delayMs: number): void {
    this.idleTimer = setTimeout(() => {
      const idleMs = this.now() - this.lastActiveAt;
      if (idleMs >= this.options.idleTimeoutMs) this.close('idle');
      else this.armIdle(this.options.idleTimeoutMs - idleMs);
    }, delayMs);
    this.idleTimer.unref();
  }

  private clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.graceTimer) clearTimeout(this.graceTimer);
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }
}
