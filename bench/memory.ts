/**
 * Section 3, relay memory per idle agent: a fresh Portway cluster of its own (relay + one real agent),
 * N devices enrolled by the fake fleet (bench/fake-agents.ts, one child process), then
 *   1. the relay is restarted, so the baseline is a fresh relay process holding the enrolled store and
 *      the enrollment's garbage is not counted; RSS_0 is read once the real agent is back online;
 *   2. the fleet opens its N control connections; RSS_N is read once the relay's API lists all of them
 *      online;
 *   per agent = (RSS_N - RSS_0) / N, from /proc/<relay pid>/status (VmRSS), each reading the median of 5
 *   samples taken after the relay settled. No forced GC (the relay runs as in production).
 * The relay runs as systemd/portway-relay.service runs it (Node options and Environment=, so on the jemalloc
 * it preloads); a second cluster measures the same relay on glibc's malloc for comparison, and the floor (a
 * bare TLS server, bench/tls-floor.ts) runs with the unit's options and environment too.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { PortwayCluster, relayUnitNodeArgs, unitEnvironment } from '../devtools';
import { apiRequest } from '../shared/https-json';
import type { BenchContext } from './context';
import { NOTES_MEMORY } from './notes-baselines';
import { readPssKiB, readRssKiB } from './proc-stats';
import type { ResultRow } from './report';
import { median } from './stats';
import { type TrackedChild, spawnTracked } from './teardown';
import { measureTlsFloor } from './tls-floor';

const TARGET_KIB_PER_AGENT = 64;
const RSS_SAMPLES = 5;
const RSS_SAMPLE_GAP_MS = 400;
const ENROLL_TIMEOUT_MS = 240_000;
const CONNECT_TIMEOUT_MS = 180_000;
const ONLINE_POLL_TIMEOUT_MS = 60_000;
const FLEET_CONCURRENCY = 32;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait for a JSON line `{"event": event}` (or an error line) from the fleet process. */
async function fleetEvent(fleet: TrackedChild, event: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const line of fleet.stdout().split('\n')) {
      if (!line.startsWith('{')) continue;
      const json = JSON.parse(line) as Record<string, unknown>;
      if (json.event === event) return json;
      if (json.event === 'error') throw new Error(`fake agents: ${String(json.message)}`);
    }
    if (fleet.child.exitCode !== null) throw new Error(`fake agents exited ${fleet.child.exitCode}: ${fleet.stderr().slice(-500)}`);
    await sleep(100); // poll interval of a bounded wait
  }
  throw new Error(`fake agents: no ${event} within ${timeoutMs} ms`);
}

async function settledRss(pid: number, settleMs: number): Promise<{ rssKiB: number; pssKiB?: number; samples: number[] }> {
  await sleep(settleMs);
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i++) {
    if (i > 0) await sleep(RSS_SAMPLE_GAP_MS);
    samples.push(readRssKiB(pid));
  }
  const pss = readPssKiB(pid);
  return { rssKiB: median(samples), samples, ...(pss === undefined ? {} : { pssKiB: pss }) };
}

/** Poll the relay API until `want` devices are online (bounded). */
async function waitOnline(cluster: PortwayCluster, caPem: string, want: number): Promise<number> {
  const deadline = Date.now() + ONLINE_POLL_TIMEOUT_MS;
  let online = 0;
  while (Date.now() < deadline) {
    const { devices } = await apiRequest<{ devices: { online: boolean }[] }>({ relay: { host: '127.0.0.1', port: cluster.relayPort }, caPem, method: 'GET', path: '/v1/devices', token: cluster.token, timeoutMs: 15_000 });
    online = devices.filter((d) => d.online).length;
    if (online >= want) return online;
    await sleep(500); // poll interval of a bounded wait
  }
  throw new Error(`only ${online} of ${want} devices online at the relay after ${ONLINE_POLL_TIMEOUT_MS} ms`);
}

interface RelayMemory {
  readonly perAgentKiB: number;
  readonly perAgentPssKiB: number | undefined;
  readonly base: Awaited<ReturnType<typeof settledRss>>;
  readonly loaded: Awaited<ReturnType<typeof settledRss>>;
  readonly enrollMs: unknown;
  readonly online: Record<string, unknown>;
  readonly seen: number;
  readonly fleetRssKiB: number;
  /** The preloaded library if the relay really mapped it (a missing one is only a loader warning). */
  readonly preloaded?: string;
}

