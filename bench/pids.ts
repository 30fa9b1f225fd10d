/** Find processes of this run by their command line (e.g. the sshd started with a config in DIR). */
import { readFileSync } from 'node:fs';
import { descendantsOf, readProcTable } from './proc-stats';

/** Descendants of this process whose comm is `comm` and whose argv contains `needle`. */
export function findPidsByCommandLine(needle: string, comm: string): number[] {
  const found: number[] = [];
  for (const e of descendantsOf(readProcTable(), process.pid).values()) {
    if (e.comm !== comm) continue;
    try {
      if (readFileSync(`/proc/${e.pid}/cmdline`, 'utf8').includes(needle)) found.push(e.pid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return found;
}
