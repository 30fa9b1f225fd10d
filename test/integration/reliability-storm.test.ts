/**
 * Reconnection storm (issue 6, docs/reliability.md): N simulated agents (bench/fake-agents.ts: real mutual-TLS
 * MQTT sessions, each with the agent's own ControlChannel and backoff: full jitter, capped, reset after a stable
 * connection) on one relay; the relay is SIGKILLed and started again after systemd's RestartSec (2 s,
 * systemd/portway-relay.service). Measured:
 *   - back: each device's first 'online' after the new relay listened (the fleet's own timestamps);
 *   - handshakes per second: the fleet's own timestamps of every session that came up (TLS, CONNECT, subscribe
 *     and status published), cross-checked with the relay's `broker.client.connected` lines; the largest count
 *     in any sliding 1 s window against the total;
 *   - relay RSS: steady state = median VmRSS of the old relay holding the N sessions; peak = VmHWM of the new
 *     relay once the storm is over (its peak since start), plus VmRSS sampled every 100 ms.
 * N = 500 in `npm test`; a nightly run sets PORTWAY_STORM_AGENTS (e.g. 5000; at most 20,000).
 * The fleet uses the production backoff (base 500 ms, cap 60 s) with the test profile's stable-before-reset
 * (2 s instead of 20 s, so the short steady phase counts as stable as a long-lived connection would).
 */
import { readFileSync } from 'node:fs';
import { type ManagedProcess, type PortwayCluster, isEvent, relayUnitNodeArgs } from '../../devtools/portway-cluster';
import { Disposer, startCluster } from '../helpers';
import { startFakeFleet } from '../helpers/fake-fleet';
import { RELIABILITY_RELAY_CONFIG } from '../helpers/reliability';

const AGENTS = Number(process.env.PORTWAY_STORM_AGENTS ?? 500);
const RESTART_SEC_MS = 2_000;
const BACK_WITHIN_MS = 60_000;
const WAIT_ALL_BACK_MS = 90_000;
const STORM_TIMERS = { backoffBaseMs: 500, backoffCapMs: 60_000, backoffStableMs: 2_000 };

