/**
 * `npm run bench [-- --only throughput,latency] [options]`: Portway against its baselines, all measured
 * in the same run on this machine, printed as ONE markdown table on stdout (progress goes to stderr) and
 * written as JSON to .bench-out/. See docs/benchmark.md for what each figure means.
 *
 * Sections, in run order: throughput, latency (loopback), cold, latency-delay, memory, udp, serial. `latency` selects
 * both latency sections. Everything started is stopped at the end, on SIGINT/SIGTERM and after
 * --max-minutes; a final sweep kills any descendant process still alive.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { BenchContext, BenchOptions } from './context';
import { runColdStart } from './cold-start';
import { BenchEnvironment } from './environment';
import { runLatencyDelay, runLatencyLoopback } from './latency';
import { runMemory } from './memory';
import { machineInfo, renderTable, type ResultRow, type SectionName, writeJson } from './report';
import { Teardown } from './teardown';
import { runThroughput } from './throughput';
import { runUdp } from './udp';
import { runSerial } from './serial';

const SECTION_ORDER: readonly SectionName[] = ['throughput', 'latency', 'cold', 'latency-delay', 'memory', 'udp', 'serial'];
const SECTION_RUNNERS: Record<SectionName, (ctx: BenchContext) => Promise<ResultRow[]>> = {
  throughput: runThroughput,
  latency: runLatencyLoopback,
  cold: runColdStart,
  'latency-delay': runLatencyDelay,
  memory: runMemory,
  udp: runUdp,
  serial: runSerial,
};
const ALIASES: Record<string, readonly SectionName[]> = { latency: ['latency', 'latency-delay'], 'latency-loopback': ['latency'], all: SECTION_ORDER };

const USAGE = `usage: npm run bench -- [options]
  --only LIST          sections: throughput, latency (= latency-loopback + latency-delay), cold, memory, udp, serial (default: all)
  --duration S         iperf3 seconds per run (5)
  --reps N             runs per throughput figure (1)
  --retries N          extra attempts for a contaminated or failed throughput run (1)
  --samples N          loopback latency samples (200; 10 warm-up)
  --delay-samples N    latency samples with delay (50)
  --delay-ms MS        one-way delay per link (10)
  --agents N           fake agents for the memory section (1000)
  --memory-settle S    idle seconds before each relay RSS reading (3)
  --cold-samples N     cold ssh samples per path (10)
  --max-foreign PCT    machine busy % that counts as quiet / flags a run (10)
  --quiet-wait S       longest wait for a quiet machine before each run (10)
  --out DIR            JSON output directory (.bench-out)
  --max-minutes M      hard stop (15)`;

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`--${name} must be a whole number, got ${JSON.stringify(text)}`);
  return n;
}

function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      only: { type: 'string' },
      duration: { type: 'string' },
      reps: { type: 'string' },
      retries: { type: 'string' },
      samples: { type: 'string' },
      'delay-samples': { type: 'string' },
      'delay-ms': { type: 'string' },
      agents: { type: 'string' },
      'memory-settle': { type: 'string' },
      'cold-samples': { type: 'string' },
      'quiet-wait': { type: 'string' },
      'max-foreign': { type: 'string' },
      out: { type: 'string' },
      'max-minutes': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const sections = new Set<SectionName>();
  for (const name of (values.only ?? 'all').split(',').map((s) => s.trim()).filter(Boolean)) {
    const expanded = ALIASES[name] ?? (SECTION_ORDER.includes(name as SectionName) ? [name as SectionName] : undefined);
    if (!expanded) throw new RangeError(`--only: unknown section ${JSON.stringify(name)} (throughput, latency, latency-loopback, latency-delay, cold, memory, udp, serial)`);
    for (const s of expanded) sections.add(s);
  }
  return {
    sections,
    iperfSeconds: Math.max(1, positiveInt('duration', values.duration, 5)),
    reps: Math.max(1, positiveInt('reps', values.reps, 1)),
    retries: positiveInt('retries', values.retries, 1),
    latencySamples: Math.max(1, positiveInt('samples', values.samples, 200)),
    latencyWarmup: 10,
    delaySamples: Math.max(1, positiveInt('delay-samples', values['delay-samples'], 50)),
    delayMs: Math.max(1, positiveInt('delay-ms', values['delay-ms'], 10)),
    agents: Math.max(1, positiveInt('agents', values.agents, 1000)),
    memorySettleS: positiveInt('memory-settle', values['memory-settle'], 3),
    quietWaitS: positiveInt('quiet-wait', values['quiet-wait'], 10),
    coldSamples: Math.max(1, positiveInt('cold-samples', values['cold-samples'], 10)),
    maxForeignPct: positiveInt('max-foreign', values['max-foreign'], 10),
    outDir: path.resolve(values.out ?? '.bench-out'),
    maxMinutes: Math.max(1, positiveInt('max-minutes', values['max-minutes'], 15)),
  };
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const startedAt = new Date();
  const started = performance.now();
  const teardown = new Teardown();
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`bench: ${signal}, stopping everything\n`);
    abort.abort(new Error(signal));
    void teardown.run().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const hardStop = setTimeout(() => {
    process.stderr.write(`bench: --max-minutes ${options.maxMinutes} reached, stopping everything\n`);
    abort.abort(new Error('time limit'));
    void teardown.run().then(() => process.exit(1));
  }, options.maxMinutes * 60_000);
  hardStop.unref();

  const raw: Record<string, unknown> = {};
  const sectionTimes: Record<string, number> = {};
  const failures: Record<string, string> = {};
  const ctx: BenchContext = {
    options,
    env: new BenchEnvironment(teardown),
    teardown,
    quiet: { maxForeignPct: options.maxForeignPct, windowMs: 1_000, maxWaitMs: options.quietWaitS * 1000, signal: abort.signal },
    signal: abort.signal,
    progress: (message) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`),
    record: (section, data) => {
      raw[section] = data;
    },
  };

  const rows: ResultRow[] = [];
  try {
    for (const section of SECTION_ORDER) {
      if (!options.sections.has(section)) continue;
      const t0 = performance.now();
      ctx.progress(`section ${section}`);
      try {
        rows.push(...(await SECTION_RUNNERS[section](ctx)));
      } catch (err) {
        if (abort.signal.aborted) throw err;
        failures[section] = (err as Error).message;
        ctx.progress(`section ${section} FAILED: ${(err as Error).stack ?? String(err)}`);
      }
      sectionTimes[section] = Math.round((performance.now() - t0) / 100) / 10;
    }
  } finally {
    clearTimeout(hardStop);
    await teardown.run();
  }

  const durationS = Math.round((performance.now() - started) / 100) / 10;
  const table = renderTable(rows);
  const file = await writeJson(options.outDir, {
    startedAt: startedAt.toISOString(),
    durationS,
    sectionTimesS: sectionTimes,
    machine: machineInfo(),
    options: { ...options, sections: [...options.sections] },
    failures,
    rows,
    raw,
    table,
  });
  const failed = Object.entries(failures).map(([s, m]) => `\n**${s} failed:** ${m}`).join('');
  process.stdout.write(`${table}\n\nRun time ${Math.floor(durationS / 60)} min ${Math.round(durationS % 60)} s (${Object.entries(sectionTimes).map(([s, t]) => `${s} ${t} s`).join(', ')}); JSON: ${path.relative(process.cwd(), file)}${failed}\n`);
  return Object.keys(failures).length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
