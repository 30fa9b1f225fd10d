/**
 * Pipe two paired data sockets into each other once their outer TLS layers have ended: TCP to TCP, the
 * inner end-to-end session's bytes as they come (the relay has no key for them). Each direction starts
 * when its source has sent its handoff marker (protocol/tls-records.ts); the relay must already have sent
 * its own to the destination. Backpressure: pipe() pauses the source while the sink's buffer is full, so a
 * stream holds at most about two socket buffers' worth per direction at the relay. EOF is propagated, and
 * there is one teardown for both: if either side fails or closes without an orderly end (or before its
 * handoff), the other is reset (RST), so the far end sees an error and not a clean EOF.
 */
import type { Transform } from 'node:stream';
import { dropConnection, type Connection } from '../tls-front';

export interface SpliceOptions {
  /** After one side ended, how long the other may stay open before both are destroyed. */
  readonly closeGraceMs: number;
  /** How long a side may take to send its handoff marker (the agent: after STREAM_OPEN) before both are reset. */
  readonly handoffTimeoutMs: number;
  /** TEST ONLY (data-misbehaviour.ts): a stage the A-to-B bytes go through after the handoff. */
  readonly tamperAtoB?: Transform;
}

export interface SpliceResult {
  readonly outcome: 'complete' | 'aborted';
  readonly bytesAtoB: number;
  readonly bytesBtoA: number;
}

export function splice(a: Connection, b: Connection, options: SpliceOptions): Promise<SpliceResult> {
  return new Promise<SpliceResult>((resolve) => {
    let ended = 0;
    let closed = 0;
    let done = false;
    let grace: NodeJS.Timeout | undefined;
    // Bytes spliced per direction: what the destination socket was given since its direction started (the
    // socket's own counter, so no per-chunk listener is needed).
    const started = { aToB: -1, bToA: -1 };
    const bytes = { aToB: 0, bToA: 0 };
    const count = (): void => {
      if (started.aToB >= 0) bytes.aToB = b.raw.bytesWritten - started.aToB;
      if (started.bToA >= 0) bytes.bToA = a.raw.bytesWritten - started.bToA;
    };
    const finish = (outcome: SpliceResult['outcome']): void => {
      if (done) return;
      done = true;
      count();
      if (grace) clearTimeout(grace);
      // The outer TLS sockets have been idle since the handoff; free them with the connections.
      for (const side of [a, b]) dropConnection(side);
      resolve({ outcome, bytesAtoB: bytes.aToB, bytesBtoA: bytes.bToA });
    };
    const abort = (): void => {
      if (done) return;
      done = true;
      count();
      if (grace) clearTimeout(grace);
      for (const side of [a, b]) dropConnection(side, { reset: true });
      resolve({ outcome: 'aborted', bytesAtoB: bytes.aToB, bytesBtoA: bytes.bToA });
    };
    const onEnd = (): void => {
      ended++;
      if (ended === 1) {
        grace = setTimeout(abort, options.closeGraceMs);
        grace.unref();
      }
    };
    const onClose = (): void => {
      closed++;
      if (ended < 2) abort();
      else if (closed === 2) finish('complete');
    };
    const start = (src: Connection, dst: Connection, direction: 'aToB' | 'bToA'): void => {
      const ready = src.carrier ? src.carrier.whenPeerHandsOff(options.handoffTimeoutMs, 'no handoff from the peer') : Promise.resolve();
      ready.then(() => {
        if (done) return;
        // Anything the peer still sent inside TLS after its last frame breaks the protocol.
        if (src.tls.readableLength > 0 || src.raw.destroyed) {
          abort();
          return;
        }
        started[direction] = dst.raw.bytesWritten;
        src.raw.once('end', onEnd);
        const tamper = direction === 'aToB' ? options.tamperAtoB : undefined;
        if (tamper) src.raw.pipe(tamper.on('error', abort)).pipe(dst.raw);
        else src.raw.pipe(dst.raw);
      }, abort);
    };
    for (const side of [a, b]) {
      if (side.raw.destroyed) {
        abort();
        return;
      }
      side.raw.on('error', abort);
      side.raw.once('close', onClose);
    }
    start(a, b, 'aToB');
    start(b, a, 'bToA');
  });
}
