/**
 * Where the relay's memory per idle agent goes: `npm run build --silent && node dist/scripts/relay-memory-probe.js [N]`
 * (default N 1000). The set-up is bench/memory.ts's (a cluster with one real agent, N devices enrolled by
 * bench/fake-agents.ts, the relay restarted with the Node options and `Environment=` of
 * systemd/portway-relay.service, then N control connections), and at 0 and at N agents it reads
 * /proc/<relay>/status (VmRSS) and smaps_rollup (anonymous, file-backed) and has the relay write a heap
 * snapshot (`--heapsnapshot-signal`; writing one runs a full GC). It prints one JSON line: RSS per agent,
 * the JS heap per agent (snapshot total) and the biggest per-agent differences by node type and constructor.
 * Environment: RELAY_NODE_OPTIONS replaces the unit's Node options, RELAY_ENV (KEY=VALUE,...) replaces its
 * environment. PROBE_MODE: `snapshot` (default, heap snapshots: they perturb RSS afterwards, so read the
 * RSS figures from another mode), `usage` (a preload in the relay reports process.memoryUsage() and V8's
 * space sizes, before and after a forced GC, on SIGUSR2: RSS split into V8 heap, external and the rest),
 * `rss` (RSS only, as the benchmark reads it).
 */
import { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeTempDir, PortwayCluster, relayUnitNodeArgs, unitEnvironment } from '../devtools';
import { spawnTracked, Teardown } from '../bench/teardown';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const SETTLE_MS = 3_000;
const STEP_TIMEOUT_MS = 240_000;
/** Loaded into the relay with --require in `usage` mode. */
const USAGE_PRELOAD = `
const fs = require('node:fs'); const v8 = require('node:v8');
process.on('SIGUSR2', () => {
  const before = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, Math.round(s.space_size / 1024)]));
  global.gc();
  const after = process.memoryUsage();
  fs.appendFileSync(process.env.PROBE_USAGE_FILE, JSON.stringify({ before, spaces, after }) + '\\n');
});
`;

function smaps(pid: number): Record<string, number> {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8') + readFileSync(`/proc/${pid}/status`, 'utf8');
  const out: Record<string, number> = {};
  for (const key of ['VmRSS', 'RssAnon', 'RssFile', 'Pss', 'Anonymous']) {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    if (m) out[key] = Number(m[1]);
  }
  return out;
}

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count by "type:name" (names of strings and code folded into their type). */
function heapTotals(file: string): Map<string, { size: number; count: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as HeapSnapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const totals = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt] as number] ?? '?';
    const rawName = snap.strings[snap.nodes[i + nameAt] as number] ?? '?';
    const name = type === 'object' || type === 'native' || type === 'closure' || type === 'hidden' || type === 'array' ? rawName.slice(0, 60) : '';
    const key = `${type}:${name}`;
    const entry = totals.get(key) ?? { size: 0, count: 0 };
    entry.size += snap.nodes[i + sizeAt] as number;
    entry.count += 1;
    totals.set(key, entry);
  }
  return totals;
}

async function snapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const added = readdirSync(dir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    if (added.length > 0) {
      const file = path.join(dir, added[0] as string);
      // Written in one go: wait until the size stops changing.
      let size = -1;
      for (;;) {
        await sleep(500);
        const now = readFileSync(file).length;
        if (now === size && now > 0) return file;
        size = now;
      }
    }
    if (Date.now() > deadline) throw new Error('no heap snapshot');
    await sleep(200);
  }
}

async function fleetEvent(lines: () => string, event: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    for (const line of lines().split('\n')) {
      if (!line.startsWith('{')) continue;
      const json = JSON.parse(line) as Record<string, unknown>;
      if (json.event === event) return json;
      if (json.event === 'error') throw new Error(String(json.message));
    }
    await sleep(100);
  }
  throw new Error(`no ${event}`);
}

