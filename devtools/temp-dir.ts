/** Private scratch directories (0700 under the OS temp dir) that are removed as a whole. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  readonly path: string;
  remove(): Promise<void>;
}

export async function makeTempDir(prefix = 'portway-'): Promise<TempDir> {
  if (!/^[\w.-]+$/.test(prefix)) throw new TypeError(`makeTempDir: bad prefix ${JSON.stringify(prefix)}`);
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
