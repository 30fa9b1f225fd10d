/**
 * UDP session storm (issue 6, docs/reliability.md "Leaks"): 10,000 source ports, one datagram each, sent within
 * a few seconds to `portway connect --udp` for a UDP echo service. The forward proxy holds at most
 * --max-sessions live sessions (a new address evicts the one idle the longest; with live and closing sessions
 * both at the cap, a datagram from a new address is dropped and counted); the agent holds at most
 * maxUdpSessions (beyond that it refuses the stream, PW_LIMIT_REACHED). Checked: the agent's
 * `portway_agent_udp_sessions` (sampled every 100 ms) never exceeds maxUdpSessions; the proxy's counts add up
 * and its live sessions end at zero; both drain to zero after the idle timeout; a new client works afterwards
 * (one datagram a second from fresh addresses: while the proxy's closing sessions are at their cap, a new
 * address is dropped, as UDP may). The kernel drops most of the 10,000 datagrams at the proxy's socket (its
 * receive buffer): the proxy counts what it read (opened + rejected). Found and fixed with this test: the
 * forward proxy died of SIGSEGV in about half the runs (e2e-pump's abort reset the TCP socket under the inner
 * TLS session before destroying it; now the TLS session goes first).
 * PORTWAY_UDP_STORM_PORTS sets the number of source ports (default 10,000).
 */
import dgram from 'node:dgram';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, startCluster, waitFor } from '../helpers';
import { AGENT_METRICS_CONFIG, sample, scrape, startAgentWithMetrics } from '../helpers/reliability';
import { startUdpEchoServer, UdpClient } from '../helpers/udp';

const PORTS = Number(process.env.PORTWAY_UDP_STORM_PORTS ?? 10_000);
const AGENT_MAX_UDP = 32;
const PROXY_MAX_SESSIONS = 64;
const AGENT_IDLE_MS = 2_000;
const PROXY_IDLE_MS = 3_000;
const BATCH = 250;

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

/** Send one datagram from each of `count` fresh sockets (distinct source ports), `BATCH` sockets at a time. */
async function sprayFromPorts(port: number, count: number): Promise<void> {
  for (let sent = 0; sent < count; sent += BATCH) {
    const n = Math.min(BATCH, count - sent);
    await Promise.all(
      Array.from({ length: n }, (_, k) => new Promise<void>((resolve) => {
        const socket = dgram.createSocket('udp4');
        socket.on('error', () => undefined); // ICMP port unreachable for a late reply is fine
        socket.bind(0, '127.0.0.1', () => {
          socket.send(Buffer.from(`port ${sent + k}`), port, '127.0.0.1', () => {
            socket.close();
            resolve();
          });
        });
      })),
    );
  }
}

