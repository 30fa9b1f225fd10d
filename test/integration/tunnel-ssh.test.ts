/**
 * Real OpenSSH through the tunnel: ssh and scp on this machine, `portway pipe` as their ProxyCommand, the
 * relay and the agent as real processes, and a throwaway sshd (own host key, own authorized key) as the
 * device's "ssh" service. Checks command output, a 64 MiB scp round trip (SHA-256 of all three copies),
 * EOF propagation (`cat > FILE` fed a file on stdin) and a service that answers only after EOF.
 * After each session, every stream the relay paired must be closed at the relay and at the agent with
 * outcome `complete` (ssh sends its ProxyCommand SIGHUP as it exits; `portway pipe` must still close cleanly).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Sshd } from '../../devtools';
import { PORTWAY_BIN, type PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, runProcess, startCluster, startSshd, waitFor, type ProcessResult } from '../helpers';

const DEVICE = 'pi1';
const SCP_BYTES = 64 * 1024 * 1024;
const CAT_BYTES = 8 * 1024 * 1024;
const DIGEST_INPUT_BYTES = 5 * 1024 * 1024;
const SSH_TIMEOUT_MS = 30_000;
const SCP_TIMEOUT_MS = 60_000;
const LOG_TIMEOUT_MS = 15_000;

jest.setTimeout(120_000);

/** Single-quote for /bin/sh (ssh runs the ProxyCommand through the user's shell). */
function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The sshd helper's client options in `-o Key=Value` form, which ssh and scp both read the same way. */
function optionForm(sshOptions: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < sshOptions.length; i += 2) {
    const flag = sshOptions[i];
    const value = sshOptions[i + 1] as string;
    if (flag === '-p') out.push('-o', `Port=${value}`);
    else if (flag === '-l') out.push('-o', `User=${value}`);
    else if (flag === '-i') out.push('-o', `IdentityFile=${value}`);
    else if (flag === '-F' || flag === '-o') out.push(flag, value);
    else throw new Error(`unexpected ssh option ${String(flag)}`);
  }
  return out;
}

interface SshTunnel {
  readonly cluster: PortwayCluster;
  readonly sshd: Sshd;
  ssh(command: string, input?: Buffer, timeoutMs?: number): Promise<ProcessResult>;
  scp(from: string, to: string): Promise<ProcessResult>;
}

