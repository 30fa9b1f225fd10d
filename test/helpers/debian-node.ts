/**
 * Debian's own nodejs for a foreign architecture (arm64, armhf), run on this x86-64 host under qemu-user:
 *
 *   const node = await prepareDebianNode(disposer, 'arm64');       // cached: a rerun takes about 2 s
 *   spawn(node.qemu, [...node.qemuArgs, bundle, '--version']);       // qemu-aarch64-static -L ROOT ROOT/usr/bin/node …
 *
 * apt runs with its own state under the cache directory (sources, lists, status, archives) and never touches the
 * host's: `-o APT::Architecture=ARCH`, a `deb [arch=ARCH] MIRROR SUITE main` line whose mirror comes from the host's
 * /etc/apt/sources.list.d/debian.sources, an empty dpkg status so that `apt-get -s install nodejs` lists the whole
 * dependency closure, then `apt-get download` of exactly those versions. The packages are unpacked with
 * dpkg-deb -x into a root keyed by the nodejs version. qemu's -L makes the guest's absolute paths (the ELF
 * interpreter, libraries, /usr/share/nodejs) resolve inside that root first. Nothing needs root privileges except
 * apt-get update's download sandbox, which falls back to the current user.
 *
 * Cache: $PORTWAY_DEBIAN_CACHE or /tmp/portway-debian-node/SUITE-ARCH/ (apt lists, debs/, roots/nodejs-VERSION/).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Disposer } from './disposer';
import { runProcess } from './process';

export type DebianArch = 'arm64' | 'armhf';

export const QEMU_BINARY: Readonly<Record<DebianArch, string>> = { arm64: 'qemu-aarch64-static', armhf: 'qemu-arm-static' };

export interface DebianNode {
  readonly arch: DebianArch;
  /** The unpacked root: usr/bin/node, usr/lib/<triplet>/…, usr/share/nodejs/… */
  readonly root: string;
  /** Debian version of the nodejs package, e.g. 20.19.2+dfsg-1+deb13u3. */
  readonly version: string;
  readonly qemu: string;
  /** Arguments for `qemu` before the script's own: -L ROOT ROOT/usr/bin/node. */
  readonly qemuArgs: readonly string[];
  /** Wall time of the preparation and whether it was served from the cache. */
  readonly prepareMs: number;
  readonly cached: boolean;
}

export interface PrepareOptions {
  readonly suite?: string;
  readonly cacheDir?: string;
  readonly timeoutMs?: number;
}

const APT_TIMEOUT_MS = 300_000;

/** The first non-security Debian mirror in the host's apt configuration. */
export function hostDebianMirror(): string {
  const sources = '/etc/apt/sources.list.d/debian.sources';
  if (existsSync(sources)) {
    const uris = readFileSync(sources, 'utf8').split('\n').filter((l) => /^URIs:/i.test(l)).flatMap((l) => l.replace(/^URIs:\s*/i, '').trim().split(/\s+/));
    const mirror = uris.find((u) => !u.includes('security'));
    if (mirror) return mirror.replace(/\/$/, '');
  }
  const list = '/etc/apt/sources.list';
  if (existsSync(list)) {
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s/m.exec(readFileSync(list, 'utf8'));
    if (m?.[1] && !m[1].includes('security')) return m[1].replace(/\/$/, '');
  }
  throw new Error('no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list');
}

