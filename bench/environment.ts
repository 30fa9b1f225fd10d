/**
 * The shared setup of one benchmark run, created on first use so `--only` starts only what it needs:
 *   - an echo server (in this process) and an iperf3 server on 127.0.0.1;
 *   - the ssh -J pair (relay sshd, device sshd) and one warm tunnel forwarding to iperf3 and echo;
 *   - a Portway cluster (relay, agent, logged-in client; production timers) whose agent exposes
 *     `iperf`, `echo` and `ssh` (the device sshd), and `portway connect` processes per service.
 * Every part registers its stop on the run's Teardown.
 */
import { makeTempDir, PortwayCluster, relayUnitNodeArgs, unitEnvironment, startEchoServer, type EchoServer, type ManagedProcess } from '../devtools';
import { type IperfServer, startIperfServer } from './iperf';
import { openSshTunnel, sshConfigPath, startSshPair, type SshPair, type SshTunnel, writeSshConfig } from './ssh-jump';
import type { Teardown } from './teardown';

export const DEVICE_NAME = 'pi1';

export class BenchEnvironment {
  private dirPath: string | undefined;
  private echoServer: EchoServer | undefined;
  private iperfServer: IperfServer | undefined;
  private sshPair: SshPair | undefined;
  private tunnel: SshTunnel | undefined;
  private portway: PortwayCluster | undefined;
  private readonly connects = new Map<string, { port: number; proc: ManagedProcess }>();

  constructor(private readonly teardown: Teardown) {}

  async dir(): Promise<string> {
    if (this.dirPath === undefined) {
      const tmp = await makeTempDir('portway-bench-');
      this.teardown.add('scratch dir', () => tmp.remove());
      this.dirPath = tmp.path;
    }
    return this.dirPath;
  }

  async echo(): Promise<EchoServer> {
    if (!this.echoServer) {
      const echo = await startEchoServer();
      this.teardown.add('echo server', () => echo.stop());
      this.echoServer = echo;
    }
    return this.echoServer;
  }

  async iperf(): Promise<IperfServer> {
    this.iperfServer ??= await startIperfServer(this.teardown);
    return this.iperfServer;
  }

  async ssh(): Promise<SshPair> {
    this.sshPair ??= await startSshPair(this.teardown);
    return this.sshPair;
  }

  /** The warm `ssh -J` tunnel: localPorts[0] -> iperf3, localPorts[1] -> echo. */
  async sshTunnel(): Promise<SshTunnel> {
    if (!this.tunnel) {
      const [pair, iperf, echo, dir] = [await this.ssh(), await this.iperf(), await this.echo(), await this.dir()];
      const config = await writeSshConfig(sshConfigPath(dir, 'loopback'), pair);
      this.tunnel = await openSshTunnel(this.teardown, config, [iperf.port, echo.port], 1);
    }
    return this.tunnel;
  }

  async sshConfig(): Promise<string> {
    return writeSshConfig(sshConfigPath(await this.dir(), 'loopback'), await this.ssh());
  }

  async cluster(): Promise<PortwayCluster> {
    if (!this.portway) {
      const [pair, iperf, echo, dir] = [await this.ssh(), await this.iperf(), await this.echo(), await this.dir()];
      const cluster = await PortwayCluster.start({
        dir: `${dir}/cluster`,
        deviceName: DEVICE_NAME,
        relayNodeArgs: relayUnitNodeArgs(),
        relayEnv: unitEnvironment('portway-relay.service'),
        services: [
          { name: 'iperf', type: 'tcp', target: `127.0.0.1:${iperf.port}` },
          { name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` },
          { name: 'ssh', type: 'tcp', target: `127.0.0.1:${pair.device.port}` },
        ],
      }).catch((err: unknown) => {
        throw new Error(`Portway cluster did not start: ${(err as Error).message}`, { cause: err });
      });
      this.teardown.add('portway cluster', () => cluster.stop());
      this.portway = cluster;
    }
    return this.portway;
  }

  /** A `portway connect pi1 SERVICE` process (one per service), started on first use. */
  async connect(service: string): Promise<{ port: number; proc: ManagedProcess }> {
    let c = this.connects.get(service);
    if (!c) {
      const cluster = await this.cluster();
      c = await cluster.connect(service, DEVICE_NAME);
      this.connects.set(service, c);
    }
    return c;
  }

  /** Warn/error log lines (JSON, level >= 40) and stderr tails of the Portway processes, for failed runs. */
  portwayDiagnostics(maxLines = 20): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    const pick = (name: string, proc: ManagedProcess | undefined): void => {
      if (!proc) return;
      const lines = proc.lines.filter((l) => /"level":(40|50|60)/.test(l)).slice(-maxLines);
      const stderr = proc.stderr.trim().split('\n').filter(Boolean).slice(-maxLines);
      if (lines.length || stderr.length) out[name] = [...lines, ...stderr];
    };
    pick('relay', this.portway?.relay);
    pick('agent', this.portway?.agent);
    for (const [service, c] of this.connects) pick(`connect ${service}`, c.proc);
    return out;
  }

  /** Stop the `portway connect` processes (before the cluster is re-pointed at delay links). */
  async stopConnects(): Promise<void> {
    await Promise.all([...this.connects.values()].map((c) => c.proc.stop('SIGTERM', 5_000)));
    this.connects.clear();
  }
}
