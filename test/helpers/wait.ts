/** Bounded waits for tests: await an event or a condition, never a fixed sleep. */
import type { EventEmitter } from 'node:events';

/**
 * Resolves with the arguments of the next `event`; rejects on `'error'` (unless that is the event
 * awaited) or after `timeoutMs`.
 */
export function once<T extends unknown[] = unknown[]>(
  emitter: EventEmitter,
  event: string | symbol,
  timeoutMs: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      if (event !== 'error') emitter.off('error', onError);
    };
    const onEvent = (...args: unknown[]): void => {
      cleanup();
      resolve(args as T);
    };
    const onError = (err: unknown): void => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${String(event)}'`));
    }, timeoutMs);
    emitter.on(event, onEvent);
    if (event !== 'error') emitter.on('error', onError);
  });
}

export interface WaitForOptions {
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  /** Named in the timeout error. */
  readonly description?: string;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned), at most every `intervalMs`,
 * for at most `timeoutMs` (defaults 5000 and 10). A throwing predicate fails the wait at once.
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, options: WaitForOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const intervalMs = Math.max(1, options.intervalMs ?? 10);
  const deadline = Date.now() + timeoutMs;
  const maxRounds = Math.ceil(timeoutMs / intervalMs) + 1;
  for (let round = 0; round < maxRounds; round++) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(1, deadline - Date.now()))));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.description ?? 'a condition'}`);
}
