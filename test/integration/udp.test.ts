/**
 * UDP services through the tunnel with real programs: dig against a real dnsmasq on the device side (100
 * clients at once), datagrams of every size from 0 to 65,507 bytes through a UDP echo service, 1,000 short
 * sessions, session eviction at the forward proxy, transport mismatches refused with their code, and
 * iperf3 -u at a fixed rate reporting loss and jitter.
 *
 * Session counts come from the agent's JSON lines (`agent.stream.opened` / `agent.stream.closed` with
 * `transport: 'udp'` and `udpSessions`, the agent's open UDP sessions) and from the `udp stats` line
 * `portway connect --udp` prints when it stops. One cluster serves every test; each test counts only
 * the sessions of its own service.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { pseudoRandomBytes } from '../../devtools';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { connectTcp, Disposer, findFreePort, runProcess, startCluster, startEchoServer, waitFor } from '../helpers';
import { startDnsmasq } from '../helpers/dnsmasq';
import { findFreeUdpPorts, startUdpEchoServer, UdpClient } from '../helpers/udp';

jest.setTimeout(120_000);

const DIG_CLIENTS = 100;
const SHORT_SESSIONS = 1000;
const SHORT_SESSION_CONCURRENCY = 40;
/**
 * The agent's idle timeouts for the test services; the forward proxies set their own (see each test), and
 * whichever side's is shorter ends the sessions. An idle timeout shorter than a round trip under load
 * would end a session before its reply came back, so none is below a second.
 */
const DNS_AGENT_IDLE_MS = 1_000;
const ECHO_AGENT_IDLE_MS = 10_000;
const IO_TIMEOUT_MS = 15_000;
const LOG_TIMEOUT_MS = 30_000;
const MAX_DATAGRAM = 65_507;
const IPERF_RATE = '20M';
const IPERF_SECONDS = 5;
/** Generous: loss through a loaded 2-core loopback tunnel is normally 0; this only catches a broken path. */
const IPERF_MAX_LOSS_PERCENT = 10;

const hostName = (i: number): string => `host-${i}.portway.test`;
const hostIp = (i: number): string => `10.77.${Math.floor(i / 250)}.${(i % 250) + 1}`;

interface UdpStats {
  sessions: number;
  opened: number;
  closed: number;
  evicted: number;
  failed: number;
  rejected: number;
  datagramsIn: number;
  datagramsOut: number;
  dropped: Record<string, number>;
}

/** Stop a `portway connect --udp` and parse the stats line it prints. */
async function stopUdpProxy(proc: ManagedProcess): Promise<UdpStats> {
  const code = await proc.stop('SIGTERM');
  expect(code).toBe(0);
  const line = proc.lines.find((l) => l.startsWith('udp stats '));
  if (!line) throw new Error(`no udp stats line; stderr: ${proc.stderr.slice(-500)}`);
  return JSON.parse(line.slice('udp stats '.length)) as UdpStats;
}

/** The agent's UDP stream lines for one service. */
function udpEvents(cluster: PortwayCluster, event: 'agent.stream.opened' | 'agent.stream.closed', service: string): Record<string, unknown>[] {
  return cluster.agent!.events(event).filter((e) => e.transport === 'udp' && e.service === service);
}

/** Wait until every UDP session of `service` the agent opened is closed and the agent holds none at all. */
async function expectSessionsDrained(cluster: PortwayCluster, service: string, opened: number): Promise<Record<string, unknown>[]> {
  await waitFor(() => udpEvents(cluster, 'agent.stream.opened', service).length >= opened, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 200, description: `${opened} udp sessions opened` });
  await waitFor(() => udpEvents(cluster, 'agent.stream.closed', service).length >= opened, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 200, description: `${opened} udp sessions closed` });
  const closed = udpEvents(cluster, 'agent.stream.closed', service);
  expect(udpEvents(cluster, 'agent.stream.opened', service)).toHaveLength(opened);
  expect(closed).toHaveLength(opened);
  const all = cluster.agent!.events('agent.stream.closed').filter((e) => e.transport === 'udp');
  expect(all[all.length - 1]?.udpSessions).toBe(0);
  return closed;
}