function figure(name: string, value: unknown): void {
  process.stdout.write(`reliability.figure ${name} ${JSON.stringify(value)}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** VmRSS and VmHWM of a process in KiB (/proc/PID/status). */
function memKiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** The largest number of timestamps in any window [t, t + widthMs). */
function maxInWindow(sorted: readonly number[], widthMs: number): number {
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while ((sorted[hi] as number) - (sorted[lo] as number) >= widthMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

const lineTime = (line: string): number => Date.parse((JSON.parse(line) as { time: string }).time);

interface StormResult {
  handshakes: number;
  maxHandshakesIn1s: number;
  /** The same from the relay's side (its broker.client.connected lines). */
  relayMaxIn1s: number;
  relayHandshakes: number;
}

describe('reconnection storm', () => {
  const suite = new Disposer();
  let cluster: PortwayCluster;
  let storm: StormResult | undefined;

  beforeAll(async () => {
    if (!Number.isInteger(AGENTS) || AGENTS < 1 || AGENTS > 20_000) throw new RangeError('PORTWAY_STORM_AGENTS must be 1-20000');
    // The fleet runs the agent's production connect timeout (10 s), so the relay keeps its production wait for an
    // admission slot (5 s; the test profile's 2 s suits the test agents' 3 s connect timeout).
    const relayConfig = { ...RELIABILITY_RELAY_CONFIG, timers: { ...RELIABILITY_RELAY_CONFIG.timers, deviceAdmissionWaitMs: 5_000 } };
    cluster = await startCluster(suite, { services: [], relayConfig, relayNodeArgs: relayUnitNodeArgs() });
  }, 90_000);
  afterAll(() => suite.run(), 60_000);

  it(`${AGENTS} agents, relay SIGKILLed and restarted after 2 s: 99 % back within 60 s, relay RSS peak ≤ 1.5x steady`, async () => {
    const enrollKey = (await cluster.mustRun(['relay', 'enroll-key', 'create', '--data', cluster.relayDir, '--owner', 'alice', '--uses', String(AGENTS)])).stdout.trim();
    const fleet = startFakeFleet(suite, { relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey, count: AGENTS, concurrency: 32, timers: STORM_TIMERS });
    const enrolled = await fleet.next('enrolled', 60_000 + AGENTS * 100);
    fleet.send('connect');
    const connected = await fleet.next('online', 60_000 + AGENTS * 100);
    expect(connected).toMatchObject({ count: AGENTS, failed: 0 });

    // Steady state: the sessions stay up past backoffStableMs, then the relay's RSS settles.
    const oldRelay = cluster.relay as ManagedProcess;
    await sleep(STORM_TIMERS.backoffStableMs + 2_000);
    const steadySamples: number[] = [];
    for (let i = 0; i < 5; i++, await sleep(300)) steadySamples.push(memKiB(oldRelay.child.pid as number).rss);
    const steadyKiB = [...steadySamples].sort((a, b) => a - b)[2] as number;

    const killedAt = Date.now();
    await oldRelay.stop('SIGKILL');
    await sleep(RESTART_SEC_MS);
    const relay = await cluster.startRelay();
    const relayPid = relay.child.pid as number;
    const listeningAt = lineTime(relay.lines.find(isEvent('relay.started')) as string);
    let rssPeakSampledKiB = 0;
    const sampler = setInterval(() => {
      try {
        rssPeakSampledKiB = Math.max(rssPeakSampledKiB, memKiB(relayPid).rss);
      } catch {
        // ENOENT: the relay exited; the test fails on the counts below
      }
    }, 100);
    suite.add(() => clearInterval(sampler));

    // Every device back (bounded), then the timeline.
    let onlineNow = 0;
    const deadline = listeningAt + WAIT_ALL_BACK_MS;
    // A busy fleet (one process, N TLS clients) answers slowly: bounds grow with N.
    const answerMs = 10_000 + AGENTS * 10;
    while (Date.now() < deadline) {
      fleet.send('status');
      onlineNow = Number((await fleet.next('status', answerMs)).onlineNow);
      if (onlineNow >= AGENTS) break;
      await sleep(1_000); // poll interval of a bounded wait
    }
    await sleep(1_000);
    clearInterval(sampler);
    const { hwm: rssPeakKiB, rss: rssAfterKiB } = memKiB(relayPid);
    fleet.send('timeline');
    const timeline = (await fleet.next('timeline', answerMs)).online as [number, number][];

    const backAt = new Map<number, number>();
    for (const [device, at] of timeline) if (at > killedAt && !backAt.has(device)) backAt.set(device, at - listeningAt);
    const backMs = [...backAt.values()].sort((a, b) => a - b);
    const backWithin60s = backMs.filter((ms) => ms <= BACK_WITHIN_MS).length;
    const pct = (q: number): number => backMs[Math.min(backMs.length - 1, Math.ceil(q * backMs.length) - 1)] ?? NaN;

    // Handshakes: every 'online' of the fleet after the kill (TLS, CONNECT, subscribe and status done), from the
    // fleet's own timestamps; the relay's broker.client.connected lines are a cross-check (its first 20,000
    // log lines only: ManagedProcess keeps no more).
    const connectedAt = timeline.filter(([, at]) => at > killedAt).map(([, at]) => at).sort((a, b) => a - b);
    const relayConnectedAt = relay.lines.filter((l) => isEvent('broker.client.connected')(l) && l.includes('"deviceId"')).map(lineTime).sort((a, b) => a - b);
    const relayConnected = relayConnectedAt.length;
    const relayMaxPerSecond = maxInWindow(relayConnectedAt, 1_000);
    const refused = relay.lines.filter(isEvent('broker.connection.refused')).length;
    // Connections the relay's pacing closed before TLS (relay/src/device-admission.ts); each agent retries after its backoff.
    const paced = relay.lines.filter((l) => isEvent('relay.connection.rejected')(l) && l.includes('"PW_RELAY_BUSY"')).length;
    const pacedPerSecond = JSON.parse(relay.lines.find(isEvent('relay.started')) as string).deviceSessionsPerSecond as number;
    const maxPerSecond = maxInWindow(connectedAt, 1_000);
    const perSecond: number[] = [];
    for (const t of connectedAt) {
      const s = Math.floor((t - listeningAt) / 1_000);
      if (s >= 0) perSecond[s] = (perSecond[s] ?? 0) + 1;
    }

    const result = {
      agents: AGENTS,
      enrollMs: enrolled.ms,
      connectMs: connected.ms,
      downMs: listeningAt - killedAt,
      back: backMs.length,
      backWithin60s,
      backPct: Math.round((1_000 * backWithin60s) / AGENTS) / 10,
      backP50Ms: pct(0.5),
      backP99Ms: pct(0.99),
      backMaxMs: backMs[backMs.length - 1],
      handshakes: connectedAt.length,
      relayConnectedLines: relayConnected,
      relayMaxConnectedIn1s: relayMaxPerSecond,
      relayLinesTruncated: relay.lines.length >= 20_000,
      refusedConnections: refused,
      pacedPerSecond,
      pacedRefusals: paced,
      maxHandshakesIn1s: maxPerSecond,
      maxHandshakesIn1sPct: Math.round((1_000 * maxPerSecond) / Math.max(1, connectedAt.length)) / 10,
      handshakesPerSecond: Array.from(perSecond, (n) => n ?? 0),
      steadyRssKiB: steadyKiB,
      peakRssKiB: rssPeakKiB,
      peakRssSampledKiB: rssPeakSampledKiB,
      rssAfterKiB,
      peakOverSteady: Math.round((100 * rssPeakKiB) / steadyKiB) / 100,
    };
    figure('reconnection-storm', result);
    storm = { handshakes: connectedAt.length, maxHandshakesIn1s: maxPerSecond, relayMaxIn1s: relayMaxPerSecond, relayHandshakes: relayConnected };
    expect({ back99PctWithin60s: backWithin60s >= Math.ceil(0.99 * AGENTS), rssPeakAtMost1_5xSteady: rssPeakKiB <= 1.5 * steadyKiB }).toEqual({ back99PctWithin60s: true, rssPeakAtMost1_5xSteady: true });
  }, 420_000);

  // The relay paces device sessions (relay/src/device-admission.ts): one slot every 1/rate s with
  // rate = ceil(fleet / 15 s) (34 per second for 501 devices, 6.8 %), so the fleet's handshakes are spread over
  // about 15 s whatever backoff step each agent is at; the margin to 10 % absorbs scheduling noise in when the
  // handshakes finish (the fleet is one busy process). Before the pacing, 21-40 % landed in one second.
  it('no 1 s window takes more than 10 % of the handshakes', () => {
    if (storm === undefined) throw new Error('the storm test did not run');
    expect({ fleetSide: storm.maxHandshakesIn1s <= 0.1 * storm.handshakes, relaySide: storm.relayMaxIn1s <= 0.1 * storm.relayHandshakes }).toEqual({ fleetSide: true, relaySide: true });
  });
});
