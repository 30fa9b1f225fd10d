/**
 * Connect-to-first-byte: open a TCP connection to the path's entry, write 1 byte, time until the echo of
 * that byte arrives, then close (FIN, and wait for the path to close back, outside the timing). Samples
 * run one after another; warm-up samples are taken and dropped first.
 */
import net from 'node:net';

export interface ProbeResult {
  readonly samplesMs: number[];
  readonly failures: number;
  readonly firstError?: string;
}

const CLOSE_WAIT_MS = 2_000;

function oneSample(port: number, timeoutMs: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const started = performance.now();
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    let elapsed: number | undefined;
    let closeTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => finish(new Error(`no echo within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      clearTimeout(closeTimer);
      socket.destroy();
      if (elapsed !== undefined) resolve(elapsed);
      else reject(err ?? new Error('closed before the echo'));
    };
    socket.on('error', (err) => finish(err));
    socket.on('close', () => finish());
    socket.once('data', () => {
      elapsed = performance.now() - started;
      clearTimeout(timer);
      socket.end();
      socket.resume();
      closeTimer = setTimeout(() => finish(), CLOSE_WAIT_MS);
    });
    socket.write(Buffer.from([0x2a]));
  });
}

export async function probeConnectEcho(port: number, options: { samples: number; warmup: number; timeoutMs: number; signal?: AbortSignal }): Promise<ProbeResult> {
  const samplesMs: number[] = [];
  let failures = 0;
  let firstError: string | undefined;
  for (let i = 0; i < options.warmup + options.samples; i++) {
    options.signal?.throwIfAborted();
    try {
      const ms = await oneSample(port, options.timeoutMs);
      if (i >= options.warmup) samplesMs.push(ms);
    } catch (err) {
      failures++;
      firstError ??= (err as Error).message;
      if (failures > Math.max(5, options.samples / 5)) break; // a broken path: stop early, report it
    }
  }
  return { samplesMs, failures, ...(firstError === undefined ? {} : { firstError }) };
}