describe('UDP session storm', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let metricsPort: number;

  beforeAll(async () => {
    if (!Number.isInteger(PORTS) || PORTS < 1 || PORTS > 60_000) throw new RangeError('PORTWAY_UDP_STORM_PORTS must be 1-60000');
    const echo = await startUdpEchoServer(suite);
    cluster = await startCluster(suite, { services: [{ name: 'echo', type: 'udp', target: `127.0.0.1:${echo.port}`, idleTimeoutMs: AGENT_IDLE_MS }] });
    await (cluster.agent as ManagedProcess).stop();
    await cluster.writeAgentConfig({ ...AGENT_METRICS_CONFIG, maxUdpSessions: AGENT_MAX_UDP });
    metricsPort = (await startAgentWithMetrics(cluster)).metricsPort;
  }, 90_000);
  afterAll(() => suite.run(), 30_000);

  it(`${PORTS} source ports: sessions stay under the caps (agent ${AGENT_MAX_UDP}, proxy ${PROXY_MAX_SESSIONS}) and drain to zero after the idle timeout`, async () => {
    const { port, proc } = await cluster.connectUdp('echo', ['--max-sessions', String(PROXY_MAX_SESSIONS), '--idle-timeout', String(PROXY_IDLE_MS)]);
    suite.add(() => proc.stop(), 'stop udp proxy');
    let agentMax = 0;
    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        agentMax = Math.max(agentMax, sample(await scrape(metricsPort), 'portway_agent_udp_sessions'));
        samples++;
        await new Promise((r) => setTimeout(r, 100)); // sampling interval
      }
    })();
    const started = Date.now();
    await sprayFromPorts(port, PORTS);
    const sprayMs = Date.now() - started;
    const lastSentAt = Date.now();
    // Drained: the agent holds no UDP session (its idle timeout, or the proxy's, ended them all).
    await waitFor(async () => sample(await scrape(metricsPort), 'portway_agent_udp_sessions') === 0 && Date.now() - lastSentAt > AGENT_IDLE_MS, { timeoutMs: 60_000, intervalMs: 100, description: 'agent UDP sessions back to zero' });
    const drainedAfterMs = Date.now() - lastSentAt;
    sampling = false;
    await sampler;
    // A new client gets through again: one datagram a second from a fresh address until one is answered (a
    // datagram from a new address is dropped while the proxy's live and closing sessions are both at the cap).
    const recoverStarted = Date.now();
    let recoveredAfterMs = -1;
    let tries = 0;
    while (recoveredAfterMs < 0 && Date.now() - recoverStarted < 30_000) {
      tries++;
      const client = await UdpClient.open(suite);
      const answer = await client.exchange(port, Buffer.from('after the storm'), 1_000).then((b) => b.toString(), () => undefined);
      if (answer === 'after the storm') recoveredAfterMs = Date.now() - lastSentAt;
    }
    await new Promise((r) => setTimeout(r, PROXY_IDLE_MS + 1_000)); // its session ends too
    const agentAfter = sample(await scrape(metricsPort), 'portway_agent_udp_sessions');
    const stopStarted = Date.now();
    const exitCode = await proc.stop('SIGTERM', 60_000);
    const stopMs = Date.now() - stopStarted;
    const line = proc.lines.find((l) => l.startsWith('udp stats '));
    const stats = (line ? JSON.parse(line.slice('udp stats '.length)) : {}) as { sessions: number; opened: number; closed: number; evicted: number; failed: number; rejected: number; datagramsIn: number; datagramsOut: number };
    // The agent's own count at every UDP stream it opened (its log lines carry it), which the 100 ms samples may miss.
    const agentPeakLogged = Math.max(0, ...(cluster.agent as ManagedProcess).events('agent.stream.opened').filter((e) => e.transport === 'udp').map((e) => Number(e.udpSessions)));
    const refusedAtAgent = (cluster.agent as ManagedProcess).events('agent.stream.refused').filter((e) => e.code === 'PW_LIMIT_REACHED').length;
    figure('udp-storm', { ports: PORTS, sprayMs, recoveredAfterMs, tries, exitCode, signal: proc.child.signalCode, stopMs, agentPeakLogged, agentMaxUdpSessions: agentMax, samples, drainedAfterMs, agentAfter, proxy: stats, refusedAtAgent, caps: { agent: AGENT_MAX_UDP, proxy: PROXY_MAX_SESSIONS }, idleMs: { agent: AGENT_IDLE_MS, proxy: PROXY_IDLE_MS } });
    expect({ recovered: recoveredAfterMs >= 0, exitCode, signal: proc.child.signalCode }).toEqual({ recovered: true, exitCode: 0, signal: null });
    expect({ agentMax: agentMax <= AGENT_MAX_UDP && agentPeakLogged <= AGENT_MAX_UDP, agentAfter, proxySessions: stats.sessions, allClosed: stats.closed === stats.opened }).toEqual({ agentMax: true, agentAfter: 0, proxySessions: 0, allClosed: true });
    expect(drainedAfterMs).toBeLessThanOrEqual(Math.max(AGENT_IDLE_MS, PROXY_IDLE_MS) + 5_000);
  }, 180_000);
});
