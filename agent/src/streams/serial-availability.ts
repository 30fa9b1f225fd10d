/**
 * Whether each serial service's device path exists, checked every `pollMs` (one stat per service, never
 * two checks at once) and whenever a stream finds out first (`report`). A USB adapter that is unplugged
 * takes its /dev node (and its /dev/serial/by-id link) with it; when it comes back, so does the path.
 * Changes are emitted so the agent can republish its services list.
 */
import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import type { SerialServiceConfig } from '../config';

export class SerialAvailability extends EventEmitter<{ change: [service: string, isAvailable: boolean] }> {
  private readonly available = new Map<string, boolean>();
  private timer: NodeJS.Timeout | undefined;
  private isChecking = false;

  constructor(
    private readonly services: readonly SerialServiceConfig[],
    private readonly options: { pollMs: number },
  ) {
    super();
  }

  /** Unknown until the first check: counted as available. */
  isAvailable(service: string): boolean {
    return this.available.get(service) !== false;
  }

  /** First check now, then every pollMs (no-op without serial services). */
  async start(): Promise<void> {
    if (this.services.length === 0 || this.timer) return;
    this.timer = setInterval(() => void this.check(), this.options.pollMs);
    this.timer.unref();
    await this.check();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  report(service: string, isAvailable: boolean): void {
    const before = this.available.get(service);
    if (before === isAvailable) return;
    this.available.set(service, isAvailable);
    // Unknown counted as available: only a real change is news.
    if (before !== undefined || !isAvailable) this.emit('change', service, isAvailable);
  }

  private async check(): Promise<void> {
    if (this.isChecking) return;
    this.isChecking = true;
    try {
      for (const service of this.services) this.report(service.name, await exists(service.path));
    } finally {
      this.isChecking = false;
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch (err) {
    // EACCES on a parent directory: the path may well exist; opening it will say why it cannot be used.
    const code = (err as NodeJS.ErrnoException).code;
    return code !== 'ENOENT' && code !== 'ENOTDIR';
  }
}
