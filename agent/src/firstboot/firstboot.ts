/**
 * `portway-agent firstboot`: apply portway.toml from the boot partition once (see firstboot-plan.ts for the file).
 *
 *   1. read and validate everything (the TOML, the agent.json it makes, the target directories, the portway
 *      group): any problem -> PW_CONFIG_INVALID listing them all, and nothing on the system has changed
 *   2. write every target to a temp file beside it (fsync, mode, owner), then rename them all into place:
 *      agent.json (root:portway 0640, as the .deb leaves it; the agent runs as portway and must read it),
 *      root's SSH authorized_keys (0600, its directory 0700, when sshAuthorizedKeys is given),
 *      the NetworkManager keyfile (root 0600) and the regulatory domain (modprobe.d)
 *   3. erase the secrets from the boot partition: portway.toml.applied gets the file without enrollKey,
 *      claimCode and the Wi-Fi passphrase; the original is overwritten in place with spaces, synced, then
 *      deleted (FAT keeps deleted data until reused, hence the overwrite first)
 *
 * Paths are options so tests can point them into a throwaway root; the unit runs it with the defaults.
 */
import { promises as fs, constants } from 'node:fs';
import path from 'node:path';
import { PortwayError } from '../../../protocol';
import { NOT_CONFIGURED, planFirstboot, type FirstbootPlan } from './firstboot-plan';

export interface FirstbootPaths {
  readonly bootDir: string;
  readonly agentConfig: string;
  readonly nmConnectionsDir: string;
  readonly modprobeFile: string;
  readonly groupFile: string;
  readonly sshAuthorizedKeys: string;
}

export const DEFAULT_FIRSTBOOT_PATHS: FirstbootPaths = {
  bootDir: '/boot/firmware',
  agentConfig: '/etc/portway/agent.json',
  nmConnectionsDir: '/etc/NetworkManager/system-connections',
  modprobeFile: '/etc/modprobe.d/portway-wifi-country.conf',
  groupFile: '/etc/group',
  sshAuthorizedKeys: '/root/.ssh/authorized_keys',
};

export const BOOT_FILE = 'portway.toml';
export const CONSUMED_FILE = 'portway.toml.applied';
const NM_FILE = 'portway-wifi.nmconnection';

interface Target {
  readonly file: string;
  readonly data: string;
  readonly mode: number;
  readonly gid: number;
  /** Made (dirMode, default 0755) when missing, after validation; otherwise a missing directory is a problem. */
  readonly mayCreateDir: boolean;
  readonly dirMode?: number;
}

/**
 * Resolves with the plan's summary, undefined when there is no portway.toml, or NOT_CONFIGURED when it has no
 * settings (the image's template): nothing to do in both cases.
 */
