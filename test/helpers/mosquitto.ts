/**
 * A private Mosquitto for one test: its own process on a free loopback port, anonymous, nothing kept on disk,
 * so retained messages and sessions never leak between tests (the machine's Mosquitto on 1883 keeps them).
 * `stop()` and `start()` again on the same port model a broker restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { findFreePort } from './ports';
import { makeTempDir } from './tmp';
import type { Disposer } from './disposer';

export const MOSQUITTO = '/usr/sbin/mosquitto';

export interface PrivateMosquitto {
  readonly port: number;
  readonly url: string;
  /** Lines Mosquitto logged (stderr), for diagnosing a failure. */
  readonly log: string[];
  start(): Promise<void>;
  /** SIGKILL by default: a crash; SIGTERM: an orderly stop. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startMosquitto(disposer: Disposer): Promise<PrivateMosquitto> {
  const dir = await makeTempDir(disposer, 'portway-mosquitto-');
  const port = await findFreePort();
  const config = path.join(dir, 'mosquitto.conf');
  writeFileSync(config, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n`);
  const log: string[] = [];
  let child: ChildProcess | undefined;

  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill(signal);
    await exited;
  };
  const start = async (): Promise<void> => {
    if (child) throw new Error('mosquitto is already running');
    const started = spawn(MOSQUITTO, ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = started;
    started.stderr?.setEncoding('utf8').on('data', (text: string) => log.push(...text.split('\n').filter(Boolean)));
    const deadline = Date.now() + 10_000;
    for (let attempt = 0; attempt < 200; attempt++) {
      if (started.exitCode !== null) throw new Error(`mosquitto exited ${started.exitCode}: ${log.join(' | ')}`);
      if (await canConnect(port)) return;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`mosquitto did not listen on 127.0.0.1:${port} within 10 s: ${log.join(' | ')}`);
  };
  disposer.add(() => stop(), 'stop mosquitto');
  await start();
  return { port, url: `mqtt://127.0.0.1:${port}`, log, start, stop };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
