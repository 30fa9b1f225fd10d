/**
 * Publishes telemetry: a sample every `intervalMs` while the control channel is online, and one at once each
 * time it comes online (so the relay's latest state follows every change of online state). At most one
 * collection runs at a time; a sample that cannot be published is dropped (telemetry is the one thing
 * Portway drops rather than queues), and drops are counted.
 */
import type { DeviceTelemetry } from '../../../protocol';
import type { Logger } from '../../../shared/logger';

export interface TelemetrySink {
  readonly isOnline: boolean;
  publishTelemetry(sample: DeviceTelemetry): Promise<void>;
}

export class TelemetryReporter {
  private state: 'idle' | 'running' | 'stopped' = 'idle';
  private timer: NodeJS.Timeout | undefined;
  private isCollecting = false;
  readonly counts = { published: 0, dropped: 0 };

  constructor(
    private readonly deps: { log: Logger; collector: { collect(): Promise<DeviceTelemetry> }; sink: TelemetrySink },
    private readonly options: { readonly intervalMs: number },
  ) {}

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.timer = setInterval(() => this.report('interval'), this.options.intervalMs);
    this.timer.unref();
  }

  /** The control channel came online: publish a fresh sample now. */
  onOnline(): void {
    this.report('online');
  }

  stop(): void {
    this.state = 'stopped';
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private report(reason: 'interval' | 'online'): void {
    if (this.state !== 'running' || this.isCollecting || !this.deps.sink.isOnline) return;
    this.isCollecting = true;
    const cpuBefore = process.cpuUsage();
    this.deps.collector
      .collect()
      .then((sample) => {
        const cpu = process.cpuUsage(cpuBefore);
        this.deps.log.debug({ reason, collectCpuMs: Math.round((cpu.user + cpu.system) / 100) / 10 }, 'telemetry.collected');
        if (this.state !== 'running' || !this.deps.sink.isOnline) throw new Error('offline');
        return this.deps.sink.publishTelemetry(sample);
      })
      .then(
        () => this.counts.published++,
        (err: unknown) => {
          this.counts.dropped++;
          this.deps.log.debug({ reason: (err as Error).message, dropped: this.counts.dropped }, 'telemetry.dropped');
        },
      )
      .finally(() => {
        this.isCollecting = false;
      });
  }
}
