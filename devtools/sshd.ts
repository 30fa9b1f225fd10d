/**
 * A throwaway OpenSSH server on 127.0.0.1 for tests and baselines: own host key, own client key pair,
 * own config, no PAM, key authentication only (root may log in with the key, since tests run as root).
 *
 *   const sshd = await startSshd();
 *   spawn('ssh', [...sshd.sshArgs(), 'true']);                        // options + host, then the command
 *   spawn('ssh', [...sshd.sshOptions(), '-o', 'ProxyCommand=…', 'any-name', 'true']);
 *   await sshd.stop();
 *
 * The client options pin the host key through HostKeyAlias, so any host name (a tunnel, a ProxyCommand)
 * checks against the same known_hosts entry. sshd needs an absolute path and /run/sshd (its privilege
 * separation directory), which is created if missing. sshd cannot listen on port 0 and report back, so a
 * free port is picked and the start is retried when the port was taken meanwhile.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findFreePort } from './ports';
import { makeTempDir } from './temp-dir';

const SSHD_PATH = '/usr/sbin/sshd';
const HOST = '127.0.0.1';
const HOST_KEY_ALIAS = 'portway-test-sshd';
const MAX_START_ATTEMPTS = 5;
const DEFAULT_START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const MAX_LOG_CHARS = 64 * 1024;

const execFileAsync = promisify(execFile);

export interface SshdOptions {
  /** Bound on each start attempt (until sshd sends its banner). Default 10 s. */
  readonly startTimeoutMs?: number;
  /** Extra sshd_config lines, appended. */
  readonly extraConfig?: readonly string[];
}

export interface Sshd {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly dir: string;
  readonly clientKeyPath: string;
  readonly knownHostsPath: string;
  /** ssh client options without a host: -F /dev/null, key, pinned known_hosts, batch mode, port, user. */
  sshOptions(): string[];
  /** sshOptions(), then `extra`, then the host: append the remote command. */
  sshArgs(extra?: readonly string[]): string[];
  /** The last 64 KiB of sshd's log (stderr). */
  logs(): string;
  /** Stops sshd and its session processes, then removes the directory. Idempotent. */
  stop(): Promise<void>;
}

export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const dir = await makeTempDir('portway-sshd-');
  try {
    return await startIn(dir.path, options, () => dir.remove());
  } catch (err) {
    await dir.remove();
    throw err;
  }
}

async function startIn(dir: string, options: SshdOptions, removeDir: () => Promise<void>): Promise<Sshd> {
  const hostKeyPath = join(dir, 'host_ed25519_key');
  const clientKeyPath = join(dir, 'client_ed25519_key');
  const knownHostsPath = join(dir, 'known_hosts');
  const authorizedKeysPath = join(dir, 'authorized_keys');
  await Promise.all([generateKey(hostKeyPath, 'portway-test-host'), generateKey(clientKeyPath, 'portway-test-client')]);
  await writeFile(authorizedKeysPath, await readFile(`${clientKeyPath}.pub`), { mode: 0o600 });
  await chmod(dir, 0o700);
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const hostPublicKey = (await readFile(`${hostKeyPath}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
  const paths = { dir, hostKeyPath, authorizedKeysPath };
  const { child, port, log } = await launch(paths, options);
  await writeFile(knownHostsPath, `${HOST_KEY_ALIAS} ${hostPublicKey}\n[${HOST}]:${port} ${hostPublicKey}\n`, {
    mode: 0o600,
  });
  const user = userInfo().username;
  const sshOptions = (): string[] => [
    ...['-F', '/dev/null', '-i', clientKeyPath, '-p', String(port), '-l', user],
    ...['-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${knownHostsPath}`],
    ...['-o', 'GlobalKnownHostsFile=/dev/null', '-o', `HostKeyAlias=${HOST_KEY_ALIAS}`],
    ...['-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'],
    ...['-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3'],
  ];
  let stopping: Promise<void> | null = null;
  return {
    host: HOST,
    port,
    user,
    dir,
    clientKeyPath,
    knownHostsPath,
    sshOptions,
    sshArgs: (extra = []) => [...sshOptions(), ...extra, HOST],
    logs: () => log.text,
    stop: () => {
      stopping ??= stopProcess(child).then(removeDir);
      return stopping;
    },
  };
}

