/**
 * Leak promises of issue 6 (docs/reliability.md, test plan C1/C2): 2,000 stream open/echo/close cycles through
 * `portway connect`, then 200 agent reconnects forced by resets on the agent's link; afterwards open fds of
 * relay, agent and forward proxy are back at baseline, no stream or extra MQTT session is left, and heap
 * is within 10 % of its baseline. Relay and agent are read through their loopback metrics endpoints.
 * The idle agent's disk writes are counted over PORTWAY_IDLE_WRITE_S seconds (20 by default; 3600 nightly).
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ManagedProcess, PortwayCluster } from '../../devtools/portway-cluster';
import { Disposer, type StartedFaultProxy, FAST_AGENT_TIMERS, makeTempDir, runProcess, startCluster, startEchoServer, startFaultProxy, waitFor } from '../helpers';
import { AGENT_METRICS_CONFIG, RELIABILITY_RELAY_CONFIG, collectGarbage, fdCount, gcNodeArgs, nextEventAt, relayMetricsPort, sample, scrape, startAgentWithMetrics } from '../helpers/reliability';
import { PORTWAY_BIN } from '../../devtools/portway-cluster';

const CYCLES = 2_000;
const CONCURRENCY = 16;
const RECONNECTS = 200;
/** fds may differ from the baseline by this much (pooled data sockets and primed sockets refill on their own). */
const FD_SLACK = 2;
/** Length of the idle-agent disk-write window: 20 s in `npm test`; a nightly run sets PORTWAY_IDLE_WRITE_S=3600 (no extrapolation). */
const IDLE_WRITE_S = Number(process.env.PORTWAY_IDLE_WRITE_S ?? 20);

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

/** Connect, send 32 bytes, read them back, end, wait for the close. */
function echoCycle(port: number, i: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(`cycle ${String(i).padStart(8, '0')} ${'x'.repeat(17)}`);
    const socket = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => socket.destroy(new Error(`cycle ${i} timed out`)), 15_000);
    let got = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= payload.length) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      if (got.equals(payload)) resolve();
      else reject(new Error(`cycle ${i}: echoed ${got.length} bytes, not the ${payload.length} sent`));
    });
    socket.write(payload);
  });
}

interface Snapshot {
  fds: { relay: number; agent: number; client: number };
  heap: { relay: number; agent: number };
  handles: { relay: number; agent: number };
  streams: { relay: number; agent: number };
  mqttClients: number;
}

