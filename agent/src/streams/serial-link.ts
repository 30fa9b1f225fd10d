/**
 * A serial port lease seen as a byte stream, so the end-to-end pump (shared/e2e-pump.ts) carries it like a
 * TCP connection (mode `raw`, and every read-only tap).
 *
 * - Readable side: the port's bytes. The writer's backpressure pauses the port; a tap cannot pause it, so
 *   beyond `maxTapBacklogBytes` waiting for a tap's stream its bytes are dropped and counted.
 * - Writable side: the writer's bytes go to the port, each write completing once the kernel took it. A
 *   tap's bytes are discarded and counted.
 * - End: the peer's FIN (`_final`) waits until the writes reached the port, then the port's bytes are still
 *   forwarded for `lingerMs` (a reply to the last command) before this side ends. The port going away
 *   destroys the link with PW_SERVICE_UNAVAILABLE, which the pump turns into a cut stream.
 */
import { Duplex } from 'node:stream';
import type { PortwayError } from '../../../protocol';
import type { SerialLease, SerialSubscriber } from './serial-port-hub';

export interface SerialLinkOptions {
  readonly lingerMs: number;
  readonly maxTapBacklogBytes: number;
}

export interface SerialLinkCounters {
  /** Port bytes dropped because a tap's stream was too slow. */
  tapDroppedBytes: number;
  /** Bytes a tap sent, discarded. */
  tapDiscardedBytes: number;
}

export class SerialLink extends Duplex implements SerialSubscriber {
  readonly counters: SerialLinkCounters = { tapDroppedBytes: 0, tapDiscardedBytes: 0 };
  private lingerTimer: NodeJS.Timeout | undefined;
  private isEnding = false;

  constructor(
    protected readonly lease: SerialLease,
    protected readonly options: SerialLinkOptions,
  ) {
    super({ allowHalfOpen: true });
    lease.subscriber = this;
  }

  deliver(chunk: Buffer): void {
    if (this.isEnding || this.destroyed) return;
    if (this.lease.role === 'tap') {
      if (this.readableLength + chunk.length > this.options.maxTapBacklogBytes) {
        this.counters.tapDroppedBytes += chunk.length;
        return;
      }
      this.push(chunk);
      return;
    }
    if (!this.push(this.encodeForPeer(chunk))) this.lease.pause();
  }

  lost(error: PortwayError): void {
    this.destroy(error);
  }

  override _read(): void {
    if (this.lease.role === 'writer') this.lease.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.lease.role === 'tap') {
      this.counters.tapDiscardedBytes += chunk.length;
      callback();
      return;
    }
    this.fromPeer(chunk).then(() => callback(), (err: Error) => callback(err));
  }

  override _final(callback: (error?: Error | null) => void): void {
    const drained = this.lease.role === 'writer' ? this.lease.drain() : Promise.resolve();
    drained.then(
      () => {
        callback();
        this.lingerTimer = setTimeout(() => this.endReadable(), this.options.lingerMs);
      },
      (err: Error) => callback(err),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lease.release();
    callback(error);
  }

  /** Port bytes as the peer receives them (raw: unchanged). */
  protected encodeForPeer(chunk: Buffer): Buffer {
    return chunk;
  }

  /** Bytes from the peer (raw: to the port). */
  protected fromPeer(chunk: Buffer): Promise<void> {
    return this.lease.write(chunk);
  }

  private endReadable(): void {
    if (this.isEnding || this.destroyed) return;
    this.isEnding = true;
    this.lease.resume();
    this.push(null);
  }
}