/** Open file descriptors of a process (sockets included), for leak checks. */
async function fdCount(pid: number | undefined): Promise<number> {
  return (await fs.readdir(`/proc/${String(pid)}/fd`)).length;
}

async function inParallel<T>(count: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) results[i] = await task(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, () => worker()));
  return results;
}

describe('UDP services', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;
  let iperfPort: number;

  beforeAll(async () => {
    const hosts = Object.fromEntries(Array.from({ length: DIG_CLIENTS }, (_, i) => [hostName(i), hostIp(i)]));
    const dns = await startDnsmasq(suite, hosts);
    const echo = await startUdpEchoServer(suite);
    const tcpEcho = await startEchoServer(suite);
    iperfPort = await findFreePort();
    cluster = await startCluster(suite, {
      services: [
        { name: 'dns', type: 'udp', target: `127.0.0.1:${dns.port}`, idleTimeoutMs: DNS_AGENT_IDLE_MS },
        { name: 'echo', type: 'udp', target: `127.0.0.1:${echo.port}`, idleTimeoutMs: ECHO_AGENT_IDLE_MS },
        { name: 'iperf', type: 'udp', target: `127.0.0.1:${iperfPort}` },
        { name: 'iperf-ctl', type: 'tcp', target: `127.0.0.1:${iperfPort}` },
        { name: 'tcp-echo', type: 'tcp', target: `127.0.0.1:${tcpEcho.port}` },
      ],
      // Production timers: 100 streams opening at once on a 2-core machine take longer than the fast
      // profile's bounds (see tunnel-http.test.ts). maxStreams: idle UDP sessions hold a stream each.
      agentTimers: {},
      relayConfig: {},
      agentConfig: { maxStreams: 2048 },
    });
  });
  afterEach(() => disposer.run());
  afterAll(() => suite.run());

  it(`dig reaches a real dnsmasq through the tunnel, ${DIG_CLIENTS} clients at once; sessions return to zero after the idle timeout`, async () => {
    // The proxy's idle timeout is longer than the agent's, so the agent's ends every session.
    const { port, proc } = await cluster.connectUdp('dns', ['--idle-timeout', '30000']);
    // One source port each (dig's own random pick can repeat the port of a dig that already finished, and
    // the proxy would then carry both in one session).
    const sourcePorts = await findFreeUdpPorts(DIG_CLIENTS);
    const answers = await Promise.all(
      sourcePorts.map((sourcePort, i) =>
        runProcess(disposer, 'dig', ['@127.0.0.1', '-p', String(port), '-b', `127.0.0.1#${sourcePort}`, hostName(i), 'A', '+short', '+time=20', '+tries=1'], { timeoutMs: 30_000 }),
      ),
    );
    answers.forEach((result, i) => {
      expect({ i, code: result.code, answer: result.stdout.trim() }).toEqual({ i, code: 0, answer: hostIp(i) });
    });
    const closed = await expectSessionsDrained(cluster, 'dns', DIG_CLIENTS);
    expect(closed.map((e) => e.closeReason)).toEqual(new Array(DIG_CLIENTS).fill('idle'));
    expect(closed.map((e) => e.outcome)).toEqual(new Array(DIG_CLIENTS).fill('complete'));
    const stats = await stopUdpProxy(proc);
    console.log(`dig x${DIG_CLIENTS}: proxy ${JSON.stringify(stats)}`);
    expect(stats).toMatchObject({ sessions: 0, opened: DIG_CLIENTS, closed: DIG_CLIENTS, evicted: 0, failed: 0, rejected: 0, datagramsIn: DIG_CLIENTS, datagramsOut: DIG_CLIENTS });
  });

  it('a datagram of every size from 0 to 65,507 bytes round-trips intact through a UDP echo service', async () => {
    const { port, proc } = await cluster.connectUdp('echo', ['--idle-timeout', '30000']);
    const sizes = [...Array.from({ length: 65 }, (_, i) => i), ...Array.from({ length: 65 }, (_, i) => (i + 1) * 1000), 65_500, MAX_DATAGRAM - 1, MAX_DATAGRAM];
    const client = await UdpClient.open(disposer);
    for (const size of sizes) {
      const payload = pseudoRandomBytes(`size ${size}`, size);
      const reply = await client.exchange(port, payload, IO_TIMEOUT_MS);
      expect({ size, length: reply.length, isIntact: reply.equals(payload) }).toEqual({ size, length: size, isIntact: true });
    }
    const stats = await stopUdpProxy(proc);
    expect(stats).toMatchObject({ opened: 1, failed: 0, datagramsIn: sizes.length, datagramsOut: sizes.length });
    expect(Object.values(stats.dropped).every((n) => n === 0)).toBe(true);
  });

  it(`${SHORT_SESSIONS} short sessions leave no leak (sessions, file descriptors)`, async () => {
    // The proxy's idle timeout is the shorter one here, so its side ends the sessions ('peer' at the agent).
    const { port, proc } = await cluster.connectUdp('echo', ['--idle-timeout', '1500']);
    const before = udpEvents(cluster, 'agent.stream.opened', 'echo').length;
    const agentFdsBefore = await fdCount(cluster.agent!.child.pid);
    // Each client keeps its socket (its source port) until all are done: a port the kernel handed out
    // again while the proxy still held its session would join that session instead of opening one.
    const clients: UdpClient[] = [];
    disposer.add(() => clients.forEach((c) => c.close()), 'close short-session clients');
    await inParallel(SHORT_SESSIONS, SHORT_SESSION_CONCURRENCY, async (i) => {
      const client = await UdpClient.open(undefined);
      clients.push(client);
      const payload = Buffer.from(`session ${i}`);
      expect((await client.exchange(port, payload, IO_TIMEOUT_MS)).equals(payload)).toBe(true);
    });
    clients.forEach((c) => c.close());
    const closed = (await expectSessionsDrained(cluster, 'echo', before + SHORT_SESSIONS)).slice(before);
    expect(closed.filter((e) => e.outcome !== 'complete')).toEqual([]);
    expect(new Set(closed.map((e) => e.closeReason))).toEqual(new Set(['peer']));
    const agentFdsAfter = await fdCount(cluster.agent!.child.pid);
    const proxyFds = await fdCount(proc.child.pid);
    const stats = await stopUdpProxy(proc);
    console.log(`${SHORT_SESSIONS} sessions: agent fds ${agentFdsBefore} -> ${agentFdsAfter}, proxy fds ${proxyFds}, proxy ${JSON.stringify(stats)}`);
    // Pooled and primed relay sockets come and go; a leak would be one per session.
    expect(agentFdsAfter).toBeLessThan(agentFdsBefore + 20);
    expect(proxyFds).toBeLessThan(60);
    expect(stats).toMatchObject({ sessions: 0, opened: SHORT_SESSIONS, closed: SHORT_SESSIONS, evicted: 0, failed: 0 });
  });

  it('the forward proxy caps its sessions, evicting the one idle the longest, and counts evictions', async () => {
    const cap = 10;
    const clients = 30;
    const { port, proc } = await cluster.connectUdp('echo', ['--max-sessions', String(cap), '--idle-timeout', '60000']);
    const before = udpEvents(cluster, 'agent.stream.opened', 'echo').length;
    for (let i = 0; i < clients; i++) {
      const client = await UdpClient.open(disposer);
      const payload = Buffer.from(`client ${i}`);
      expect((await client.exchange(port, payload, IO_TIMEOUT_MS)).equals(payload)).toBe(true);
    }
    // Evicted sessions close at once; the cap's worth stay open until the proxy stops.
    await waitFor(() => udpEvents(cluster, 'agent.stream.closed', 'echo').length - before >= clients - cap, { timeoutMs: LOG_TIMEOUT_MS, intervalMs: 200, description: 'evicted sessions closed' });
    const stats = await stopUdpProxy(proc);
    expect(stats).toMatchObject({ opened: clients, closed: clients, evicted: clients - cap, failed: 0, rejected: 0 });
    await expectSessionsDrained(cluster, 'echo', before + clients);
  });

  it('refuses a transport mismatch with PW_SERVICE_TYPE_MISMATCH, at the agent and at the start of connect --udp', async () => {
    // TCP stream to a UDP service: the agent refuses it end to end.
    const { port, proc } = await cluster.connect('echo');
    const socket = await connectTcp(disposer, { host: '127.0.0.1', port });
    socket.write('hello');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await waitFor(() => proc.stderr.includes('PW_SERVICE_TYPE_MISMATCH'), { timeoutMs: IO_TIMEOUT_MS, description: 'mismatch reported by connect' });
    const refused = cluster.agent!.events('agent.stream.refused').filter((e) => e.service === 'echo');
    expect(refused.map((e) => e.code)).toContain('PW_SERVICE_TYPE_MISMATCH');
    await proc.stop();
    // UDP to a TCP service: connect --udp fails before listening.
    const result = await cluster.runCli(['connect', cluster.deviceName, 'tcp-echo', '--udp'], { timeoutMs: 30_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^portway: PW_SERVICE_TYPE_MISMATCH: .*tcp-echo.*tcp/);
  });

  it(`iperf3 -u at ${IPERF_RATE}bit/s for ${IPERF_SECONDS} s through the tunnel reports loss and jitter`, async () => {
    const iperf = await startIperfServer(disposer, iperfPort);
    // iperf3 uses the same port number for its TCP control connection and its UDP data.
    const local = await findFreePort();
    const ctl = cluster.spawnCli(['connect', cluster.deviceName, 'iperf-ctl', '-L', `127.0.0.1:${local}`]);
    disposer.add(() => ctl.stop(), 'stop iperf-ctl proxy');
    await ctl.waitForLine((l) => l.startsWith('listening on '), 30_000, 'iperf-ctl proxy');
    const data = await cluster.connectUdp('iperf', ['-L', `127.0.0.1:${local}`]);
    disposer.add(() => data.proc.stop(), 'stop iperf proxy');
    const run = await runProcess(disposer, 'iperf3', ['-c', '127.0.0.1', '-p', String(local), '-u', '-b', IPERF_RATE, '-t', String(IPERF_SECONDS), '-l', '1200', '-J'], { timeoutMs: 60_000 });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    const report = JSON.parse(run.stdout) as { end: { sum: { jitter_ms: number; lost_packets: number; packets: number; lost_percent: number; bits_per_second: number } } };
    const sum = report.end.sum;
    console.log(`iperf3 -u ${IPERF_RATE} ${IPERF_SECONDS}s through the tunnel: ${sum.packets} packets, lost ${sum.lost_packets} (${sum.lost_percent.toFixed(3)} %), jitter ${sum.jitter_ms.toFixed(3)} ms, ${(sum.bits_per_second / 1e6).toFixed(2)} Mbit/s`);
    expect(sum.packets).toBeGreaterThan(0);
    expect(sum.lost_percent).toBeLessThan(IPERF_MAX_LOSS_PERCENT);
    expect(await iperf.exited).toBe(0);
    // Where datagrams were dropped, if any: at the proxy and the agent, by reason (the kernel's own socket
    // drops show in neither; the tunnel itself is lossless).
    const proxy = await stopUdpProxy(data.proc);
    const [agent] = (await expectSessionsDrained(cluster, 'iperf', 1));
    console.log(`iperf3 session drops: proxy ${JSON.stringify(proxy.dropped)} (in ${proxy.datagramsIn}, out ${proxy.datagramsOut}); agent ${JSON.stringify(agent?.dropped)} (in ${String(agent?.datagramsIn)}, out ${String(agent?.datagramsOut)})`);
  });
});

/** `iperf3 -s -1` on 127.0.0.1:`port`, once it listens (a probe connection would be its one test). */
async function startIperfServer(disposer: Disposer, port: number): Promise<{ exited: Promise<number | null> }> {
  const child = spawn('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', String(port), '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  disposer.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }, 'stop iperf3 server');
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`iperf3 server did not listen: ${output}`)), 10_000);
    const onData = (text: string): void => {
      output += text;
      if (!output.includes('Server listening')) return;
      clearTimeout(timer);
      resolve();
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server exited: ${output}`));
    });
  });
  return { exited };
}
