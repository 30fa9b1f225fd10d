/**
 * `portway console DEVICE SERVICE`: the local terminal attached to a serial service, like screen or picocom.
 * stdin goes to the port (through the escape filter, console-escape.ts), the port's bytes to stdout; status
 * lines go to stderr. On a terminal, stdin is put in raw mode (every key goes to the device, Ctrl-C
 * included) and restored however the console ends. With `readOnly` the stream is a read-only tap: keys
 * other than the escape sequence are discarded by the agent.
 */
import { Duplex, PassThrough } from 'node:stream';
import type { ReadStream } from 'node:tty';
import { pumpE2E } from '../../shared/e2e-pump';
import { EscapeFilter, helpLine } from './console-escape';
import { configDir, KnownDevices, loadSettings } from './settings';
import { StreamOpener } from './stream-opener';

const STREAM_TIMEOUT_MS = 15_000;
const CLOSE_GRACE_MS = 5_000;

export interface ConsoleOptions {
  readonly device: string;
  readonly service: string;
  readonly readOnly: boolean;
  readonly escape: number;
}

export interface ConsoleStdio {
  readonly stdin: NodeJS.ReadableStream & Partial<Pick<ReadStream, 'isTTY' | 'setRawMode'>>;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** Run the console until the user leaves, stdin ends or the stream ends; resolves with how it ended. */
export async function runConsole(options: ConsoleOptions, stdio: ConsoleStdio): Promise<'left' | 'complete' | 'aborted'> {
  const settings = await loadSettings(configDir());
  const known = await KnownDevices.load(settings.dir);
  const opener = new StreamOpener({ settings, known }, { device: options.device, service: options.service }, { timeoutMs: STREAM_TIMEOUT_MS, primed: 0, transport: options.readOnly ? 'serial-tap' : 'tcp' });
  // Open (and let the device say yes) before touching the terminal: a refusal is printed on a sane terminal.
  const stream = await opener.open();
  const isRaw = stdio.stdin.isTTY === true && typeof stdio.stdin.setRawMode === 'function';
  const restore = (): void => {
    if (isRaw) stdio.stdin.setRawMode?.(false);
  };
  process.once('exit', restore);
  if (isRaw) stdio.stdin.setRawMode?.(true);
  const eol = isRaw ? '\r\n' : '\n';
  const say = (text: string): void => void stdio.stderr.write(`[portway: ${text}]${eol}`);
  say(`connected to ${options.device}/${options.service}${options.readOnly ? ' (read-only tap)' : ''}; ${helpLine(options.escape)}`);

  const keys = new PassThrough();
  const filter = new EscapeFilter(options.escape);
  let hasLeft = false;
  const onInput = (chunk: Buffer | string): void => {
    for (const action of filter.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))) {
      if (action.kind === 'data') keys.write(action.data);
      else if (action.kind === 'help') say(helpLine(options.escape));
      else {
        hasLeft = true;
        stdio.stdin.off('data', onInput);
        keys.end();
      }
    }
  };
  const onEnd = (): void => {
    if (!hasLeft) keys.end();
  };
  stdio.stdin.on('data', onInput);
  stdio.stdin.once('end', onEnd);
  const local = Duplex.from({ readable: keys, writable: stdio.stdout });
  try {
    const result = await pumpE2E(stream.inner, local, { closeGraceMs: CLOSE_GRACE_MS, transport: stream.raw, ...(stream.heartbeatMs !== undefined ? { heartbeatMs: stream.heartbeatMs } : {}) });
    say(hasLeft ? 'left the console' : result.outcome === 'complete' ? 'the device ended the stream' : `stream cut: ${result.error ? `${result.error.code}: ${result.error.message}` : (result.reason ?? 'unknown')}`);
    return hasLeft ? 'left' : result.outcome;
  } finally {
    stdio.stdin.off('data', onInput);
    stdio.stdin.off('end', onEnd);
    stdio.stdin.pause();
    restore();
    process.off('exit', restore);
  }
}
