/**
 * The simulated agent fleet of bench/fake-agents.ts (one child process, N real MQTT-over-TLS control
 * connections with the agent's own ControlChannel and backoff) driven from a test: enroll, connect, read the
 * timeline of every 'online', stop. The child is registered with the test's Disposer.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { AgentTimers } from '../../agent/src/config';
import type { Disposer } from './disposer';

const FAKE_AGENTS_JS = path.resolve(__dirname, '..', '..', 'dist', 'bench', 'fake-agents.js');
const POLL_MS = 50;

export interface FakeFleetHandle {
  readonly pid: number;
  /** The next `{"event": event}` line printed after this call (an `error` line or an exit rejects). */
  next(event: string, timeoutMs: number): Promise<Record<string, unknown>>;
  send(line: string): void;
}

export function startFakeFleet(disposer: Disposer, config: { relay: string; caFingerprint: string; enrollKey: string; count: number; concurrency: number; timers?: Partial<AgentTimers> }): FakeFleetHandle {
  const child = spawn(process.execPath, [FAKE_AGENTS_JS], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  disposer.add(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.stdin.end('stop\n');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  });
  child.stdin.on('error', () => undefined); // an early exit shows in next()
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-4_000)));
  const events: Record<string, unknown>[] = [];
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.startsWith('{')) events.push(JSON.parse(line) as Record<string, unknown>);
  });
  child.stdin.write(`${JSON.stringify(config)}\n`);
  return {
    pid: child.pid as number,
    send: (line) => void child.stdin.write(`${line}\n`),
    async next(event, timeoutMs) {
      const from = events.length;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const e of events.slice(from)) {
          if (e.event === event) return e;
          if (e.event === 'error') throw new Error(`fake agents: ${String(e.message)}`);
        }
        if (child.exitCode !== null) throw new Error(`fake agents exited ${child.exitCode}: ${stderr.slice(-500)}`);
        if (Date.now() > deadline) throw new Error(`fake agents: no ${event} within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, POLL_MS)); // poll interval of a bounded wait
      }
    },
  };
}