export async function runFirstboot(paths: FirstbootPaths, say: (line: string) => void): Promise<Record<string, unknown> | typeof NOT_CONFIGURED | undefined> {
  const bootFile = path.join(paths.bootDir, BOOT_FILE);
  let toml: Buffer;
  try {
    toml = await fs.readFile(bootFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PortwayError('PW_CONFIG_INVALID', `cannot read ${bootFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
  // ---- 1. validate everything
  const existing = await fs.readFile(paths.agentConfig, 'utf8').catch(() => undefined);
  const plan = planFirstboot(toml, existing, bootFile);
  if (plan === NOT_CONFIGURED) return NOT_CONFIGURED;
  const portwayGid = await groupId(paths.groupFile, 'portway');
  const targets: Target[] = [{ file: paths.agentConfig, data: plan.agentJson, mode: portwayGid === undefined ? 0o600 : 0o640, gid: portwayGid ?? 0, mayCreateDir: true }];
  if (plan.authorizedKeys !== undefined) targets.push({ file: paths.sshAuthorizedKeys, data: plan.authorizedKeys, mode: 0o600, gid: 0, mayCreateDir: true, dirMode: 0o700 });
  if (plan.nmConnection !== undefined) targets.push({ file: path.join(paths.nmConnectionsDir, NM_FILE), data: plan.nmConnection, mode: 0o600, gid: 0, mayCreateDir: false });
  if (plan.regulatoryDomain !== undefined) targets.push({ file: paths.modprobeFile, data: plan.regulatoryDomain, mode: 0o644, gid: 0, mayCreateDir: true });
  const problems: string[] = [];
  for (const t of targets) {
    const dir = t.mayCreateDir && !(await exists(path.dirname(t.file))) ? path.dirname(path.dirname(t.file)) : path.dirname(t.file);
    const hint = t.file.includes('NetworkManager') ? ' (is NetworkManager installed?)' : t.file === paths.sshAuthorizedKeys ? ' (for sshAuthorizedKeys)' : '';
    await fs.access(dir, constants.W_OK).catch((err: NodeJS.ErrnoException) => problems.push(`${dir}: ${err.code ?? 'not writable'}${hint}`));
  }
  await fs.access(paths.bootDir, constants.W_OK).catch((err: NodeJS.ErrnoException) => problems.push(`${paths.bootDir}: ${err.code ?? 'not writable'} (the secrets could not be erased)`));
  if (problems.length > 0) throw new PortwayError('PW_CONFIG_INVALID', `cannot apply ${bootFile}: ${problems.join('; ')}`);
  if (portwayGid === undefined) say('portway-firstboot: no portway group (is the portway-agent package installed?); agent.json is root-only (0600)');

  // ---- 2. temp files, then renames
  const temps: string[] = [];
  try {
    for (const t of targets) {
      if (t.mayCreateDir) await fs.mkdir(path.dirname(t.file), { recursive: true, mode: t.dirMode ?? 0o755 });
      const tmp = `${t.file}.firstboot-${process.pid}`;
      temps.push(tmp);
      await writeSynced(tmp, t.data, t.mode);
      await fs.chown(tmp, 0, t.gid);
    }
  } catch (err) {
    await Promise.all(temps.map((tmp) => fs.rm(tmp, { force: true })));
    throw new PortwayError('PW_INTERNAL', `writing the configuration failed, nothing was changed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  for (const [i, t] of targets.entries()) {
    await fs.rename(temps[i] as string, t.file);
    await syncDir(path.dirname(t.file));
    say(`portway-firstboot: wrote ${t.file}`);
  }

  // ---- 3. erase the secrets from the boot partition
  await consumeBootFile(paths.bootDir, toml.length, plan);
  say(`portway-firstboot: secrets erased from ${paths.bootDir}; the rest is kept in ${path.join(paths.bootDir, CONSUMED_FILE)}`);
  return plan.summary;
}

async function consumeBootFile(bootDir: string, size: number, plan: FirstbootPlan): Promise<void> {
  const consumed = path.join(bootDir, CONSUMED_FILE);
  await writeSynced(`${consumed}.tmp`, plan.consumedToml, 0o600);
  await fs.rename(`${consumed}.tmp`, consumed);
  const original = path.join(bootDir, BOOT_FILE);
  const handle = await fs.open(original, 'r+');
  try {
    await handle.write(Buffer.alloc(size, 0x20), 0, size, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.unlink(original);
  await syncDir(bootDir);
}

async function writeSynced(file: string, data: string, mode: number): Promise<void> {
  const handle = await fs.open(file, 'w', mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    // vfat may refuse fsync on a directory (EINVAL); the file data itself was synced
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
  } finally {
    await handle.close();
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
}

async function groupId(groupFile: string, name: string): Promise<number | undefined> {
  const text = await fs.readFile(groupFile, 'utf8').catch(() => '');
  const line = text.split('\n').find((l) => l.startsWith(`${name}:`));
  const gid = Number(line?.split(':')[2]);
  return line !== undefined && Number.isInteger(gid) ? gid : undefined;
}
