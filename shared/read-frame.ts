/**
 * Read exactly one control frame from a stream, with a deadline and a size cap, leaving every byte that
 * follows the frame in the stream's buffer (unshifted) for the next reader: another frame, a pipe, or an
 * inner TLS session (TLSSocket takes over buffered bytes when it wraps a socket).
 */
import type { Duplex } from 'node:stream';
import { FrameDecoder, PortwayError, type Frame } from '../protocol';

export interface ReadFrameOptions {
  readonly expectPreamble: boolean;
  readonly maxFrameBytes: number;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export function readFrame(stream: Duplex, options: ReadFrameOptions): Promise<Frame> {
  return new Promise<Frame>((resolve, reject) => {
    const decoder = new FrameDecoder({ expectPreamble: options.expectPreamble, maxFrameBytes: options.maxFrameBytes });
    let settled = false;
    const finish = (err: PortwayError | undefined, frame?: Frame, rest?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      options.signal?.removeEventListener('abort', onAbort);
      if (err) {
        reject(err);
        return;
      }
      if (rest && rest.length > 0) stream.unshift(rest);
      resolve(frame as Frame);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (!settled && (chunk = stream.read() as Buffer | null) !== null) {
        const result = decoder.push(chunk);
        if (result.kind === 'frame') finish(undefined, result.frame, result.rest);
        else if (result.kind === 'error') finish(result.error);
      }
    };
    const onEnd = (): void => finish(new PortwayError('PW_STREAM_ABORTED', 'peer closed before sending a complete frame'));
    const onError = (err: Error): void => finish(new PortwayError('PW_STREAM_ABORTED', 'connection failed while reading a frame', { cause: err }));
    const onAbort = (): void => finish(new PortwayError('PW_SHUTTING_DOWN'));
    const timer = setTimeout(() => finish(new PortwayError('PW_HANDSHAKE_TIMEOUT', `no complete frame within ${options.timeoutMs} ms`)), options.timeoutMs);
    if (options.signal?.aborted) {
      onAbort();
      return;
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    onReadable();
  });
}
