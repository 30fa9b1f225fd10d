/**
 * The `ssh -J` baseline: a "relay" sshd and a "device" sshd on loopback (devtools/sshd: own host keys,
 * client keys and known_hosts), and an ssh_config naming them `bench-relay` and `bench-device`.
 *
 * Why a config file and not `-F /dev/null` with options: ProxyJump starts the jump-host ssh with only -F
 * (and -v/-4/-6) passed down, so identities and known_hosts given as options would not reach the first
 * hop. The file holds exactly what the options would (key, pinned known_hosts, no agent, batch mode,
 * AES-128-GCM) for both hosts, so the outer and the inner session are configured the same way.
 */
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { findFreePort, startSshd, type Sshd } from '../devtools';
import { type Teardown, type TrackedChild, spawnTracked } from './teardown';

export const SSH_CIPHER = 'aes128-gcm@openssh.com';
const TUNNEL_READY_TIMEOUT_MS = 15_000;
const MAX_TUNNEL_ATTEMPTS = 3;

export interface SshPair {
  readonly relay: Sshd;
  readonly device: Sshd;
}

export async function startSshPair(teardown: Teardown): Promise<SshPair> {
  const relay = await startSshd();
  teardown.add('sshd relay', () => relay.stop());
  const device = await startSshd();
  teardown.add('sshd device', () => device.stop());
  return { relay, device };
}

/** Write an ssh_config for the pair; `ports` overrides where each host is reached (delay links). */
export async function writeSshConfig(file: string, pair: SshPair, ports: { relay?: number; device?: number } = {}): Promise<string> {
  const host = (name: string, sshd: Sshd, port: number): string[] => [
    `Host ${name}`,
    '  HostName 127.0.0.1',
    `  Port ${port}`,
    `  User ${sshd.user}`,
    `  IdentityFile ${sshd.clientKeyPath}`,
    `  UserKnownHostsFile ${sshd.knownHostsPath}`,
    `  HostKeyAlias portway-test-sshd`,
  ];
  const text = [
    ...host('bench-relay', pair.relay, ports.relay ?? pair.relay.port),
    ...host('bench-device', pair.device, ports.device ?? pair.device.port),
    'Host *',
    '  IdentitiesOnly yes',
    '  GlobalKnownHostsFile /dev/null',
    '  StrictHostKeyChecking yes',
    '  BatchMode yes',
    '  LogLevel ERROR',
    `  Ciphers ${SSH_CIPHER}`,
    '  ControlMaster no',
    '  ControlPath none',
    '  ConnectTimeout 10',
    '  ServerAliveInterval 5',
    '  ServerAliveCountMax 3',
    '  ForwardAgent no',
    '',
  ].join('\n');
  await writeFile(file, text, { mode: 0o600 });
  return file;
}

export interface SshTunnel {
  readonly proc: TrackedChild;
  /** Local port for each remote port, in the order given. */
  readonly localPorts: readonly number[];
  stop(): Promise<void>;
}

/** One round trip through `port` to an echo server: resolves true when the byte came back. */
function echoOnce(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
    socket.once('data', () => done(true));
    socket.write('x');
  });
}

/**
 * `ssh -F cfg -c aes128-gcm -J bench-relay -N -L l1:127.0.0.1:r1 ... bench-device`. Ready when an echo
 * round trip works through the forward at `echoIndex` (all -L listeners are bound by then).
 */
export async function openSshTunnel(teardown: Teardown, configFile: string, remotePorts: readonly number[], echoIndex: number): Promise<SshTunnel> {
  let lastError = '';
  for (let attempt = 0; attempt < MAX_TUNNEL_ATTEMPTS; attempt++) {
    const localPorts: number[] = [];
    for (let i = 0; i < remotePorts.length; i++) localPorts.push(await findFreePort());
    const forwards = remotePorts.flatMap((r, i) => ['-L', `127.0.0.1:${localPorts[i] as number}:127.0.0.1:${r}`]);
    const proc = spawnTracked(teardown, 'ssh', ['-F', configFile, '-c', SSH_CIPHER, '-J', 'bench-relay', '-N', '-o', 'ExitOnForwardFailure=yes', ...forwards, 'bench-device']);
    const echoPort = localPorts[echoIndex] as number;
    const deadline = Date.now() + TUNNEL_READY_TIMEOUT_MS;
    while (Date.now() < deadline && proc.child.exitCode === null && proc.child.signalCode === null) {
      if (await echoOnce(echoPort, 2_000)) return { proc, localPorts, stop: () => proc.stop() };
      await new Promise((r) => setTimeout(r, 50)); // poll interval of a bounded wait
    }
    lastError = proc.stderr().trim().slice(-500);
    await proc.stop();
  }
  throw new Error(`ssh -J tunnel did not come up: ${lastError}`);
}

export function sshConfigPath(dir: string, name: string): string {
  return path.join(dir, `ssh_config.${name}`);
}