describe('OpenSSH through the tunnel', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  async function startTunnel(): Promise<SshTunnel> {
    const sshd = await startSshd(disposer);
    const cluster = await startCluster(disposer, { services: [{ name: 'ssh', type: 'tcp', target: `${sshd.host}:${sshd.port}` }] });
    const proxyCommand = [process.execPath, PORTWAY_BIN, 'pipe', DEVICE, 'ssh'].map(shellQuote).join(' ');
    const options = [...optionForm(sshd.sshOptions()), '-o', `ProxyCommand=${proxyCommand}`];
    // The ProxyCommand inherits ssh's environment: XDG_CONFIG_HOME points it at the cluster's client config.
    const env = cluster.env;
    const ssh = (command: string, input?: Buffer, timeoutMs = SSH_TIMEOUT_MS): Promise<ProcessResult> =>
      runProcess(disposer, 'ssh', [...options, DEVICE, command], { env, input, timeoutMs });
    const scp = (from: string, to: string): Promise<ProcessResult> => runProcess(disposer, 'scp', ['-q', ...options, from, to], { env, timeoutMs: SCP_TIMEOUT_MS });
    return { cluster, sshd, ssh, scp };
  }

  function expectSuccess(result: ProcessResult, what: string): void {
    if (result.code !== 0) throw new Error(`${what} exited ${String(result.code)} (${String(result.signal)}): ${result.stderr.slice(-2000)}`);
  }

  /**
   * Every stream the relay paired was closed, at the relay and at the agent, with outcome `complete` (an
   * orderly close both ways, not a cut): no leftovers. Each ssh/scp run opens exactly one stream.
   */
  async function expectAllStreamsClosed(cluster: PortwayCluster, expectedStreams: number): Promise<void> {
    const relay = cluster.relay!;
    const agent = cluster.agent!;
    await waitFor(() => relay.events('relay.stream.opened').length >= expectedStreams, { timeoutMs: LOG_TIMEOUT_MS, description: 'relay.stream.opened' });
    const opened = relay.events('relay.stream.opened').map((e) => e.streamId as string);
    expect(opened).toHaveLength(expectedStreams);
    await waitFor(() => relay.events('relay.stream.closed').length >= expectedStreams && agent.events('agent.stream.closed').length >= expectedStreams, {
      timeoutMs: LOG_TIMEOUT_MS,
      description: `${expectedStreams} relay.stream.closed and agent.stream.closed`,
    });
    const closed = (events: Record<string, unknown>[]): { streamId: unknown; outcome: unknown; reason?: unknown }[] =>
      events.map((e) => ({ streamId: e.streamId, outcome: e.outcome, ...(e.reason === undefined ? {} : { reason: e.reason }) })).sort((a, b) => String(a.streamId).localeCompare(String(b.streamId)));
    const complete = [...opened].sort().map((streamId) => ({ streamId, outcome: 'complete' }));
    expect(closed(relay.events('relay.stream.closed'))).toEqual(complete);
    expect(closed(agent.events('agent.stream.closed'))).toEqual(complete);
  }

  it('runs a remote command and returns its output', async () => {
    const tunnel = await startTunnel();
    const result = await tunnel.ssh('printf "%s\\n" "portway-ssh-$((6 * 7))"; id -un');
    expectSuccess(result, 'ssh');
    expect(result.stdout).toBe(`portway-ssh-42\n${tunnel.sshd.user}\n`);
    // The test's own sshd took the login (its key, its authorized_keys), through the one stream checked below.
    expect(tunnel.sshd.logs()).toMatch(/Accepted publickey for /);
    await expectAllStreamsClosed(tunnel.cluster, 1);
  });

  it('scp copies a 64 MiB random file to the device and back intact', async () => {
    const tunnel = await startTunnel();
    const local = await makeTempDir(disposer, 'portway-scp-local-');
    const remote = await makeTempDir(disposer, 'portway-scp-remote-');
    const original = path.join(local, 'original.bin');
    const onDevice = path.join(remote, 'on-device.bin');
    const back = path.join(local, 'back.bin');
    const data = randomBytes(SCP_BYTES);
    const originalSha = sha256(data);
    await fs.writeFile(original, data);

    expectSuccess(await tunnel.scp(original, `${DEVICE}:${onDevice}`), 'scp upload');
    expectSuccess(await tunnel.scp(`${DEVICE}:${onDevice}`, back), 'scp download');

    expect((await fs.stat(onDevice)).size).toBe(SCP_BYTES);
    expect((await fs.stat(back)).size).toBe(SCP_BYTES);
    expect(await sha256File(original)).toBe(originalSha);
    expect(await sha256File(onDevice)).toBe(originalSha);
    expect(await sha256File(back)).toBe(originalSha);
    await expectAllStreamsClosed(tunnel.cluster, 2);
    // The relay counts what it spliced: the upload's stream carried the file up, the download's down, each
    // as inner-TLS ciphertext (a little more than the file), and little the other way.
    const [up, down] = tunnel.cluster.relay!.events('relay.stream.closed').map((e) => ({ up: e.bytesUp as number, down: e.bytesDown as number }));
    expect(up!.up).toBeGreaterThan(SCP_BYTES);
    expect(up!.up).toBeLessThan(SCP_BYTES * 1.05);
    expect(up!.down).toBeLessThan(SCP_BYTES / 16);
    expect(down!.down).toBeGreaterThan(SCP_BYTES);
    expect(down!.down).toBeLessThan(SCP_BYTES * 1.05);
    expect(down!.up).toBeLessThan(SCP_BYTES / 16);
  });

  it("propagates EOF: `cat > FILE` fed a file on stdin writes the complete file", async () => {
    const tunnel = await startTunnel();
    const remote = await makeTempDir(disposer, 'portway-ssh-cat-');
    const target = path.join(remote, 'from-stdin.bin');
    const data = randomBytes(CAT_BYTES);

    // cat exits only on EOF, and ssh only after the remote command exited: the file is complete on return.
    const result = await tunnel.ssh(`cat > ${shellQuote(target)}`, data);
    expectSuccess(result, 'ssh cat');
    expect((await fs.stat(target)).size).toBe(CAT_BYTES);
    expect(await sha256File(target)).toBe(sha256(data));
    await expectAllStreamsClosed(tunnel.cluster, 1);
  });

  it('a remote command that answers only after EOF (sha256sum of stdin) returns its answer', async () => {
    const tunnel = await startTunnel();
    const data = randomBytes(DIGEST_INPUT_BYTES);
    const result = await tunnel.ssh('sha256sum', data);
    expectSuccess(result, 'ssh sha256sum');
    expect(result.stdout).toBe(`${sha256(data)}  -\n`);
    await expectAllStreamsClosed(tunnel.cluster, 1);
  });
});
