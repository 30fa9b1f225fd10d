/** Temp directories removed by the test's disposer. */
import { makeTempDir as makeDir } from '../../devtools';
import type { Disposer } from './disposer';

export async function makeTempDir(disposer: Disposer, prefix = 'portway-test-'): Promise<string> {
  const dir = await makeDir(prefix);
  disposer.add(() => dir.remove(), `remove ${dir.path}`);
  return dir.path;
}
