/**
 * The outer TLS layer of a data socket, which ends at a handoff marker in each direction
 * (protocol/tls-records.ts). A TLSSocket runs over a HandoffCarrier instead of the TCP socket itself:
 *
 * - reading: the carrier passes the peer's TLS records up to its marker, then stops reading, and puts the
 *   bytes after the marker back into the TCP socket (`unshift`), where the next owner (the relay's splice,
 *   or the inner TLS session wrapped natively around the TCP socket) finds them;
 * - writing: TLS output goes to the TCP socket in order; `handOffWrites()` appends the marker after
 *   everything the TLS layer has written so far, and any TLS output after that (a late alert, a ticket) is
 *   dropped, because from there on the byte stream belongs to the inner session.
 *
 * Until the handoff the carrier owns the TCP socket's reading. It never destroys the TCP socket (the owner
 * of the connection does that), so the two layers never race to close one handle; it ends it (FIN) only
 * when the TLS layer ends before any handoff, as a TLS socket on TCP would.
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { Duplex } from 'node:stream';
import { HANDOFF_MARKER, PortwayError, TlsRecordScanner } from '../protocol';

export class HandoffCarrier extends Duplex {
  private readonly scanner = new TlsRecordScanner();
  private readingState: 'tls' | 'handed-off' | 'failed' = 'tls';
  private writingState: 'tls' | 'handed-off' = 'tls';
  /** Why reading failed (bytes that were neither TLS records nor the marker). */
  private failure: PortwayError | undefined;
  /** Fires once: 'handoff' when the peer's marker arrived (bytes after it are back in the TCP socket). */
  readonly events = new EventEmitter();
  private readonly onData = (chunk: Buffer): void => this.scanChunk(chunk);
  private readonly onEnd = (): void => {
    if (this.readingState === 'tls') this.push(null);
  };
  private readonly onClose = (): void => {
    if (this.readingState === 'tls') this.destroy();
  };
  private readonly onError = (err: Error): void => {
    if (this.readingState === 'tls') this.destroy(err);
  };

  constructor(readonly raw: net.Socket) {
    super({ allowHalfOpen: true });
    raw.on('data', this.onData);
    raw.on('end', this.onEnd);
    raw.on('close', this.onClose);
    raw.on('error', this.onError);
  }

  get peerHandedOff(): boolean {
    return this.readingState === 'handed-off';
  }

  get handedOffWrites(): boolean {
    return this.writingState === 'handed-off';
  }

  /**
   * Resolves when the peer's marker arrived; rejects if the connection ends or fails first, or with
   * PW_HANDSHAKE_TIMEOUT (`${what} within ${timeoutMs} ms`) when it has not arrived in time.
   */
  whenPeerHandsOff(timeoutMs: number, what: string): Promise<void> {
    if (this.readingState === 'handed-off') return Promise.resolve();
    const closedError = (): PortwayError => this.failure ?? new PortwayError('PW_STREAM_ABORTED', 'data socket closed before the handoff');
    if (this.readingState === 'failed' || this.destroyed) return Promise.reject(closedError());
    return new Promise<void>((resolve, reject) => {
      const settle = (err?: PortwayError): void => {
        clearTimeout(timer);
        this.events.off('handoff', onHandoff);
        this.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onHandoff = (): void => settle();
      const onClose = (): void => settle(closedError());
      const timer = setTimeout(() => settle(new PortwayError('PW_HANDSHAKE_TIMEOUT', `${what} within ${timeoutMs} ms`)), timeoutMs);
      this.events.once('handoff', onHandoff);
      this.once('close', onClose);
    });
  }

  /** End the outer TLS layer in the sending direction: the marker goes out after every TLS byte written so far. */
  handOffWrites(): void {
    if (this.writingState === 'handed-off') return;
    this.writingState = 'handed-off';
    if (!this.raw.destroyed) this.raw.write(HANDOFF_MARKER);
  }

  override _read(): void {
    if (this.readingState === 'tls') this.raw.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.writingState === 'handed-off' || this.raw.destroyed) {
      callback();
      return;
    }
    this.raw.write(chunk, (err) => callback(err ?? null));
  }

  override _final(callback: (error?: Error | null) => void): void {
    // The TLS layer ended (close_notify sent) before any handoff: end the TCP connection too, as a TLS socket
    // on TCP would (a refusal). After the handoff the TCP connection belongs to the inner session.
    if (this.writingState === 'tls' && !this.raw.destroyed) this.raw.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.detach();
    callback(err);
  }

  private scanChunk(chunk: Buffer): void {
    const result = this.scanner.scan(chunk);
    if (result.pass.length > 0 && !this.push(result.pass)) this.raw.pause();
    if (result.kind === 'tls') return;
    if (result.kind === 'error') {
      this.readingState = 'failed';
      this.failure = result.error;
      this.detach();
      this.destroy(result.error);
      return;
    }
    this.readingState = 'handed-off';
    this.detach();
    this.raw.pause();
    if (result.rest.length > 0) this.raw.unshift(result.rest);
    this.events.emit('handoff');
  }

  private detach(): void {
    this.raw.off('data', this.onData);
    this.raw.off('end', this.onEnd);
    this.raw.off('close', this.onClose);
    this.raw.off('error', this.onError);
  }
}
