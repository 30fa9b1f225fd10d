/**
 * Real pseudo-terminal pairs for serial tests: `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`
 * makes two ptys joined back to back, with symlinks at stable paths (the agent opens A, the test B), like
 * a null-modem cable between two serial ports. Stopping socat removes the links (an unplug); a new pair at
 * the same paths is a replug.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { SerialPort } from 'serialport';
import { keepPollInterest } from '../../agent/src/streams/serial-poll-interest';
import type { Disposer } from './disposer';
import { waitFor } from './wait';

export interface PtyPair {
  readonly agentPath: string;
  readonly peerPath: string;
  /** Kill socat (the links disappear: an unplug). */
  stop(): Promise<void>;
}

export async function startPtyPair(disposer: Disposer, agentPath: string, peerPath: string): Promise<PtyPair> {
  const child = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${agentPath}`, `pty,raw,echo=0,link=${peerPath}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr = (stderr + t).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    // socat removes its links on a clean exit; make sure, so the path is really gone.
    await Promise.all([fs.rm(agentPath, { force: true }), fs.rm(peerPath, { force: true })]);
  };
  disposer.add(stop, 'stop socat pty pair');
  await waitFor(() => stderr.includes('starting data transfer loop') || child.exitCode !== null, { timeoutMs: 10_000, intervalMs: 20, description: 'socat pty pair' });
  if (child.exitCode !== null) throw new Error(`socat exited: ${stderr}`);
  return { agentPath, peerPath, stop };
}

/** The test's end of a pair, opened with serialport (its own flock, raw termios) and its poller patched like the agent's. */
export async function openPeer(disposer: Disposer, path: string, baudRate = 115200): Promise<SerialPort> {
  const port = new SerialPort({ path, baudRate, autoOpen: false });
  port.on('error', () => {
    // A test that cares reads the close event.
  });
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  // The same lost-wakeup workaround as the agent's, or this end could stall when both directions are busy.
  if (!keepPollInterest(port)) throw new Error('serialport poller not patched (serial-poll-interest.ts)');
  disposer.add(() => new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve())), 'close peer port');
  return port;
}

/** Everything a readable (a port, a socket, a child's stdout) sends, taken in order with bounded waits. */
export class ByteTaker {
  private chunks: Buffer[] = [];
  private have = 0;

  constructor(source: NodeJS.ReadableStream) {
    source.on('data', (chunk: Buffer | string) => {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      this.chunks.push(b);
      this.have += b.length;
    });
  }

  get length(): number {
    return this.have;
  }

  /** The next `length` bytes, once they are there (polled every 5 ms, at most `timeoutMs`). */
  async take(length: number, timeoutMs: number): Promise<Buffer> {
    await waitFor(() => this.have >= length, { timeoutMs, intervalMs: 5, description: `${length} bytes (have ${this.have})` });
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(length)];
    this.have = all.length - length;
    return all.subarray(0, length);
  }
}

/** `stty -F path -a`'s first lines: speed and framing of a tty as the kernel has it. */
export async function ttySettings(path: string): Promise<{ speed: number; flags: Set<string> }> {
  const { execFile } = await import('node:child_process');
  const text = await new Promise<string>((resolve, reject) => execFile('stty', ['-F', path, '-a'], { timeout: 5_000 }, (err, out) => (err ? reject(err) : resolve(out))));
  const speed = Number(/speed (\d+) baud/.exec(text)?.[1]);
  return { speed, flags: new Set(text.split(/[\s;]+/)) };
}
