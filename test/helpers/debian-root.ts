/**
 * A throwaway Debian trixie root (mmdebstrap minbase + nodejs + adduser) for chroot tests:
 *
 *   const rootfs = await prepareDebianRoot(disposer);    // extracted into a temp dir the disposer removes
 *
 * The root is cached as a tarball in $PORTWAY_DEBIAN_ROOT_CACHE or /tmp/portway-debian-root/ (about 35 s to
 * build from the host's Debian mirror, rebuilt after 7 days); each call extracts a fresh copy. Needs root
 * (chroot, and files owned by the root's own users) and mmdebstrap.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { hostDebianMirror } from './debian-node';
import type { Disposer } from './disposer';
import { runProcess } from './process';
import { makeTempDir } from './tmp';

const CACHE_DIR = process.env.PORTWAY_DEBIAN_ROOT_CACHE ?? '/tmp/portway-debian-root';
export const DEBIAN_ROOT_TAR = path.join(CACHE_DIR, 'trixie-amd64-minbase-nodejs.tar');
const ROOT_MAX_AGE_MS = 7 * 24 * 3600 * 1000;

export async function mustRun(disposer: Disposer, command: string, args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const result = await runProcess(disposer, command, args, { timeoutMs: options.timeoutMs ?? 60_000, env: options.env });
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${String(result.code)}):\n${result.stdout.slice(-2000)}\n${result.stderr.slice(-2000)}`);
  return result.stdout;
}

export async function prepareDebianRoot(disposer: Disposer): Promise<string> {
  if (process.getuid?.() !== 0) throw new Error('a chroot test needs root (CI runs as root)');
  const fresh = existsSync(DEBIAN_ROOT_TAR) && Date.now() - statSync(DEBIAN_ROOT_TAR).mtimeMs < ROOT_MAX_AGE_MS;
  if (!fresh) {
    await mkdir(CACHE_DIR, { recursive: true });
    const partial = `${DEBIAN_ROOT_TAR}.partial`;
    await rm(partial, { force: true });
    await mustRun(disposer, 'mmdebstrap', ['--quiet', '--variant=minbase', '--include=nodejs,adduser', '--dpkgopt=path-exclude=/usr/share/man/*', '--dpkgopt=path-exclude=/usr/share/doc/*', '--dpkgopt=path-exclude=/usr/share/locale/*', '--format=tar', 'trixie', partial, hostDebianMirror()], { timeoutMs: 600_000 });
    await rename(partial, DEBIAN_ROOT_TAR);
  }
  const rootfs = path.join(await makeTempDir(disposer, 'portway-debian-root-'), 'root');
  await mkdir(rootfs);
  await mustRun(disposer, 'tar', ['-xf', DEBIAN_ROOT_TAR, '-C', rootfs], { timeoutMs: 120_000 });
  return rootfs;
}