export async function prepareDebianNode(disposer: Disposer, arch: DebianArch, options: PrepareOptions = {}): Promise<DebianNode> {
  const started = Date.now();
  const suite = options.suite ?? 'trixie';
  const base = options.cacheDir ?? path.join(process.env.PORTWAY_DEBIAN_CACHE ?? '/tmp/portway-debian-node', `${suite}-${arch}`);
  const timeoutMs = options.timeoutMs ?? APT_TIMEOUT_MS;
  const qemu = QEMU_BINARY[arch];
  await requireProgram(disposer, qemu, 'apt-get install qemu-user-static');

  const apt = path.join(base, 'apt');
  for (const dir of ['etc/apt.conf.d', 'etc/preferences.d', 'etc/sources.list.d', 'etc/trusted.gpg.d', 'lists/partial', 'cache/archives/partial', 'state']) {
    await mkdir(path.join(apt, dir), { recursive: true });
  }
  await writeFile(path.join(apt, 'etc/sources.list'), `deb [arch=${arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${hostDebianMirror()} ${suite} main\n`);
  await writeFile(path.join(apt, 'status'), '');
  const aptOptions = [
    `Dir::Etc=${apt}/etc`,
    `Dir::Etc::SourceList=${apt}/etc/sources.list`,
    `Dir::Etc::SourceParts=${apt}/etc/sources.list.d`,
    `Dir::Etc::Parts=${apt}/etc/apt.conf.d`,
    `Dir::Etc::PreferencesParts=${apt}/etc/preferences.d`,
    `Dir::Etc::TrustedParts=${apt}/etc/trusted.gpg.d`,
    `Dir::State=${apt}/state`,
    `Dir::State::Lists=${apt}/lists`,
    `Dir::State::status=${apt}/status`,
    `Dir::Cache=${apt}/cache`,
    `APT::Architecture=${arch}`,
    `APT::Architectures::=${arch}`,
    'APT::Install-Recommends=false',
    'Acquire::Languages=none',
    'Debug::NoLocking=1',
  ].flatMap((o) => ['-o', o]);
  const aptGet = async (args: readonly string[], cwd?: string): Promise<string> => {
    const command = cwd === undefined ? 'apt-get' : 'sh';
    const argv = cwd === undefined ? [...aptOptions, ...args] : ['-c', 'cd "$0" && exec apt-get "$@"', cwd, ...aptOptions, ...args];
    const result = await runProcess(disposer, command, argv, { timeoutMs });
    if (result.code !== 0) throw new Error(`apt-get ${args.join(' ')} failed (${String(result.code)}): ${result.stderr.slice(-2000)}`);
    return result.stdout;
  };

  // Lists are refreshed every time (a conditional GET when unchanged); without a network, the last root is used.
  const roots = path.join(base, 'roots');
  try {
    await aptGet(['-qq', 'update']);
  } catch (err) {
    const last = existsSync(roots) ? readdirSync(roots).find((d) => existsSync(path.join(roots, d, '.complete'))) : undefined;
    if (last === undefined) throw err;
    return done(path.join(roots, last), last.replace(/^nodejs-/, ''), true);
  }

  // `Inst NAME (VERSION SOURCE [ARCH])` for the whole closure, the host's installed packages not counted.
  const simulated = await aptGet(['-s', 'install', 'nodejs']);
  const packages = [...simulated.matchAll(/^Inst (\S+) \((\S+) [^\n[]*\[([^\]\s]+)\]\)/gm)].map(([, name, version, pkgArch]) => ({ name: name!, version: version!, arch: pkgArch! }));
  const nodejs = packages.find((p) => p.name === 'nodejs');
  if (!nodejs) throw new Error(`apt-get -s install nodejs planned no nodejs:\n${simulated.slice(-2000)}`);
  const root = path.join(roots, `nodejs-${nodejs.version.replace(/[^A-Za-z0-9.+~-]/g, '_')}`);
  if (existsSync(path.join(root, '.complete'))) return done(root, nodejs.version, true);

  const debs = path.join(base, 'debs');
  await mkdir(debs, { recursive: true });
  const fileName = (p: { name: string; version: string; arch: string }): string => `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.arch}.deb`;
  const missing = packages.filter((p) => !existsSync(path.join(debs, fileName(p))));
  if (missing.length > 0) await aptGet(['-qq', 'download', ...missing.map((p) => `${p.name}=${p.version}`)], debs);

  const partial = `${root}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  for (const p of packages) {
    const result = await runProcess(disposer, 'dpkg-deb', ['-x', path.join(debs, fileName(p)), partial], { timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`dpkg-deb -x ${fileName(p)} failed: ${result.stderr}`);
  }
  // merged /usr as on a real trixie system (base-files makes these links): the ELF interpreter is /lib/ld-linux-….
  for (const dir of ['bin', 'sbin', 'lib']) if (!existsSync(path.join(partial, dir))) await symlink(`usr/${dir}`, path.join(partial, dir));
  await writeFile(path.join(partial, '.complete'), `${packages.map(fileName).join('\n')}\n`);
  await rm(root, { recursive: true, force: true });
  await rename(partial, root);
  // Keep only the current root and its packages.
  for (const old of await readdir(roots)) if (path.join(roots, old) !== root) await rm(path.join(roots, old), { recursive: true, force: true });
  const keep = new Set(packages.map(fileName));
  for (const old of await readdir(debs)) if (!keep.has(old)) await rm(path.join(debs, old), { force: true });
  return done(root, nodejs.version, false);

  function done(rootDir: string, version: string, cached: boolean): DebianNode {
    return { arch, root: rootDir, version, qemu, qemuArgs: ['-L', rootDir, path.join(rootDir, 'usr', 'bin', 'node')], prepareMs: Date.now() - started, cached };
  }
}

async function requireProgram(disposer: Disposer, program: string, hint: string): Promise<void> {
  const result = await runProcess(disposer, 'sh', ['-c', 'command -v "$0"', program]);
  if (result.code !== 0) throw new Error(`${program} is not installed (${hint})`);
}
