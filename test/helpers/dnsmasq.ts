/**
 * A real dnsmasq on 127.0.0.1 answering only from its own hosts file (no upstream, no /etc/hosts, no config
 * file), in the foreground, killed by the disposer. It runs as the test's user (`--user` keeps it from
 * switching to nobody, which only root could do anyway).
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Disposer } from './disposer';
import { runProcess } from './process';
import { makeTempDir } from './tmp';
import { findFreeUdpPort } from './udp';
import { waitFor } from './wait';

const START_TIMEOUT_MS = 10_000;
const ATTEMPTS = 3;

export interface Dnsmasq {
  readonly port: number;
}

/** Start dnsmasq serving `hosts` (name -> IPv4 address); resolves once it answers a query. */
export async function startDnsmasq(disposer: Disposer, hosts: Readonly<Record<string, string>>): Promise<Dnsmasq> {
  const dir = await makeTempDir(disposer, 'portway-dnsmasq-');
  const hostsFile = path.join(dir, 'hosts');
  await fs.writeFile(hostsFile, Object.entries(hosts).map(([name, ip]) => `${ip} ${name}\n`).join(''));
  const [probeName, probeIp] = Object.entries(hosts)[0] ?? ['', ''];
  const user = os.userInfo().username;
  let lastError = '';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    // dnsmasq cannot bind port 0 and report it: take a free port, retry if another process took it first.
    const port = await findFreeUdpPort();
    const args = ['--no-daemon', '--conf-file=/dev/null', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, `--user=${user}`, '--log-facility=-', '--cache-size=1000'];
    const child = spawn('dnsmasq', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    disposer.add(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    }, 'stop dnsmasq');
    try {
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`dnsmasq exited (${child.exitCode}): ${stderr}`);
          const dig = await runProcess(disposer, 'dig', [`@127.0.0.1`, '-p', String(port), probeName, '+short', '+time=1', '+tries=1'], { timeoutMs: 5_000 });
          return dig.stdout.trim() === probeIp;
        },
        { timeoutMs: START_TIMEOUT_MS, intervalMs: 100, description: `dnsmasq on port ${port}` },
      );
      return { port };
    } catch (err) {
      lastError = (err as Error).message;
      child.kill('SIGKILL');
    }
  }
  throw new Error(`dnsmasq did not start: ${lastError}`);
}
