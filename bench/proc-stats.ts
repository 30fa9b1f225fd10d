/**
 * What the benchmark reads from /proc: CPU time of every process, the machine's CPU counters, RSS/PSS.
 *
 * CPU accounting ("is the machine quiet?"): a snapshot holds /proc/stat's cpu line and, for every process
 * of our own tree (this process and its descendants), utime+stime and cutime+cstime. Time of a child that
 * exits is added to its parent's cutime/cstime when the parent reaps it, so
 *   ours = sum over tree(b) of (self + reaped children) - the same sum over tree(a)
 * counts processes that started or ended between the two snapshots without sampling in between.
 * foreign = machine busy time - ours: what other processes (other users of the box) used meanwhile.
 * Percentages of the machine are of all CPUs together (100 % = every core busy); per-process figures are
 * % of one core, as `top` shows them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

export interface ProcEntry {
  readonly pid: number;
  readonly ppid: number;
  readonly comm: string;
  /** R, S, D, Z (zombie), ... */
  readonly state: string;
  /** utime + stime, clock ticks. */
  readonly selfTicks: number;
  /** cutime + cstime (reaped children), clock ticks. */
  readonly childTicks: number;
}

export interface CpuSnapshot {
  readonly atMs: number;
  readonly totalTicks: number;
  readonly idleTicks: number;
  readonly tree: ReadonlyMap<number, ProcEntry>;
}

export interface CpuUsage {
  readonly wallMs: number;
  /** Every process on the machine, % of all CPUs. */
  readonly busyPct: number;
  /** Our process tree, % of all CPUs. */
  readonly oursPct: number;
  /** Everything else, % of all CPUs. */
  readonly foreignPct: number;
  /** Per process of our tree alive at the end, % of one core. */
  readonly perProcess: readonly { pid: number; comm: string; pct: number }[];
}

export const CPU_COUNT = os.availableParallelism();

let clockTicks: number | undefined;
/** USER_HZ (clock ticks per second) for /proc figures; 100 on every common Linux build. */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 }).trim()) || 100;
    } catch {
      clockTicks = 100; // getconf missing: Linux's USER_HZ is 100
    }
  }
  return clockTicks;
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined; // the process ended meanwhile
    throw err;
  }
}

export function parseStat(pid: number, text: string): ProcEntry {
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const f = text.slice(close + 2).split(' '); // f[0] = state (field 3)
  const num = (i: number): number => Number(f[i] ?? 0);
  return { pid, ppid: num(1), comm, state: f[0] ?? '?', selfTicks: num(11) + num(12), childTicks: num(13) + num(14) };
}

/** Every process on the machine (pid -> entry). */
export function readProcTable(): Map<number, ProcEntry> {
  const table = new Map<number, ProcEntry>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const text = readOptional(`/proc/${name}/stat`);
    if (text !== undefined) table.set(Number(name), parseStat(Number(name), text));
  }
  return table;
}

/** `root` and all its descendants that are alive in `table`. */
export function descendantsOf(table: ReadonlyMap<number, ProcEntry>, root: number): Map<number, ProcEntry> {
  const children = new Map<number, number[]>();
  for (const e of table.values()) {
    const list = children.get(e.ppid) ?? [];
    list.push(e.pid);
    children.set(e.ppid, list);
  }
  const out = new Map<number, ProcEntry>();
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    const entry = table.get(pid);
    if (!entry || out.has(pid)) continue;
    out.set(pid, entry);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

function readCpuLine(): { total: number; idle: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: (v[3] ?? 0) + (v[4] ?? 0) };
}

export function takeCpuSnapshot(root = process.pid): CpuSnapshot {
  const cpu = readCpuLine();
  const tree = descendantsOf(readProcTable(), root);
  return { atMs: performance.now(), totalTicks: cpu.total, idleTicks: cpu.idle, tree };
}

const treeTicks = (s: CpuSnapshot): number => [...s.tree.values()].reduce((sum, e) => sum + e.selfTicks + e.childTicks, 0);

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuUsage {
  const total = Math.max(1, b.totalTicks - a.totalTicks);
  const busy = total - (b.idleTicks - a.idleTicks);
  const ours = Math.max(0, treeTicks(b) - treeTicks(a));
  const wallMs = b.atMs - a.atMs;
  const hz = clockTicksPerSecond();
  const perProcess = [...b.tree.values()].map((e) => {
    const before = a.tree.get(e.pid)?.selfTicks ?? 0;
    return { pid: e.pid, comm: e.comm, pct: ((e.selfTicks - before) / hz / Math.max(0.001, wallMs / 1000)) * 100 };
  });
  return {
    wallMs,
    busyPct: (busy / total) * 100,
    oursPct: (Math.min(ours, busy) / total) * 100,
    foreignPct: (Math.max(0, busy - ours) / total) * 100,
    perProcess,
  };
}

export interface QuietCheck {
  /** Busy % of the machine (all processes) over the last window before the run. */
  readonly busyBeforePct: number;
  readonly waitedMs: number;
  readonly isQuiet: boolean;
}

/**
 * Wait until the whole machine stays under `maxBusyPct` for one `windowMs` window, at most `maxWaitMs`
 * (bounded: after that the run starts anyway and is flagged).
 */
export async function waitForQuiet(options: { maxBusyPct: number; windowMs: number; maxWaitMs: number; signal?: AbortSignal }): Promise<QuietCheck> {
  const started = performance.now();
  let busy = 100;
  for (let attempt = 0; attempt < 1_000; attempt++) {
    options.signal?.throwIfAborted();
    const a = takeCpuSnapshot();
    await new Promise((resolve) => setTimeout(resolve, options.windowMs));
    busy = cpuBetween(a, takeCpuSnapshot()).busyPct;
    const waited = performance.now() - started;
    if (busy <= options.maxBusyPct) return { busyBeforePct: busy, waitedMs: waited, isQuiet: true };
    if (waited >= options.maxWaitMs) break;
  }
  return { busyBeforePct: busy, waitedMs: performance.now() - started, isQuiet: false };
}

/** VmRSS of a process, KiB. */
export function readRssKiB(pid: number): number {
  const text = readOptional(`/proc/${pid}/status`);
  const m = text === undefined ? null : /^VmRSS:\s+(\d+) kB/m.exec(text);
  if (!m) throw new Error(`no VmRSS for pid ${pid} (process gone?)`);
  return Number(m[1]);
}

/** Pss from smaps_rollup, KiB (undefined where the kernel has no smaps_rollup). */
export function readPssKiB(pid: number): number | undefined {
  const text = readOptional(`/proc/${pid}/smaps_rollup`);
  const m = text === undefined ? null : /^Pss:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) : undefined;
}
