/**
 * Every measured run goes through `checkedRun`: wait (bounded) for a quiet machine, snapshot CPU, run,
 * snapshot again. The result carries how busy the machine was before, how much CPU other processes took
 * during the run (foreign), and the CPU each of our processes used, named by role.
 */
import { clockTicksPerSecond, cpuBetween, descendantsOf, type ProcEntry, readProcTable, takeCpuSnapshot, waitForQuiet } from './proc-stats';

export interface QuietPolicy {
  /** Machine busy % (all CPUs) that counts as quiet before a run, and foreign % that flags a run. */
  readonly maxForeignPct: number;
  readonly windowMs: number;
  readonly maxWaitMs: number;
  readonly signal?: AbortSignal;
}

export interface RunCheck {
  readonly wallMs: number;
  readonly busyBeforePct: number;
  readonly waitedMs: number;
  readonly foreignPct: number;
  readonly oursPct: number;
  readonly isContaminated: boolean;
  /** % of one core per role (processes summed), e.g. { relay: 62, agent: 49, fwd: 44 }. */
  readonly cpuByRole: Record<string, number>;
}

/** pid -> role for the processes of a path; descendants inherit the role as `role>comm`. */
export type RoleMap = ReadonlyMap<number, string>;

function roleOf(pid: number, roles: RoleMap, parents: ReadonlyMap<number, number>, comm: string): string | undefined {
  let current: number | undefined = pid;
  for (let depth = 0; current !== undefined && depth < 32; depth++) {
    const role = roles.get(current);
    if (role !== undefined) return current === pid ? role : `${role}>${comm}`;
    current = parents.get(current);
  }
  return undefined;
}

/**
 * `sampleEveryMs`: also read our processes during the run, so ones that exit before the end (an iperf3
 * client) still get their CPU counted by role. Off for latency runs (reading /proc would add jitter).
 */
export async function checkedRun<T>(policy: QuietPolicy, roles: () => RoleMap, fn: () => Promise<T>, options: { sampleEveryMs?: number } = {}): Promise<{ value: T; check: RunCheck }> {
  const quiet = await waitForQuiet({ maxBusyPct: policy.maxForeignPct, windowMs: policy.windowMs, maxWaitMs: policy.maxWaitMs, ...(policy.signal ? { signal: policy.signal } : {}) });
  const before = takeCpuSnapshot();
  const lastSeen = new Map<number, ProcEntry>(before.tree);
  const remember = (tree: ReadonlyMap<number, ProcEntry>): void => {
    for (const [pid, e] of tree) lastSeen.set(pid, e);
  };
  const sampler = options.sampleEveryMs ? setInterval(() => remember(descendantsOf(readProcTable(), process.pid)), options.sampleEveryMs) : undefined;
  let value: T;
  try {
    value = await fn();
  } finally {
    clearInterval(sampler);
  }
  const after = takeCpuSnapshot();
  remember(after.tree);
  const usage = cpuBetween(before, after);
  const roleMap = roles();
  const wallS = Math.max(0.001, usage.wallMs / 1000);
  const hz = clockTicksPerSecond();
  const parents = new Map<number, number>();
  for (const e of lastSeen.values()) parents.set(e.pid, e.ppid);
  const cpuByRole: Record<string, number> = {};
  for (const e of lastSeen.values()) {
    const pct = ((e.selfTicks - (before.tree.get(e.pid)?.selfTicks ?? 0)) / hz / wallS) * 100;
    const role = roleOf(e.pid, roleMap, parents, e.comm);
    if (role === undefined || pct < 0.5) continue;
    cpuByRole[role] = round1((cpuByRole[role] ?? 0) + pct);
  }
  return {
    value,
    check: {
      wallMs: Math.round(usage.wallMs),
      busyBeforePct: round1(quiet.busyBeforePct),
      waitedMs: Math.round(quiet.waitedMs),
      foreignPct: round1(usage.foreignPct),
      oursPct: round1(usage.oursPct),
      isContaminated: usage.foreignPct > policy.maxForeignPct || !quiet.isQuiet,
      cpuByRole,
    },
  };
}

export const round1 = (x: number): number => Math.round(x * 10) / 10;
