/**
 * The agent's UDP session cap is its own (maxUdpSessions), not maxStreams: idle UDP sessions no longer starve
 * TCP streams. And `portway connect --udp` prints at most one error line per code per 5 s: a refusal or an
 * offline device, met by every new client address, does not print a line per address.
 */
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { connectTcp, Disposer, startCluster, startEchoServer, waitFor } from '../helpers';
import { ByteCollector } from '../helpers/tcp';
import { startUdpEchoServer, UdpClient } from '../helpers/udp';

jest.setTimeout(120_000);

const IO_TIMEOUT_MS = 15_000;
const MAX_UDP = 3;
const EXTRA_CLIENTS = 20;

const errorLines = (proc: ManagedProcess, code: string): string[] => proc.stderr.split('\n').filter((l) => l.startsWith(`portway: ${code}:`));

describe('UDP limits', () => {
  const suite = new Disposer();
  const disposer = new Disposer();
  let cluster: PortwayCluster;

  beforeAll(async () => {
    const echo = await startUdpEchoServer(suite);
    const tcpEcho = await startEchoServer(suite);
    cluster = await startCluster(suite, {
      services: [
        { name: 'echo', type: 'udp', target: `127.0.0.1:${echo.port}`, idleTimeoutMs: 60_000 },
        { name: 'tcp-echo', type: 'tcp', target: `127.0.0.1:${tcpEcho.port}` },
      ],
      agentConfig: { maxStreams: 4, maxUdpSessions: MAX_UDP },
    });
  });
  afterEach(() => disposer.run());
  afterAll(() => suite.run());

  it(`UDP sessions stop at maxUdpSessions (${MAX_UDP}) without using up maxStreams (4); refusals print one line`, async () => {
    const { port, proc } = await cluster.connectUdp('echo', ['--idle-timeout', '60000']);
    disposer.add(() => proc.stop(), 'stop udp proxy');
    for (let i = 0; i < MAX_UDP; i++) {
      const client = await UdpClient.open(disposer);
      expect((await client.exchange(port, Buffer.from(`s${i}`), IO_TIMEOUT_MS)).toString()).toBe(`s${i}`);
    }
    // Three UDP sessions are open and maxStreams is 4: two TCP streams at once still open (when UDP sessions
    // counted as streams, the second was never dialed: PW_DIAL_TIMEOUT).
    const tcp = await cluster.connect('tcp-echo');
    disposer.add(() => tcp.proc.stop(), 'stop tcp proxy');
    const sockets = await Promise.all([0, 1].map(() => connectTcp(disposer, { host: '127.0.0.1', port: tcp.port })));
    const collectors = sockets.map((s) => new ByteCollector(s));
    sockets.forEach((s, i) => s.write(`tcp ${i}`));
    for (const [i, c] of collectors.entries()) expect((await c.waitForLength(5, IO_TIMEOUT_MS)).toString()).toBe(`tcp ${i}`);
    sockets.forEach((s) => s.end());
    await Promise.all(collectors.map((c) => c.waitForClose(IO_TIMEOUT_MS)));
    // More UDP clients are refused by the agent; the proxy prints one line for all of them.
    // One after the other: a refused session is still a stream until it has closed, and maxStreams bounds those.
    const limitRefusals = (): number => cluster.agent!.events('agent.stream.refused').filter((e) => e.code === 'PW_LIMIT_REACHED').length;
    for (let i = 0; i < EXTRA_CLIENTS; i++) {
      (await UdpClient.open(disposer)).socket.send(Buffer.from('more'), port, '127.0.0.1');
      await waitFor(() => limitRefusals() > i, { timeoutMs: IO_TIMEOUT_MS, intervalMs: 20, description: `refusal ${i + 1} at the agent` });
    }
    const refused = cluster.agent!.events('agent.stream.refused').filter((e) => e.code === 'PW_LIMIT_REACHED');
    expect(String(refused[0]?.reason)).toContain(`the agent already has ${MAX_UDP} UDP sessions (maxUdpSessions)`);
    await waitFor(() => errorLines(proc, 'PW_LIMIT_REACHED').length >= 1, { timeoutMs: IO_TIMEOUT_MS, description: 'refusal printed' });
    // At most one line per 5 s: the 20 refusals arrive within a few seconds, so one or two lines, never 20.
    expect(errorLines(proc, 'PW_LIMIT_REACHED').length).toBeLessThanOrEqual(2);
  });

  it('an offline device: every new client address fails, and the proxy prints one line, not one per address', async () => {
    const { port, proc } = await cluster.connectUdp('echo');
    disposer.add(() => proc.stop(), 'stop udp proxy');
    await cluster.agent!.stop();
    await waitFor(async () => (await cluster.runCli(['devices', '--json'])).stdout.includes('"online": false'), { timeoutMs: 30_000, intervalMs: 300, description: 'device offline' });
    for (let i = 0; i < EXTRA_CLIENTS; i++) (await UdpClient.open(disposer)).socket.send(Buffer.from('anyone?'), port, '127.0.0.1');
    await waitFor(() => errorLines(proc, 'PW_DEVICE_OFFLINE').length >= 1, { timeoutMs: 30_000, description: 'offline printed' });
    expect(await proc.stop('SIGTERM')).toBe(0);
    const stats = JSON.parse(proc.lines.find((l) => l.startsWith('udp stats '))!.slice('udp stats '.length)) as { failed: number };
    expect(stats.failed).toBe(EXTRA_CLIENTS);
    expect(errorLines(proc, 'PW_DEVICE_OFFLINE').length).toBeLessThanOrEqual(2);
  });
});