describe('leaks: stream churn and reconnect churn', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let proxy: StartedFaultProxy;
  let connect: { port: number; proc: ManagedProcess };
  let relayMetrics: number;
  let agentMetrics: number;
  let gcDir: string;

  beforeAll(async () => {
    const echo = await startEchoServer(suite);
    gcDir = await makeTempDir(suite, 'portway-heap-');
    cluster = await startCluster(suite, {
      relayNodeArgs: gcNodeArgs(gcDir),
      services: [{ name: 'echo', type: 'tcp', target: `127.0.0.1:${echo.port}` }],
      relayConfig: RELIABILITY_RELAY_CONFIG,
      // Fast reconnects: the churn below measures what each reconnect leaves behind, not the backoff.
      // keepaliveS 10: a forced GC (a heap snapshot) stalls a process for a second or two, which must not cost the session.
      agentTimers: { ...FAST_AGENT_TIMERS, keepaliveS: 10, backoffBaseMs: 20, backoffCapMs: 100, backoffStableMs: 50 },
    });
    await (cluster.agent as ManagedProcess).stop();
    proxy = await startFaultProxy(suite, { host: '127.0.0.1', port: cluster.relayPort });
    await cluster.writeAgentConfig({ relay: `127.0.0.1:${proxy.port}`, ...AGENT_METRICS_CONFIG });
    agentMetrics = (await startAgentWithMetrics(cluster, 30_000, gcNodeArgs(gcDir))).metricsPort;
    relayMetrics = relayMetricsPort(cluster.relay as ManagedProcess);
    connect = await cluster.connect('echo');
  }, 90_000);
  afterAll(() => suite.run(), 30_000);

  /** Counts now; after a full GC in relay and agent first when `gc`. */
  async function snapshot(gc = true): Promise<Snapshot> {
    if (gc) {
      await collectGarbage(cluster.relay as ManagedProcess, gcDir, relayMetrics);
      await collectGarbage(cluster.agent as ManagedProcess, gcDir, agentMetrics);
    }
    const [r, a] = await Promise.all([scrape(relayMetrics), scrape(agentMetrics)]);
    return {
      fds: { relay: await fdCount(cluster.relay?.child.pid as number), agent: await fdCount(cluster.agent?.child.pid as number), client: await fdCount(connect.proc.child.pid as number) },
      heap: { relay: sample(r, 'portway_relay_nodejs_heap_size_used_bytes'), agent: sample(a, 'portway_agent_nodejs_heap_size_used_bytes') },
      handles: { relay: sample(r, 'portway_relay_nodejs_active_handles_total'), agent: sample(a, 'portway_agent_nodejs_active_handles_total') },
      streams: { relay: sample(r, 'portway_relay_streams_open'), agent: sample(a, 'portway_agent_streams_open') },
      mqttClients: sample(r, 'portway_relay_mqtt_clients'),
    };
  }

  async function runCycles(count: number, offset: number): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < count) await echoCycle(connect.port, offset + next++);
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  }

  /** Wait until no stream is open and every fd count is within FD_SLACK of `base` (cheap polls), then a GC'd snapshot. */
  async function settle(base: Snapshot | undefined): Promise<Snapshot> {
    try {
      await waitFor(async () => {
        const now = await snapshot(false);
        const fdsBack = base === undefined || (['relay', 'agent', 'client'] as const).every((k) => now.fds[k] <= base.fds[k] + FD_SLACK);
        return now.streams.relay === 0 && now.streams.agent === 0 && now.mqttClients === 2 && fdsBack;
      }, { timeoutMs: 20_000, intervalMs: 250, description: 'streams closed, one device session and fds back at baseline' });
    } catch {
      // The assertions below show what did not come back.
    }
    return snapshot(true);
  }

  const heapGrowth = (after: Snapshot, base: Snapshot): { relay: number; agent: number } => ({
    relay: Math.round((after.heap.relay / base.heap.relay - 1) * 1000) / 10,
    agent: Math.round((after.heap.agent / base.heap.agent - 1) * 1000) / 10,
  });

  it(`${CYCLES} open/echo/close cycles through portway connect leave fds, handles and streams at baseline and heap within 10 %`, async () => {
    await runCycles(100, 0);
    const base = await settle(undefined);
    const started = Date.now();
    await runCycles(CYCLES, 100);
    const churnMs = Date.now() - started;
    const after = await settle(base);
    const growth = heapGrowth(after, base);
    figure('stream-churn', { cycles: CYCLES, churnMs, base, after, heapGrowthPercent: growth });
    expect(after.streams).toEqual({ relay: 0, agent: 0 });
    for (const k of ['relay', 'agent', 'client'] as const) expect({ k, fds: after.fds[k] <= base.fds[k] + FD_SLACK }).toEqual({ k, fds: true });
    expect(after.handles.relay).toBeLessThanOrEqual(base.handles.relay + FD_SLACK);
    expect(after.handles.agent).toBeLessThanOrEqual(base.handles.agent + FD_SLACK);
    expect(growth.relay).toBeLessThanOrEqual(10);
    expect(growth.agent).toBeLessThanOrEqual(10);
  }, 200_000);

  it(`${RECONNECTS} agent reconnects (link reset) leave one MQTT session for the device, fds at baseline and heap within 10 %`, async () => {
    const agent = cluster.agent as ManagedProcess;
    const base = await settle(undefined);
    const started = Date.now();
    for (let i = 0; i < RECONNECTS; i++) {
      const online = nextEventAt(agent, 'agent.control.online', 10_000);
      proxy.proxy.resetConnections();
      await online;
    }
    const churnMs = Date.now() - started;
    await waitFor(async () => sample(await scrape(relayMetrics), 'portway_relay_mqtt_clients') === 2, { timeoutMs: 10_000, intervalMs: 100, description: 'one device session' });
    const after = await settle(base);
    const growth = heapGrowth(after, base);
    figure('reconnect-churn', { reconnects: RECONNECTS, churnMs, base, after, heapGrowthPercent: growth });
    expect(after.mqttClients).toBe(2);
    for (const k of ['relay', 'agent'] as const) expect({ k, fds: after.fds[k] <= base.fds[k] + FD_SLACK }).toEqual({ k, fds: true });
    expect(growth.relay).toBeLessThanOrEqual(10);
    expect(growth.agent).toBeLessThanOrEqual(10);
    // Still serving.
    expect((await cluster.runCli(['pipe', cluster.deviceName, 'echo'], { input: 'still here\n' })).stdout).toBe('still here\n');
  }, 120_000);

  it(`the idle agent writes under 1 MiB per hour to disk (write_bytes over ${String(IDLE_WRITE_S)} s${IDLE_WRITE_S < 3600 ? ', extrapolated' : ''})`, async () => {
    if (!Number.isInteger(IDLE_WRITE_S) || IDLE_WRITE_S < 5 || IDLE_WRITE_S > 86_400) throw new RangeError('PORTWAY_IDLE_WRITE_S must be 5-86400');
    const agent = cluster.agent as ManagedProcess;
    const io = async (): Promise<{ writeBytes: number; cancelledWriteBytes: number }> => {
      const text = await fs.readFile(`/proc/${String(agent.child.pid)}/io`, 'utf8');
      return { writeBytes: Number(/^write_bytes: (\d+)$/m.exec(text)?.[1]), cancelledWriteBytes: Number(/^cancelled_write_bytes: (\d+)$/m.exec(text)?.[1]) };
    };
    const logBytes = (): number => agent.lines.reduce((n, l) => n + l.length + 1, 0);
    const before = { io: await io(), log: logBytes(), lines: agent.lines.length };
    const windowMs = IDLE_WRITE_S * 1000;
    await new Promise((r) => setTimeout(r, windowMs));
    const after = await io();
    expect(agent.lines.length).toBeLessThan(20_000); // ManagedProcess keeps the first 20,000 lines: the log count below is whole
    const perHour = (bytes: number): number => Math.round((bytes * 3_600_000) / windowMs);
    const measured = {
      diskBytes: after.writeBytes - before.io.writeBytes,
      cancelledDiskBytes: after.cancelledWriteBytes - before.io.cancelledWriteBytes,
      infoLogBytes: logBytes() - before.log,
      infoLogLines: agent.lines.length - before.lines,
    };
    const disk = perHour(measured.diskBytes);
    figure('idle-agent-writes', { windowMs, ...measured, diskBytesPerHour: disk, infoLogBytesPerHour: perHour(measured.infoLogBytes) });
    expect(disk).toBeLessThan(1024 * 1024);
  }, IDLE_WRITE_S * 1000 + 30_000);

  it('the agent metrics endpoint refuses a non-loopback address (PW_CONFIG_INVALID, exit 78)', async () => {
    const disposer = new Disposer();
    try {
      const config = JSON.parse(await fs.readFile(cluster.agentConfigFile, 'utf8')) as Record<string, unknown>;
      const file = path.join(await makeTempDir(disposer), 'agent.json');
      await fs.writeFile(file, JSON.stringify({ ...config, metricsListen: '0.0.0.0:0' }));
      const result = await runProcess(disposer, process.execPath, [PORTWAY_BIN, 'agent', '--config', file], { timeoutMs: 20_000 });
      expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 78, stderr: expect.stringContaining('PW_CONFIG_INVALID') });
    } finally {
      await disposer.run();
    }
  });
});
