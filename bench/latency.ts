/**
 * Section 2, connect-to-first-byte latency (see latency-probe.ts), echo server behind each path.
 *
 * Loopback: direct, a warm `ssh -J -L` tunnel and Portway (`portway connect pi1 echo`).
 *
 * With delay (`delayMs` one way on each of the two links, user-space delay links from devtools):
 *   - Portway: the relay behind two delay links, one for the client side (`portway login` and
 *     `portway connect` use it) and one for the agent (its config's relay address): client app ->
 *     portway connect =link A=> relay <=link B= agent -> echo. The cluster's agent is restarted with the
 *     new address and the client logged in again; the agent keeps its identity.
 *   - ssh -J: ssh =link A=> relay sshd =link B=> device sshd -> echo (tunnel opened through the links).
 *   - direct, as asked: client -> link -> link -> echo (two chained delay links).
 *   - direct, routed model: client -> one link of 2 x delayMs -> echo. A delay link accepts locally and
 *     models one TCP handshake (fault-proxy.ts, delayConnect); chained, the second link's handshake
 *     overlaps the first one, so the chain shows one link round trip less than an IP-routed path (whose
 *     SYN/SYN-ACK cross both links). One link of twice the delay has the routed path's round trips.
 */
import { startDelayLink, type DelayLink, type ManagedProcess, type PortwayCluster } from '../devtools';
import type { BenchContext } from './context';
import { DEVICE_NAME } from './environment';
import { probeConnectEcho, type ProbeResult } from './latency-probe';
import { NOTES_LATENCY_DELAY, NOTES_LATENCY_LOOPBACK } from './notes-baselines';
import { checkText, type ResultRow, type SectionName } from './report';
import { checkedRun, type RoleMap, type RunCheck } from './run-check';
import { findPidsByCommandLine } from './pids';
import { openSshTunnel, sshConfigPath, type SshPair, writeSshConfig } from './ssh-jump';
import { summarize, type Summary } from './stats';

const LOOPBACK_TIMEOUT_MS = 5_000;
const DELAY_TIMEOUT_MS = 10_000;
const LOOPBACK_TARGET = { median: 4, p99: 8 };
const DELAY_RATIO_TARGET = 1.25;

interface Series {
  readonly key: string;
  readonly label: string;
  readonly probe: ProbeResult;
  readonly summary: Summary;
  readonly check: RunCheck;
  /** CPU each role spent per connection (ms of one core), samples and warm-up included. */
  readonly cpuMsPerConnection: Record<string, number>;
}

async function measure(ctx: BenchContext, key: string, label: string, port: number, samples: number, timeoutMs: number, roles: RoleMap = new Map()): Promise<Series> {
  const { value: probe, check } = await checkedRun(ctx.quiet, () => roles, () =>
    probeConnectEcho(port, { samples, warmup: ctx.options.latencyWarmup, timeoutMs, signal: ctx.signal }),
  );
  const summary = summarize(probe.samplesMs);
  const connections = probe.samplesMs.length + probe.failures + ctx.options.latencyWarmup;
  const cpuMsPerConnection: Record<string, number> = {};
  for (const [role, pct] of Object.entries(check.cpuByRole)) cpuMsPerConnection[role] = Math.round(((pct / 100) * check.wallMs * 100) / connections) / 100;
  ctx.progress(`latency ${key}: median ${summary.median.toFixed(3)} ms, p99 ${summary.p99.toFixed(3)} ms (${probe.samplesMs.length} samples, ${probe.failures} failed) ${checkText(check)} ${cpuMsText(cpuMsPerConnection)}`);
  return { key, label, probe, summary, check, cpuMsPerConnection };
}

/** "CPU ms/conn relay 7.2, agent 5.7, fwd 5.3". */
function cpuMsText(cpu: Record<string, number>): string {
  const parts = Object.entries(cpu)
    .filter(([, v]) => v >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 5)
    .map(([role, v]) => `${role} ${v.toFixed(1)}`);
  return parts.length ? `CPU ms/connection ${parts.join(', ')}` : '';
}

const ms = (x: number): string => (x >= 20 ? x.toFixed(1) : x.toFixed(3));

