/**
 * How much an idle device agent costs: `npm run build --silent && node dist/scripts/agent-idle.js [SECONDS [TELEMETRY_MS]]`
 * (TELEMETRY_MS: the agent's telemetryIntervalMs, default its own default; 0 measures the agent without telemetry;
 * AGENT_NODE_OPTIONS in the environment: Node flags for the agent alone). The agent gets the `Environment=`
 * settings of systemd/portway-agent.service, as on a device.
 *
 * Runs the agent as the device does (the esbuild bundle, built into a temp dir) against a loopback relay, with
 * telemetry at its default 60 s and the systemd watchdog on (WatchdogSec=60, a systemd-notify ping every 30 s,
 * received by test/fixtures/notify-listener.py), and debug logs so each collection reports its own CPU time.
 * After the agent is online and has published its first sample, it idles for SECONDS (default 180) and prints
 * one JSON line: the agent's CPU over the window (utime+stime, children's reaped CPU included: the systemd-notify
 * pings) as a percentage of one core, its RSS (VmRSS at the end, the median of samples every 5 s, VmHWM), and
 * the CPU time of each telemetry collection measured in-process (the first includes systeminformation's one-off
 * osInfo()). Every process is stopped and the temp dir removed at the end.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isEvent, makeTempDir, ManagedProcess, PortwayCluster, unitEnvironment } from '../devtools';

const ROOT = path.basename(path.dirname(__dirname)) === 'dist' ? path.resolve(__dirname, '..', '..') : path.resolve(__dirname, '..');
const CLOCK_TICKS_PER_S = 100;

function procStat(pid: number): { cpuTicks: number; childTicks: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const n = (i: number): number => Number(fields[i - 3]);
  return { cpuTicks: n(14) + n(15), childTicks: n(16) + n(17) };
}

function procStatusKiB(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(seconds: number, telemetryIntervalMs: number | undefined): Promise<void> {
  const dir = await makeTempDir('portway-agent-idle-');
  const children: ManagedProcess[] = [];
  let cluster: PortwayCluster | undefined;
  try {
    const agentDir = path.join(dir.path, 'bundle');
    const build = spawn(process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', agentDir], { stdio: 'ignore' });
    if ((await new Promise((resolve) => build.once('exit', resolve))) !== 0) throw new Error('build-agent failed');
    cluster = await PortwayCluster.start({ dir: path.join(dir.path, 'cluster'), services: [] });
    await cluster.agent?.stop();
    await cluster.writeAgentConfig({ logLevel: 'debug', ...(telemetryIntervalMs === undefined ? {} : { telemetryIntervalMs }) });

    const socket = path.join(dir.path, 'notify.sock');
    const notify = new ManagedProcess(spawn('python3', [path.join(ROOT, 'test', 'fixtures', 'notify-listener.py'), socket, String(seconds + 120)], { stdio: ['ignore', 'pipe', 'pipe'] }));
    children.push(notify);
    await notify.waitForLine((l) => l === 'ready', 10_000, 'notify listener');
    const agent = new ManagedProcess(spawn(process.execPath, [path.join(agentDir, 'portway-agent.js'), '--config', cluster.agentConfigFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, ...unitEnvironment('portway-agent.service'), NOTIFY_SOCKET: socket, WATCHDOG_USEC: '60000000', ...(process.env.AGENT_NODE_OPTIONS ? { NODE_OPTIONS: process.env.AGENT_NODE_OPTIONS } : {}) } }));
    children.push(agent);
    const pid = agent.child.pid as number;
    await agent.waitForLine(isEvent('agent.control.online'), 30_000, 'agent online');
    if (telemetryIntervalMs !== 0) await agent.waitForLine(isEvent('telemetry.collected'), 30_000, 'first telemetry');
    await sleep(5_000);

    const start = { ...procStat(pid), at: Date.now() };
    const rss: number[] = [];
    for (let t = 0; t < seconds; t += 5) {
      await sleep(5_000);
      rss.push(procStatusKiB(pid, 'VmRSS'));
    }
    const end = { ...procStat(pid), at: Date.now() };
    const windowS = (end.at - start.at) / 1000;
    const cpuS = (end.cpuTicks - start.cpuTicks + end.childTicks - start.childTicks) / CLOCK_TICKS_PER_S;
    const collections = agent.events('telemetry.collected').map((e) => e.collectCpuMs as number);
    const sorted = [...rss].sort((a, b) => a - b);
    process.stdout.write(`${JSON.stringify({
      node: process.version,
      arch: process.arch,
      windowS: Math.round(windowS),
      agentCpuPercent: Math.round((cpuS / windowS) * 100 * 1000) / 1000,
      agentCpuS: cpuS,
      childCpuS: (end.childTicks - start.childTicks) / CLOCK_TICKS_PER_S,
      rssKiB: { end: rss.at(-1), median: sorted[Math.floor(sorted.length / 2)], hwm: procStatusKiB(pid, 'VmHWM') },
      collectCpuMs: { first: collections[0], rest: collections.slice(1) },
      watchdogPings: notify.lines.filter((l) => l === 'WATCHDOG=1').length,
      telemetryPublished: collections.length,
    })}\n`);
  } finally {
    await Promise.all(children.map((c) => c.stop('SIGTERM', 5_000)));
    await cluster?.stop();
    await dir.remove();
  }
}

main(Number(process.argv[2] ?? 180), process.argv[3] === undefined ? undefined : Number(process.argv[3])).catch((err: unknown) => {
  process.stderr.write(`agent-idle: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