async function main(n: number): Promise<void> {
  const mode = process.env.PROBE_MODE ?? 'snapshot';
  const withSnapshots = mode === 'snapshot';
  const dir = await makeTempDir('portway-memprobe-');
  const teardown = new Teardown();
  try {
    const nodeArgs = process.env.RELAY_NODE_OPTIONS !== undefined ? process.env.RELAY_NODE_OPTIONS.split(/\s+/).filter(Boolean) : relayUnitNodeArgs();
    const relayEnv: Record<string, string> = process.env.RELAY_ENV !== undefined ? Object.fromEntries(process.env.RELAY_ENV.split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) : unitEnvironment('portway-relay.service');
    const usageFile = path.join(dir.path, 'usage.jsonl');
    if (mode === 'usage') {
      writeFileSync(path.join(dir.path, 'usage-preload.js'), USAGE_PRELOAD);
      relayEnv.PROBE_USAGE_FILE = usageFile;
    }
    const usage = async (): Promise<Record<string, unknown> | undefined> => {
      if (mode !== 'usage') return undefined;
      process.kill(pid, 'SIGUSR2');
      await sleep(1_500);
      const lines = readFileSync(usageFile, 'utf8').trim().split('\n');
      return JSON.parse(lines[lines.length - 1] as string) as Record<string, unknown>;
    };
    const snapArgs = withSnapshots ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir.path}`] : mode === 'usage' ? ['--expose-gc', '--require', path.join(dir.path, 'usage-preload.js')] : [];
    let pid = 0;
    const cluster = await PortwayCluster.start({ dir: path.join(dir.path, 'cluster'), deviceName: 'real-agent', services: [], relayNodeArgs: [...nodeArgs, ...snapArgs], relayEnv });
    teardown.add('cluster', () => cluster.stop());
    const enrollKey = (await cluster.mustRun(['relay', 'enroll-key', 'create', '--data', cluster.relayDir, '--owner', 'alice', '--uses', String(n)])).stdout.trim();
    const fleet = spawnTracked(teardown, process.execPath, [path.join(__dirname, '..', 'bench', 'fake-agents.js')], { stdio: ['pipe', 'pipe', 'pipe'] });
    fleet.child.stdin?.write(`${JSON.stringify({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey, count: n, concurrency: 32 })}\n`);
    await fleetEvent(fleet.stdout, 'enrolled');
    await cluster.relay?.stop('SIGTERM', 10_000);
    const relay = await cluster.startRelay();
    pid = relay.child.pid as number;
    await sleep(SETTLE_MS + 2_000);
    const base = smaps(pid);
    const baseUsage = await usage();
    const baseSnap = withSnapshots ? await snapshot(pid, dir.path) : undefined;
    const baseAfterSnap = smaps(pid);
    fleet.child.stdin?.write('connect\n');
    const online = await fleetEvent(fleet.stdout, 'online');
    await sleep(SETTLE_MS);
    const loaded = smaps(pid);
    const loadedUsage = await usage();
    const loadedSnap = withSnapshots ? await snapshot(pid, dir.path) : undefined;
    const loadedAfterSnap = smaps(pid);
    const perAgent = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
      Object.fromEntries(Object.keys(a).map((k) => [k, Number((((b[k] ?? 0) - (a[k] ?? 0)) / n).toFixed(2))]));
    const result: Record<string, unknown> = { n, online: online.count, nodeArgs, relayEnv, base, loaded, perAgentKiB: perAgent(base, loaded), perAgentAfterGcKiB: perAgent(baseAfterSnap, loadedAfterSnap), baseUsage, loadedUsage };
    if (baseSnap && loadedSnap) {
      const a = heapTotals(baseSnap);
      const b = heapTotals(loadedSnap);
      let total = 0;
      const diffs: [string, number, number][] = [];
      for (const [key, value] of b) {
        const before = a.get(key) ?? { size: 0, count: 0 };
        total += value.size - before.size;
        diffs.push([key, (value.size - before.size) / n, (value.count - before.count) / n]);
      }
      for (const [key, value] of a) if (!b.has(key)) total -= value.size;
      diffs.sort((x, y) => y[1] - x[1]);
      result.heapPerAgentBytes = Math.round(total / n);
      result.heapTop = diffs.slice(0, 45).map(([key, bytes, count]) => `${bytes.toFixed(0).padStart(6)} B ${count.toFixed(2).padStart(6)}x ${key}`);
      // PROBE_KEEP=DIR keeps the two snapshots (base.heapsnapshot, loaded.heapsnapshot) for a closer look.
      const keep = process.env.PROBE_KEEP;
      if (keep) {
        renameSync(baseSnap, path.join(keep, 'base.heapsnapshot'));
        renameSync(loadedSnap, path.join(keep, 'loaded.heapsnapshot'));
      } else {
        rmSync(baseSnap);
        rmSync(loadedSnap);
      }
    }
    fleet.child.stdin?.end('stop\n');
    await Promise.race([fleet.exited, sleep(20_000)]);
    process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
  } finally {
    await teardown.run();
    await dir.remove();
  }
}

main(Number(process.argv[2] ?? 1000)).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
