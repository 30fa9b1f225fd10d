/** The absolute path of an executable found in a PATH string, or undefined (like `command -v`). */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export function findProgram(name: string, searchPath: string | undefined): string | undefined {
  for (const dir of (searchPath ?? '').split(':')) {
    if (!dir.startsWith('/')) continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // ENOENT or EACCES: not in this directory, keep looking
    }
  }
  return undefined;
}
