/**
 * Section 3, relay memory per idle agent: a fresh Portway cluster of its own (relay + one real agent),
 * N devices enrolled by the fake fleet (bench/fake-agents.ts, one child process), then
 *   1. the relay is restarted, so the baseline is a fresh relay process holding the enrolled store and
 *      the enrollment's garbage is not counted; RSS_0 is read once the real agent is back online;
 *   2. the fleet opens its N control connections; RSS_N is read once the relay's API lists all of them
 *      online;
 *   per agent = (RSS_N - RSS_0) / N, from /proc/<relay pid>/status (VmRSS), each reading the median of 5
 *   samples taken after the relay settled. No forced GC (the relay runs as in production).
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { PortwayCluster, relayUnitNodeArgs } from '../devtools';
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

export async function runMemory(ctx: BenchContext): Promise<ResultRow[]> {
  const n = ctx.options.agents;
  const dir = await ctx.env.dir();
  const cluster = await PortwayCluster.start({ dir: path.join(dir, 'memory-cluster'), deviceName: 'real-agent', services: [], relayNodeArgs: relayUnitNodeArgs() });
  ctx.teardown.add('memory cluster', () => cluster.stop());
  const caPem = await readFile(path.join(cluster.relayDir, 'ca.crt'), 'utf8');
  const enrollKey = (await cluster.mustRun(['relay', 'enroll-key', 'create', '--data', cluster.relayDir, '--owner', 'alice', '--uses', String(n)])).stdout.trim();

  const fleet = spawnTracked(ctx.teardown, process.execPath, [path.join(__dirname, 'fake-agents.js')], { stdio: ['pipe', 'pipe', 'pipe'] });
  fleet.child.stdin?.on('error', () => undefined); // the fleet exiting early shows in fleetEvent
  fleet.child.stdin?.write(`${JSON.stringify({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey, count: n, concurrency: FLEET_CONCURRENCY })}\n`);
  ctx.progress(`memory: enrolling ${n} fake devices`);
  const enrolled = await fleetEvent(fleet, 'enrolled', ENROLL_TIMEOUT_MS);
  ctx.progress(`memory: enrolled ${n} in ${String(enrolled.ms)} ms; restarting the relay for a clean baseline`);

  await cluster.relay?.stop('SIGTERM', 10_000);
  const relay = await cluster.startRelay();
  const relayPid = relay.child.pid as number;
  await waitOnline(cluster, caPem, 1);
  const base = await settledRss(relayPid, ctx.options.memorySettleS * 1000);
  ctx.progress(`memory: relay RSS with 0 fake agents ${base.rssKiB} KiB`);

  fleet.child.stdin?.write('connect\n');
  const online = await fleetEvent(fleet, 'online', CONNECT_TIMEOUT_MS);
  const seen = await waitOnline(cluster, caPem, n + 1);
  const loaded = await settledRss(relayPid, ctx.options.memorySettleS * 1000);
  const fleetRss = readRssKiB(fleet.child.pid as number);
  const perAgent = (loaded.rssKiB - base.rssKiB) / n;
  const perAgentPss = loaded.pssKiB !== undefined && base.pssKiB !== undefined ? (loaded.pssKiB - base.pssKiB) / n : undefined;
  ctx.progress(`memory: relay RSS with ${n} agents ${loaded.rssKiB} KiB -> ${perAgent.toFixed(1)} KiB per agent (fleet online ${String(online.count)} in ${String(online.ms)} ms)`);
  fleet.child.stdin?.end('stop\n');
  await Promise.race([fleet.exited, sleep(20_000)]);
  await fleet.stop();
  await cluster.stop();

  ctx.progress(`memory: the floor, a bare Node TLS server holding ${n} idle mutual-TLS connections`);
  const floorDir = path.join(dir, 'tls-floor');
  await mkdir(floorDir, { recursive: true });
  const floorKiB = await measureTlsFloor(ctx.teardown, floorDir, n, relayUnitNodeArgs());

  ctx.record('memory', { floorKiBPerConnection: floorKiB, agents: n, enrollMs: enrolled.ms, connectMs: online.ms, fleetOnline: online.count, fleetFailed: online.failed, relayOnlineSeen: seen, base, loaded, fleetProcessRssKiB: fleetRss, perAgentKiB: perAgent, perAgentPssKiB: perAgentPss });
  return [
    {
      section: 'memory',
      measurement: `relay RSS per idle agent, N=${n} (MQTT/TLS control connection each)`,
      path: 'Portway relay',
      result: `${perAgent.toFixed(1)} KiB`,
      values: { perAgentKiB: perAgent, perAgentPssKiB: perAgentPss, rss0KiB: base.rssKiB, rssNKiB: loaded.rssKiB, agents: n },
      comparison: `RSS ${(base.rssKiB / 1024).toFixed(1)} → ${(loaded.rssKiB / 1024).toFixed(1)} MiB${perAgentPss === undefined ? '' : `; PSS ${perAgentPss.toFixed(1)} KiB/agent`}; bare Node mutual-TLS server, same run: ${floorKiB.toFixed(1)} KiB per idle connection`,
      target: `≤ ${TARGET_KIB_PER_AGENT} KiB`,
      targetMet: perAgent <= TARGET_KIB_PER_AGENT,
      notes: NOTES_MEMORY,
      check: `enroll ${(Number(enrolled.ms) / 1000).toFixed(1)} s, connect ${(Number(online.ms) / 1000).toFixed(1)} s; fleet process ${(fleetRss / 1024).toFixed(0)} MiB`,
    },
  ];
}
