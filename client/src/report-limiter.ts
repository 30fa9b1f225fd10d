/**
 * At most one printed line per error code per `intervalMs`; the lines in between are counted and the next
 * printed line says how many were left out. `portway connect --udp` uses it: every new client source
 * address opens a session, so an offline device would otherwise print one line per address.
 */
export class ReportLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly options: { intervalMs: number; now?: () => number; maxCodes?: number }) {}

  /** Whether to print a line for `code` now, and how many lines for it were suppressed since the last one. */
  take(code: string): { isPrinted: boolean; suppressed: number } {
    const now = (this.options.now ?? Date.now)();
    const entry = this.last.get(code);
    if (entry && now - entry.at < this.options.intervalMs) {
      entry.suppressed++;
      return { isPrinted: false, suppressed: entry.suppressed };
    }
    const suppressed = entry?.suppressed ?? 0;
    // Codes are a fixed registry, so this map stays small; the bound is a guard.
    if (!entry && this.last.size >= (this.options.maxCodes ?? 256)) this.last.clear();
    this.last.set(code, { at: now, suppressed: 0 });
    return { isPrinted: true, suppressed };
  }
}