/** One relay measurement (see the header) with `relayEnv` as the relay's environment. */
async function measureRelay(ctx: BenchContext, label: string, relayEnv: Readonly<Record<string, string>>): Promise<RelayMemory> {
  const n = ctx.options.agents;
  const dir = path.join(await ctx.env.dir(), `memory-cluster-${label}`);
  const cluster = await PortwayCluster.start({ dir, deviceName: 'real-agent', services: [], relayNodeArgs: relayUnitNodeArgs(), relayEnv });
  ctx.teardown.add(`memory cluster (${label})`, () => cluster.stop());
  const caPem = await readFile(path.join(cluster.relayDir, 'ca.crt'), 'utf8');
  const enrollKey = (await cluster.mustRun(['relay', 'enroll-key', 'create', '--data', cluster.relayDir, '--owner', 'alice', '--uses', String(n)])).stdout.trim();

  const fleet = spawnTracked(ctx.teardown, process.execPath, [path.join(__dirname, 'fake-agents.js')], { stdio: ['pipe', 'pipe', 'pipe'] });
  fleet.child.stdin?.on('error', () => undefined); // the fleet exiting early shows in fleetEvent
  fleet.child.stdin?.write(`${JSON.stringify({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey, count: n, concurrency: FLEET_CONCURRENCY })}\n`);
  ctx.progress(`memory (${label}): enrolling ${n} fake devices`);
  const enrolled = await fleetEvent(fleet, 'enrolled', ENROLL_TIMEOUT_MS);
  ctx.progress(`memory (${label}): enrolled ${n} in ${String(enrolled.ms)} ms; restarting the relay for a clean baseline`);

  await cluster.relay?.stop('SIGTERM', 10_000);
  const relay = await cluster.startRelay();
  const relayPid = relay.child.pid as number;
  await waitOnline(cluster, caPem, 1);
  const base = await settledRss(relayPid, ctx.options.memorySettleS * 1000);
  ctx.progress(`memory (${label}): relay RSS with 0 fake agents ${base.rssKiB} KiB`);

  fleet.child.stdin?.write('connect\n');
  const online = await fleetEvent(fleet, 'online', CONNECT_TIMEOUT_MS);
  const seen = await waitOnline(cluster, caPem, n + 1);
  const loaded = await settledRss(relayPid, ctx.options.memorySettleS * 1000);
  const preload = relayEnv.LD_PRELOAD;
  const preloaded = preload !== undefined && (await readFile(`/proc/${relayPid}/maps`, 'utf8')).includes(`/${preload}`) ? preload : undefined;
  const fleetRssKiB = readRssKiB(fleet.child.pid as number);
  const perAgentKiB = (loaded.rssKiB - base.rssKiB) / n;
  const perAgentPssKiB = loaded.pssKiB !== undefined && base.pssKiB !== undefined ? (loaded.pssKiB - base.pssKiB) / n : undefined;
  ctx.progress(`memory (${label}): relay RSS with ${n} agents ${loaded.rssKiB} KiB -> ${perAgentKiB.toFixed(1)} KiB per agent (fleet online ${String(online.count)} in ${String(online.ms)} ms)`);
  fleet.child.stdin?.end('stop\n');
  await Promise.race([fleet.exited, sleep(20_000)]);
  await fleet.stop();
  await cluster.stop();
  return { perAgentKiB, perAgentPssKiB, base, loaded, enrollMs: enrolled.ms, online, seen, fleetRssKiB, ...(preloaded === undefined ? {} : { preloaded }) };
}

/** The relay's environment without the unit's LD_PRELOAD: glibc's malloc. */
function withoutPreload(env: Readonly<Record<string, string>>): Record<string, string> {
  const { LD_PRELOAD: _preload, ...rest } = env;
  return rest;
}

export async function runMemory(ctx: BenchContext): Promise<ResultRow[]> {
  const n = ctx.options.agents;
  // As systemd/portway-relay.service runs it: its Node options and its Environment= (LD_PRELOAD=libjemalloc.so.2).
  const unitEnv = unitEnvironment('portway-relay.service');
  const unit = await measureRelay(ctx, 'unit', unitEnv);
  const allocator = unit.preloaded ?? (unitEnv.LD_PRELOAD === undefined ? 'glibc malloc' : `glibc malloc: ${unitEnv.LD_PRELOAD} is not installed`);
  const glibc = unitEnv.LD_PRELOAD === undefined ? undefined : await measureRelay(ctx, 'glibc', withoutPreload(unitEnv));

  ctx.progress(`memory: the floor, a bare Node TLS server holding ${n} idle mutual-TLS connections`);
  const floorDir = path.join(await ctx.env.dir(), 'tls-floor');
  await mkdir(floorDir, { recursive: true });
  const floorKiB = await measureTlsFloor(ctx.teardown, floorDir, n, relayUnitNodeArgs(), unitEnv);

  ctx.record('memory', { floorKiBPerConnection: floorKiB, agents: n, allocator, unit, glibc });
  const row = (m: RelayMemory, path: string, comparison: string, isTarget: boolean): ResultRow => ({
    section: 'memory',
    measurement: `relay RSS per idle agent, N=${n} (MQTT/TLS control connection each)`,
    path,
    result: `${m.perAgentKiB.toFixed(1)} KiB`,
    values: { perAgentKiB: m.perAgentKiB, perAgentPssKiB: m.perAgentPssKiB, rss0KiB: m.base.rssKiB, rssNKiB: m.loaded.rssKiB, agents: n },
    comparison: `RSS ${(m.base.rssKiB / 1024).toFixed(1)} → ${(m.loaded.rssKiB / 1024).toFixed(1)} MiB${m.perAgentPssKiB === undefined ? '' : `; PSS ${m.perAgentPssKiB.toFixed(1)} KiB/agent`}${comparison}`,
    ...(isTarget ? { target: `≤ ${TARGET_KIB_PER_AGENT} KiB`, targetMet: m.perAgentKiB <= TARGET_KIB_PER_AGENT } : { target: 'comparison' }),
    notes: NOTES_MEMORY,
    check: `enroll ${(Number(m.enrollMs) / 1000).toFixed(1)} s, connect ${(Number(m.online.ms) / 1000).toFixed(1)} s; fleet process ${(m.fleetRssKiB / 1024).toFixed(0)} MiB`,
  });
  const rows = [row(unit, `Portway relay (as its unit runs it: ${allocator})`, `; bare Node mutual-TLS server, same run and allocator: ${floorKiB.toFixed(1)} KiB per idle connection`, true)];
  if (glibc) rows.push(row(glibc, 'Portway relay on glibc malloc (no LD_PRELOAD)', '', false));
  return rows;
}
