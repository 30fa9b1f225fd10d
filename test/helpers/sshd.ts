/** A throwaway sshd on 127.0.0.1 (see devtools/sshd.ts), stopped and removed by the disposer. */
import { type Sshd, type SshdOptions, startSshd as start } from '../../devtools';
import type { Disposer } from './disposer';

export async function startSshd(disposer: Disposer, options: SshdOptions = {}): Promise<Sshd> {
  const sshd = await start(options);
  disposer.add(() => sshd.stop(), 'stop sshd');
  return sshd;
}
