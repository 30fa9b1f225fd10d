/**
 * Pipe two paired data sockets into each other: bytes both ways with backpressure (pipe() pauses the
 * source while the sink's buffer is full, so a stream holds at most about two socket buffers' worth per
 * direction at the relay), EOF propagated, and one teardown for both: if either side fails or closes
 * without an orderly end, the other is reset (RST), so the far end sees an error and not a clean EOF.
 */
import { dropConnection, type Connection } from '../tls-front';

export interface SpliceOptions {
  /** After one side ended, how long the other may stay open before both are destroyed. */
  readonly closeGraceMs: number;
}

export interface SpliceResult {
  readonly outcome: 'complete' | 'aborted';
  readonly bytesAtoB: number;
  readonly bytesBtoA: number;
}

export function splice(a: Connection, b: Connection, options: SpliceOptions): Promise<SpliceResult> {
  return new Promise<SpliceResult>((resolve) => {
    let ended = 0;
    let done = false;
    let grace: NodeJS.Timeout | undefined;
    let bytesAtoB = 0;
    let bytesBtoA = 0;
    const countA = (chunk: Buffer): void => {
      bytesAtoB += chunk.length;
    };
    const countB = (chunk: Buffer): void => {
      bytesBtoA += chunk.length;
    };
    const finish = (outcome: SpliceResult['outcome']): void => {
      if (done) return;
      done = true;
      if (grace) clearTimeout(grace);
      resolve({ outcome, bytesAtoB, bytesBtoA });
    };
    const abort = (): void => {
      for (const side of [a, b]) dropConnection(side, { reset: true });
      finish('aborted');
    };
    const onEnd = (): void => {
      ended++;
      if (ended === 1) {
        grace = setTimeout(abort, options.closeGraceMs);
        grace.unref();
      }
    };
    let closed = 0;
    const onClose = (): void => {
      closed++;
      if (ended < 2) abort();
      else if (closed === 2) finish('complete');
    };
    for (const side of [a, b]) {
      side.tls.on('error', abort);
      side.tls.once('end', onEnd);
      side.tls.once('close', onClose);
    }
    a.tls.on('data', countA);
    b.tls.on('data', countB);
    a.tls.pipe(b.tls);
    b.tls.pipe(a.tls);
  });
}
