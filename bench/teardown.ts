/**
 * Everything the benchmark starts is undone here: a LIFO stack of stop functions (each bounded), child
 * processes spawned through `spawnTracked`, and a last sweep that SIGKILLs any descendant of this process
 * still alive (by pid: only processes this run started), so an interrupted run leaves nothing behind.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { descendantsOf, readProcTable } from './proc-stats';

const STEP_TIMEOUT_MS = 15_000;
const CHILD_STOP_TIMEOUT_MS = 5_000;

export class Teardown {
  private readonly steps: { name: string; run: () => Promise<void> | void }[] = [];
  private running: Promise<void> | undefined;

  add(name: string, run: () => Promise<void> | void): void {
    this.steps.push({ name, run });
  }

  /** Run and forget steps, newest first; each gets STEP_TIMEOUT_MS. Idempotent. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) {
        const step = this.steps.pop() as { name: string; run: () => Promise<void> | void };
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(step.run),
            new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), STEP_TIMEOUT_MS))),
          ]);
        } catch (err) {
          process.stderr.write(`bench: teardown step ${step.name} failed: ${(err as Error).message}\n`);
        } finally {
          clearTimeout(timer);
        }
      }
      killDescendants();
    })();
    return this.running;
  }
}

/** A child that is killed (SIGTERM, then SIGKILL) by `stop()` and by the teardown. */
export interface TrackedChild {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout(): string;
  stderr(): string;
  stop(): Promise<void>;
}

const MAX_CAPTURE_CHARS = 4 * 1024 * 1024;

export function spawnTracked(teardown: Teardown, command: string, args: readonly string[], options: SpawnOptions = {}): TrackedChild {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let out = '';
  let err = '';
  child.on('error', (e) => (err += `spawn error: ${e.message}\n`));
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    if (out.length < MAX_CAPTURE_CHARS) out += s;
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (err.length < MAX_CAPTURE_CHARS) err += s;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };
  teardown.add(`${command} ${child.pid ?? '?'}`, stop);
  return { child, exited, stdout: () => out, stderr: () => err, stop };
}

/** SIGKILL every descendant of this process that is still alive; returns their pids and names. */
export function killDescendants(): string[] {
  const tree = descendantsOf(readProcTable(), process.pid);
  tree.delete(process.pid);
  const killed: string[] = [];
  for (const entry of tree.values()) {
    if (entry.state === 'Z') continue; // already dead, waiting to be reaped
    try {
      process.kill(entry.pid, 'SIGKILL');
      killed.push(`${entry.pid} ${entry.comm}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  if (killed.length > 0) process.stderr.write(`bench: killed leftover processes: ${killed.join(', ')}\n`);
  return killed;
}