function row(section: SectionName, s: Series, extra: Partial<ResultRow>): ResultRow {
  const ok = s.probe.samplesMs.length > 0;
  return {
    section,
    measurement: `connect → echo, median / p99 (n=${s.summary.n})`,
    path: s.label,
    result: ok ? `${ms(s.summary.median)} / ${ms(s.summary.p99)} ms` : 'failed',
    values: { medianMs: s.summary.median, p99Ms: s.summary.p99, minMs: s.summary.min, maxMs: s.summary.max, n: s.summary.n, failures: s.probe.failures },
    check: [checkText(s.check), s.probe.failures ? `${s.probe.failures} failed: ${s.probe.firstError ?? ''}` : '', cpuMsText(s.cpuMsPerConnection)].filter(Boolean).join('; '),
    isContaminated: s.check.isContaminated,
    ...extra,
  };
}

export async function runLatencyLoopback(ctx: BenchContext): Promise<ResultRow[]> {
  const { env, options } = ctx;
  const echo = await env.echo();
  const tunnel = await env.sshTunnel();
  const fwd = await env.connect('echo');
  const n = options.latencySamples;
  const cluster = await env.cluster();
  const pair = await env.ssh();
  const direct = await measure(ctx, 'loopback direct', 'direct', echo.port, n, LOOPBACK_TIMEOUT_MS);
  const ssh = await measure(ctx, 'loopback sshJ', 'ssh -J (aes128-gcm, tunnel up)', tunnel.localPorts[1] as number, n, LOOPBACK_TIMEOUT_MS, sshRoles(tunnel.proc.child.pid, pair));
  const portway = await measure(ctx, 'loopback portway', 'Portway (portway connect)', fwd.port, n, LOOPBACK_TIMEOUT_MS, portwayRoles(cluster, fwd.proc.child.pid));
  ctx.record('latency', {
    series: [direct, ssh, portway].map(({ probe, ...rest }) => ({ ...rest, samplesMs: probe.samplesMs, failures: probe.failures, firstError: probe.firstError })),
    ...(portway.probe.failures ? { portwayLogs: env.portwayDiagnostics() } : {}),
  });
  const p = portway.summary;
  return [
    row('latency', direct, { notes: NOTES_LATENCY_LOOPBACK.direct }),
    row('latency', ssh, { notes: NOTES_LATENCY_LOOPBACK.sshJ }),
    row('latency', portway, {
      comparison: `${(p.median / direct.summary.median).toFixed(1)}× direct, ${(p.median / ssh.summary.median).toFixed(1)}× ssh -J (median)`,
      target: `≤ ${LOOPBACK_TARGET.median} / ≤ ${LOOPBACK_TARGET.p99} ms (notes)`,
      targetMet: p.n > 0 && p.median <= LOOPBACK_TARGET.median && p.p99 <= LOOPBACK_TARGET.p99,
      notes: NOTES_LATENCY_LOOPBACK.portway,
    }),
  ];
}

function portwayRoles(cluster: PortwayCluster, fwdPid: number | undefined): RoleMap {
  return new Map([
    [cluster.relay?.child.pid ?? -1, 'relay'],
    [cluster.agent?.child.pid ?? -1, 'agent'],
    [fwdPid ?? -1, 'fwd'],
  ]);
}

function sshRoles(sshPid: number | undefined, pair: SshPair): RoleMap {
  const roles = new Map<number, string>([[sshPid ?? -1, 'ssh']]);
  for (const pid of findPidsByCommandLine(pair.relay.dir, 'sshd')) roles.set(pid, 'sshd-relay');
  for (const pid of findPidsByCommandLine(pair.device.dir, 'sshd')) roles.set(pid, 'sshd-device');
  return roles;
}

async function link(ctx: BenchContext, upstreamPort: number, oneWayDelayMs: number): Promise<DelayLink> {
  const l = await startDelayLink({ upstream: { host: '127.0.0.1', port: upstreamPort }, oneWayDelayMs });
  ctx.teardown.add('delay link', () => l.stop());
  return l;
}

