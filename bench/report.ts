/**
 * The one markdown table the benchmark prints, and the JSON file beside it (.bench-out/bench-*.json).
 * Columns: section, measurement, path, result, the same-run comparison, the target and whether it is
 * met, the figure from the baseline notes (context only) and the run check (quiet machine, CPU by role).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export type SectionName = 'throughput' | 'latency' | 'latency-delay' | 'memory' | 'cold' | 'udp' | 'serial';

export interface ResultRow {
  readonly section: SectionName;
  readonly measurement: string;
  readonly path: string;
  /** Formatted result, e.g. "3.41 Gbit/s" or "3.9 / 7.2 ms". */
  readonly result: string;
  /** Numbers behind `result`, for the JSON file. */
  readonly values: Record<string, number | undefined>;
  readonly comparison?: string;
  readonly target?: string;
  readonly targetMet?: boolean;
  readonly notes?: string;
  readonly check?: string;
  readonly isContaminated?: boolean;
}

const SECTION_TITLES: Record<SectionName, string> = {
  throughput: 'throughput',
  latency: 'latency, loopback',
  'latency-delay': 'latency, 10 ms/link',
  memory: 'relay memory',
  cold: 'cold ssh',
  udp: 'UDP',
  serial: 'serial',
};

const cell = (s: string | undefined): string => (s === undefined || s === '' ? '–' : s.replace(/\|/g, '\\|').replace(/\n/g, ' '));

export function renderTable(rows: readonly ResultRow[]): string {
  const header = ['section', 'measurement', 'path', 'result', 'same-run comparison', 'target', 'notes (context only)', 'run check'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const target = r.target === undefined ? undefined : `${r.target}${r.targetMet === undefined ? '' : r.targetMet ? ' ✅' : ' ❌'}`;
    const check = `${r.isContaminated ? '⚠ ' : ''}${r.check ?? ''}`;
    lines.push(`| ${[SECTION_TITLES[r.section], r.measurement, r.path, r.result, r.comparison, target, r.notes, check].map(cell).join(' | ')} |`);
  }
  return lines.join('\n');
}

export function machineInfo(): Record<string, string | number> {
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    openssl: process.versions.openssl ?? '?',
  };
}

export async function writeJson(outDir: string, report: Record<string, unknown>): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(outDir, `bench-${stamp}.json`);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  await writeFile(file, text);
  await writeFile(path.join(outDir, 'bench-latest.json'), text);
  return file;
}

export function fmt(x: number | undefined, digits = 2): string {
  if (x === undefined || !Number.isFinite(x)) return '–';
  return x.toFixed(digits);
}

/** "relay 62, agent 49, fwd 44 % CPU" from a role map, largest first, top `n`. */
export function cpuText(cpu: Record<string, number>, n = 5): string {
  const parts = Object.entries(cpu)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([role, pct]) => `${role} ${Math.round(pct)}`);
  return parts.length ? `CPU% ${parts.join(', ')}` : '';
}

export function checkText(check: { busyBeforePct: number; foreignPct: number; isContaminated: boolean }): string {
  return `${check.isContaminated ? 'contaminated: ' : ''}foreign ${check.foreignPct.toFixed(0)}%, before ${check.busyBeforePct.toFixed(0)}%`;
}
