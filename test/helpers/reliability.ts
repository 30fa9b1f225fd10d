/**
 * Helpers of the reliability tests (docs/reliability.md): agents started with their metrics endpoint,
 * Prometheus scrapes, open file descriptors of a process, timed waits for JSON log events.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { type ManagedProcess, type PortwayCluster, isEvent } from '../../devtools/portway-cluster';

/** Relay timers and a loopback metrics endpoint on a free port (read back from relay.started). */
export const RELIABILITY_RELAY_CONFIG = {
  timers: { tlsHandshakeTimeoutMs: 3_000, firstFrameTimeoutMs: 3_000, dialTimeoutMs: 5_000, streamCloseGraceMs: 5_000, mqttConnectTimeoutMs: 3_000, httpRequestTimeoutMs: 3_000, deviceAdmissionWaitMs: 2_000 },
  metricsListen: { host: '127.0.0.1', port: 0 },
};

/**
 * For the floods of hostile input on the MQTT ALPN (10,000 inputs, 300 quiet sessions with a device
 * certificate): the relay's pacing of device sessions (relay/src/device-admission.ts) would refuse most of them
 * before TLS, and those tests are about what the broker does with each one that gets through. The pacing has
 * its own tests (device-admission.test.ts, the reconnection storm).
 */
export const RELIABILITY_UNPACED_RELAY_CONFIG = {
  ...RELIABILITY_RELAY_CONFIG,
  limits: { minDeviceSessionsPerSecond: 1_000_000, maxDeviceSessionsPerSecond: 1_000_000 },
};

/** Agent config keys for a metrics endpoint on a free loopback port (for `cluster.writeAgentConfig`). */
export const AGENT_METRICS_CONFIG = { metricsListen: '127.0.0.1:0' };

/** Start (or restart) the cluster's agent, its config written with AGENT_METRICS_CONFIG; reads the port back. */
export async function startAgentWithMetrics(cluster: PortwayCluster, timeoutMs = 30_000, nodeArgs: readonly string[] = []): Promise<{ proc: ManagedProcess; metricsPort: number }> {
  const proc = cluster.spawnCli(['agent', '--config', cluster.agentConfigFile], {}, nodeArgs);
  cluster.agent = proc;
  const line = await proc.waitForLine(isEvent('agent.metrics.listening'), timeoutMs, 'agent.metrics.listening');
  await proc.waitForLine(isEvent('agent.control.online'), timeoutMs, 'agent.control.online');
  return { proc, metricsPort: (JSON.parse(line) as { metrics: { port: number } }).metrics.port };
}

/** The relay's metrics port from its relay.started line. */
export function relayMetricsPort(relay: ManagedProcess): number {
  const line = relay.lines.find(isEvent('relay.started'));
  const port = line === undefined ? undefined : (JSON.parse(line) as { metrics?: { port: number } }).metrics?.port;
  if (port === undefined) throw new Error('the relay was started without a metrics endpoint');
  return port;
}

/** Scrape a Prometheus endpoint: sample name (with labels, as printed) → value. */
export function scrape(port: number, timeoutMs = 5_000): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        const samples = new Map<string, number>();
        for (const line of body.split('\n')) {
          if (line === '' || line.startsWith('#')) continue;
          const i = line.lastIndexOf(' ');
          samples.set(line.slice(0, i), Number(line.slice(i + 1)));
        }
        resolve(samples);
      });
    });
    req.on('timeout', () => req.destroy(new Error('metrics scrape timed out')));
    req.on('error', reject);
  });
}

export function sample(samples: Map<string, number>, name: string): number {
  const value = samples.get(name);
  if (value === undefined) throw new Error(`no sample ${name}`);
  return value;
}

/** Open file descriptors of a process (Linux /proc). */
export async function fdCount(pid: number): Promise<number> {
  return (await fs.readdir(`/proc/${pid}/fd`)).length;
}

/** Parsed JSON log lines of `event` that `proc` printed after index `from` of its lines. */
export function eventsSince(proc: ManagedProcess, event: string, from: number): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of proc.lines.slice(from)) if (isEvent(event)(line)) out.push(JSON.parse(line) as Record<string, unknown>);
  return out;
}

/** The next `event` line after this call, parsed, with the wall time (ms) at which the test saw it. */
export async function nextEventAt(proc: ManagedProcess, event: string, timeoutMs: number): Promise<{ at: number; json: Record<string, unknown> }> {
  const from = proc.lines.length;
  const line = await proc.waitForLine((l) => isEvent(event)(l) && proc.lines.indexOf(l) >= from, timeoutMs, event);
  return { at: Date.now(), json: JSON.parse(line) as Record<string, unknown> };
}

/** Node options that let a test force a full GC in a child: a heap snapshot on SIGUSR2 (written into `dir`). */
export function gcNodeArgs(dir: string): string[] {
  return ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir}`];
}

/**
 * Force a full garbage collection in `proc` (started with gcNodeArgs(dir)): V8 collects before it writes a
 * heap snapshot. Resolves once the snapshot is written (the process answers a metrics scrape again) and removed.
 */
export async function collectGarbage(proc: ManagedProcess, dir: string, metricsPort: number, timeoutMs = 30_000): Promise<void> {
  const before = new Set(await fs.readdir(dir));
  proc.child.kill('SIGUSR2');
  const deadline = Date.now() + timeoutMs;
  let file: string | undefined;
  while (file === undefined) {
    if (Date.now() > deadline) throw new Error('no heap snapshot appeared');
    await new Promise((r) => setTimeout(r, 50));
    file = (await fs.readdir(dir)).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
  }
  // The snapshot is written on the main thread: a scrape is answered only after it is done.
  await scrape(metricsPort, timeoutMs);
  await fs.rm(path.join(dir, file), { force: true });
}