async function generateKey(path: string, comment: string): Promise<void> {
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], {
    timeout: 10_000,
  });
}

interface SshdPaths {
  readonly dir: string;
  readonly hostKeyPath: string;
  readonly authorizedKeysPath: string;
}

interface LogTail {
  text: string;
}

async function launch(paths: SshdPaths, options: SshdOptions): Promise<{ child: ChildProcess; port: number; log: LogTail }> {
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePort(HOST);
    const configPath = join(paths.dir, 'sshd_config');
    await writeFile(configPath, sshdConfig(paths, port, options.extraConfig ?? []), { mode: 0o600 });
    const log: LogTail = { text: '' };
    const child = spawn(SSHD_PATH, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.on('error', () => undefined); // a failed spawn shows as 'exit'/'close' and is reported by waitReady
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      log.text = (log.text + text).slice(-MAX_LOG_CHARS);
    });
    const outcome = await waitReady(child, port, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    if (outcome === 'ready') return { child, port, log };
    await stopProcess(child);
    const isPortTaken = /Address already in use/i.test(log.text);
    if (!isPortTaken || attempt >= MAX_START_ATTEMPTS) {
      throw new Error(`sshd did not start (${outcome}, attempt ${attempt}): ${log.text.trim().slice(-2000)}`);
    }
  }
}

function sshdConfig(paths: SshdPaths, port: number, extra: readonly string[]): string {
  return [
    `ListenAddress ${HOST}`,
    `Port ${port}`,
    `HostKey ${paths.hostKeyPath}`,
    `PidFile ${join(paths.dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${paths.authorizedKeysPath}`,
    'UsePAM no',
    'StrictModes no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'AllowTcpForwarding yes',
    'X11Forwarding no',
    'PrintMotd no',
    'PrintLastLog no',
    'UseDNS no',
    'MaxStartups 200',
    'MaxSessions 100',
    'LogLevel INFO',
    'Subsystem sftp internal-sftp',
    ...extra,
    '',
  ].join('\n');
}

type StartOutcome = 'ready' | 'exited' | 'timeout';

/** Resolves once sshd answers a TCP connection with an SSH banner, or when it exits or time runs out. */
async function waitReady(child: ChildProcess, port: number, timeoutMs: number): Promise<StartOutcome> {
  const deadline = Date.now() + timeoutMs;
  let hasExited = child.exitCode !== null || child.signalCode !== null;
  const onExit = (): void => {
    hasExited = true;
  };
  child.once('exit', onExit);
  try {
    while (!hasExited && Date.now() < deadline) {
      if (await probeBanner(port, Math.max(1, Math.min(1000, deadline - Date.now())))) return 'ready';
      if (hasExited) break;
      await new Promise((resolve) => setTimeout(resolve, 25)); // poll interval of a bounded loop
    }
    return hasExited ? 'exited' : 'timeout';
  } finally {
    child.off('exit', onExit);
  }
}

function probeBanner(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    let received = '';
    const finish = (isReady: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(isReady);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('error', () => finish(false));
    socket.on('close', () => finish(false));
    socket.setEncoding('latin1').on('data', (text: string) => {
      received += text;
      if (received.startsWith('SSH-2.0-')) finish(true);
      else if (received.length >= 8) finish(false);
    });
  });
}

/** SIGTERM to sshd's session processes and sshd, SIGKILL after a bound; resolves when sshd has exited. */
async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (const pid of await childPids(child.pid)) signal(pid, 'SIGTERM');
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS)));
  const outcome = await Promise.race([exited, timedOut]);
  clearTimeout(timer);
  if (outcome === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Processes whose parent is `pid` (sshd's per-connection processes), read from /proc. */
async function childPids(pid: number): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) found.push(Number(entry));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  return found;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
