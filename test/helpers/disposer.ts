/**
 * LIFO stack of clean-up steps. Each test pushes what it opens and `afterEach` empties the stack:
 *
 *   const disposer = new Disposer();
 *   afterEach(() => disposer.run());
 *   const server = await startEchoServer(disposer);       // helpers register their own stop()
 *   disposer.add(() => socket.destroy());
 *
 * Every step runs, even after one fails or times out; failures are reported together afterwards.
 */
export type DisposeStep = () => unknown;

/** Bound on one step, so a stuck close cannot hang afterEach. */
export const DISPOSE_STEP_TIMEOUT_MS = 10_000;

export class Disposer {
  private readonly steps: { readonly step: DisposeStep; readonly label: string }[] = [];

  constructor(private readonly stepTimeoutMs = DISPOSE_STEP_TIMEOUT_MS) {}

  /** Pushes a step; it runs before every step added earlier. */
  add(step: DisposeStep, label = step.name || 'dispose step'): void {
    this.steps.push({ step, label });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Runs and removes every step, newest first (steps added meanwhile run too); throws if any failed. */
  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (let entry = this.steps.pop(); entry !== undefined; entry = this.steps.pop()) {
      try {
        await this.runBounded(entry.step, entry.label);
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} dispose steps failed`);
  }

  private async runBounded(step: DisposeStep, label: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`dispose step "${label}" did not finish within ${this.stepTimeoutMs} ms`)),
        this.stepTimeoutMs,
      );
    });
    try {
      await Promise.race([Promise.resolve().then(step), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