/** Point the cluster's client at `clientLink` and its agent at `agentLink`; returns the new connect port. */
async function repointPortway(ctx: BenchContext, clientLink: DelayLink, agentLink: DelayLink): Promise<{ port: number; proc: ManagedProcess }> {
  const cluster = await ctx.env.cluster();
  await ctx.env.stopConnects();
  await cluster.writeAgentConfig({ relay: `127.0.0.1:${agentLink.port}` });
  await cluster.agent?.stop('SIGTERM', 10_000);
  await cluster.startAgent();
  await cluster.mustRun(['login', '--relay', `127.0.0.1:${clientLink.port}`, '--token', cluster.token, '--fingerprint', cluster.caFingerprint]);
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      return await ctx.env.connect('echo');
    } catch (err) {
      lastError = err; // PW_DEVICE_OFFLINE until the relay has seen the restarted agent's status
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  throw new Error(`portway connect through the delay links failed: ${(lastError as Error).message}`);
}

export async function runLatencyDelay(ctx: BenchContext): Promise<ResultRow[]> {
  const { env, options } = ctx;
  const d = options.delayMs;
  const n = options.delaySamples;
  const echo = await env.echo();
  const pair = await env.ssh();
  const cluster = await env.cluster();
  const rtt = 2 * d;

  const chainB = await link(ctx, echo.port, d);
  const chainA = await link(ctx, chainB.port, d);
  const direct = await measure(ctx, 'delay direct-chain', 'direct (client → link → link → echo)', chainA.port, n, DELAY_TIMEOUT_MS);
  const routed = await link(ctx, echo.port, 2 * d);
  const directRouted = await measure(ctx, 'delay direct-routed', `direct, routed model (one ${2 * d} ms link)`, routed.port, n, DELAY_TIMEOUT_MS);

  const sshA = await link(ctx, pair.relay.port, d);
  const sshB = await link(ctx, pair.device.port, d);
  const config = await writeSshConfig(sshConfigPath(await env.dir(), 'delay'), pair, { relay: sshA.port, device: sshB.port });
  const tunnel = await openSshTunnel(ctx.teardown, config, [echo.port], 0);
  const ssh = await measure(ctx, 'delay sshJ', 'ssh -J (tunnel up, both hops delayed)', tunnel.localPorts[0] as number, n, DELAY_TIMEOUT_MS, sshRoles(tunnel.proc.child.pid, pair));
  await tunnel.stop();

  const pwA = await link(ctx, cluster.relayPort, d);
  const pwB = await link(ctx, cluster.relayPort, d);
  const fwd = await repointPortway(ctx, pwA, pwB);
  const portway = await measure(ctx, 'delay portway', `Portway (client =link A=> relay <=link B= agent; ${DEVICE_NAME})`, fwd.port, n, DELAY_TIMEOUT_MS, portwayRoles(cluster, fwd.proc.child.pid));

  ctx.record('latency-delay', {
    oneWayDelayMs: d,
    series: [direct, directRouted, ssh, portway].map(({ probe, ...rest }) => ({ ...rest, samplesMs: probe.samplesMs, failures: probe.failures, firstError: probe.firstError })),
    ...(portway.probe.failures ? { portwayLogs: env.portwayDiagnostics() } : {}),
  });
  const verdict = (ratio: number): string => (portway.summary.n > 0 && ratio <= DELAY_RATIO_TARGET ? '✅' : '❌');
  const rtts = (s: Series): string => `${(s.summary.median / rtt).toFixed(1)} link RTTs`;
  const pm = portway.summary.median;
  const ratioChain = pm / direct.summary.median;
  const ratioRouted = pm / directRouted.summary.median;
  return [
    row('latency-delay', direct, { comparison: rtts(direct) }),
    row('latency-delay', directRouted, { comparison: rtts(directRouted), notes: NOTES_LATENCY_DELAY.direct }),
    row('latency-delay', ssh, { comparison: `${rtts(ssh)}; ${(ssh.summary.median / direct.summary.median).toFixed(2)}× direct`, notes: NOTES_LATENCY_DELAY.sshJ }),
    row('latency-delay', portway, {
      comparison: `${rtts(portway)}; ${(pm / ssh.summary.median).toFixed(2)}× ssh -J`,
      target: `≤ ${DELAY_RATIO_TARGET}× direct: chain ${ratioChain.toFixed(2)}× ${verdict(ratioChain)}, routed ${ratioRouted.toFixed(2)}× ${verdict(ratioRouted)}`,
      notes: NOTES_LATENCY_DELAY.portway,
    }),
  ];
}
