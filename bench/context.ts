/** What every benchmark section gets: options, the shared environment, teardown, the quiet policy. */
import type { BenchEnvironment } from './environment';
import type { SectionName } from './report';
import type { QuietPolicy } from './run-check';
import type { Teardown } from './teardown';

export interface BenchOptions {
  readonly sections: ReadonlySet<SectionName>;
  /** iperf3 -t per run, seconds. */
  readonly iperfSeconds: number;
  /** Runs per throughput figure (median reported). */
  readonly reps: number;
  /** Extra attempts for a run flagged as contaminated (or failed). */
  readonly retries: number;
  readonly latencySamples: number;
  readonly latencyWarmup: number;
  readonly delaySamples: number;
  readonly delayMs: number;
  readonly agents: number;
  /** Seconds the relay idles before its RSS is read (memory section). */
  readonly memorySettleS: number;
  readonly coldSamples: number;
  readonly maxForeignPct: number;
  /** Longest wait for a quiet machine before a run, seconds. */
  readonly quietWaitS: number;
  readonly outDir: string;
  readonly maxMinutes: number;
}

export interface BenchContext {
  readonly options: BenchOptions;
  readonly env: BenchEnvironment;
  readonly teardown: Teardown;
  readonly quiet: QuietPolicy;
  readonly signal: AbortSignal;
  /** Progress line on stderr (stdout carries only the table). */
  progress(message: string): void;
  /** Raw per-run data for the JSON file. */
  record(section: string, data: unknown): void;
}
