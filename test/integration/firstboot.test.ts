/**
 * firmware-scripts/firstboot in a throwaway Debian trixie root (test/helpers/debian-root.ts), installed from the
 * amd64 .deb: a good portway.toml writes agent.json (root:portway 0640), the NetworkManager keyfile (0600) and
 * the regulatory domain, erases the secrets from the boot partition, and the agent it configured enrolls with a
 * real relay on loopback; a second run has nothing to do. Bad and garbage files exit 78 with the problem named
 * and change nothing at all, the boot file included.
 * Not here: systemd does not run in the chroot (the unit's ordering is checked by systemd-units.test.ts), there is
 * no FAT partition (the boot dir is a directory of the root) and NetworkManager is not installed (its
 * system-connections directory is made by the test; the keyfile is not loaded by a real NetworkManager).
 * Set PORTWAY_FIRSTBOOT_TEST=0 to skip (it needs root and mmdebstrap, like deb-install.test.ts).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAgentConfig } from '../../agent/src/config';
import { ManagedProcess, PortwayCluster, isEvent } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, runProcess } from '../helpers';
import { mustRun, prepareDebianRoot } from '../helpers/debian-root';

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const skip = process.env.PORTWAY_FIRSTBOOT_TEST === '0';
const FP = 'ab'.repeat(32);
const ENROLL = 'pwe_secret-enroll-key-123';
const PSK = 'correct horse battery staple';

const setup = new Disposer();
let rootfs = '';
const inRoot = (p: string): string => path.join(rootfs, p);
const BOOT = '/boot/firmware';
const NM_DIR = '/etc/NetworkManager/system-connections';

beforeAll(async () => {
  if (skip) return;
  const work = await makeTempDir(setup, 'portway-firstboot-');
  const agentDir = path.join(work, 'agent');
  await mustRun(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-agent.mjs'), '--outdir', agentDir], { timeoutMs: 120_000 });
  await mustRun(setup, process.execPath, [path.join(ROOT, 'scripts', 'build-deb.mjs'), '--agent-dir', agentDir, '--outdir', path.join(work, 'deb'), '--arch', 'amd64'], { timeoutMs: 120_000 });
  rootfs = await prepareDebianRoot(setup);
  const deb = `portway-agent_${VERSION}_amd64.deb`;
  await copyFile(path.join(work, 'deb', deb), path.join(rootfs, 'tmp', deb));
  await mustRun(setup, 'chroot', [rootfs, 'dpkg', '-i', `/tmp/${deb}`], { timeoutMs: 120_000 });
  await mkdir(inRoot(BOOT), { recursive: true });
  await mkdir(inRoot(NM_DIR), { recursive: true, mode: 0o700 });
}, 900_000);
afterAll(() => setup.run());

/** Every file under the given root-relative dirs, with its content hash and mode: "nothing changed" is this equal. */
function snapshot(dirs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (abs: string, rel: string): void => {
    if (!existsSync(abs)) return;
    const st = statSync(abs);
    if (st.isDirectory()) {
      for (const name of readdirSync(abs)) walk(path.join(abs, name), path.join(rel, name));
      return;
    }
    out[rel] = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${createHash('sha256').update(readFileSync(abs)).digest('hex')}`;
  };
  for (const d of dirs) walk(inRoot(d), d);
  return out;
}
const WATCHED = ['/etc/portway', NM_DIR, '/etc/modprobe.d', BOOT];

function firstboot(disposer: Disposer): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runProcess(disposer, 'chroot', [rootfs, '/usr/lib/portway/firstboot'], { timeoutMs: 60_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
}

const toml = (fields: string, wifi = ''): string => `relay = "127.0.0.1:8443"\ncaFingerprint = "${FP}"\nname = "pi-first"\n${fields}\n${wifi}`;

(skip ? describe.skip : describe)('firstboot in a Debian trixie chroot', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());
  beforeEach(async () => {
    for (const f of ['portway.toml', 'portway.toml.applied']) await rm(inRoot(path.join(BOOT, f)), { force: true });
  });

  it.each<[string, string | Buffer, string]>([
    ['invalid TOML', 'relay = "127.0.0.1:8443"\nname = \n', 'not valid TOML'],
    ['binary garbage', Buffer.from([0x72, 0x65, 0xff, 0xfe, 0x00, 0x3d, 0x22, 0x80, 0x0a]), 'not UTF-8'],
    ['a relay without a port', toml(`enrollKey = "${ENROLL}"`).replace('127.0.0.1:8443', 'relay.example'), 'relay: must be HOST:PORT'],
    ['a short fingerprint', toml(`enrollKey = "${ENROLL}"`).replace(FP, 'abc'), 'caFingerprint: must be 64 hex digits'],
    ['a name with a space', toml(`enrollKey = "${ENROLL}"`).replace('pi-first', 'pi first'), 'name: must be'],
    ['no secret', toml(''), 'give exactly one of enrollKey or claimCode'],
    ['both secrets', toml(`enrollKey = "${ENROLL}"\nclaimCode = "ABCD-EFGH"`), 'give exactly one of enrollKey or claimCode'],
    ['a misspelt key', toml(`enrollKey = "${ENROLL}"\nrelya = "x"`), 'relya'],
    ['a short Wi-Fi passphrase', toml(`enrollKey = "${ENROLL}"`, '[wifi]\nssid = "Field"\npassphrase = "short"\ncountry = "DE"\n'), 'wifi.passphrase'],
    ['Wi-Fi without a country', toml(`enrollKey = "${ENROLL}"`, `[wifi]\nssid = "Field"\npassphrase = "${PSK}"\n`), 'wifi.country'],
    ['a wrong type', toml(`enrollKey = 12345`), 'enrollKey'],
    ['a huge file', `# ${'x'.repeat(20_000)}\n${toml(`enrollKey = "${ENROLL}"`)}`, 'larger than'],
    // The agent's schema checks the claim code (length, alphabet, check character) before anything is written.
    ['a claim code that is not one', toml('claimCode = "ABCD-EFGH-JKLM"'), 'claimCode: not a claim code: it has 12 characters'],
  ])('%s: exit 78, the problem named, nothing changed', async (_what, content, message) => {
    await writeFile(inRoot(path.join(BOOT, 'portway.toml')), content);
    const before = snapshot(WATCHED);
    const result = await firstboot(disposer);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('PW_CONFIG_INVALID');
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain('was NOT applied');
    expect(snapshot(WATCHED)).toEqual(before);
  });

  it.each<[string, string]>([
    ['an empty file', ''],
    ["the SD image's template (every setting commented out)", readFileSync(path.join(ROOT, 'image', 'portway.toml'), 'utf8')],
  ])('%s: exit 0, says there are no settings yet, nothing changed', async (_what, content) => {
    await writeFile(inRoot(path.join(BOOT, 'portway.toml')), content);
    const before = snapshot(WATCHED);
    const result = await firstboot(disposer);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toContain('has no settings yet');
    expect(snapshot(WATCHED)).toEqual(before);
  });

  it('CRLF line endings and sshAuthorizedKeys: applied, root gets the keys (0600 in a 0700 .ssh)', async () => {
    const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEm/mOCZuikZX+Tbs9PvZhd3mTy/oSuFkdFpltT0MM8 me@laptop';
    await rm(inRoot('/root/.ssh'), { recursive: true, force: true });
    await writeFile(inRoot(path.join(BOOT, 'portway.toml')), toml(`enrollKey = "${ENROLL}"\nsshAuthorizedKeys = ["${key}"]`).replace(/\n/g, '\r\n'));
    const result = await firstboot(disposer);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toContain('"sshKeys":1');
    expect(readFileSync(inRoot('/root/.ssh/authorized_keys'), 'utf8')).toContain(key);
    expect(statSync(inRoot('/root/.ssh/authorized_keys')).mode & 0o777).toBe(0o600);
    expect(statSync(inRoot('/root/.ssh')).mode & 0o777).toBe(0o700);
    expect(existsSync(inRoot(path.join(BOOT, 'portway.toml')))).toBe(false);
  });

  it('Wi-Fi settings without NetworkManager installed: refused before anything is written', async () => {
    await rm(inRoot('/etc/NetworkManager'), { recursive: true, force: true });
    try {
      await writeFile(inRoot(path.join(BOOT, 'portway.toml')), toml(`enrollKey = "${ENROLL}"`, `[wifi]\nssid = "Field"\npassphrase = "${PSK}"\ncountry = "de"\n`));
      const before = snapshot(WATCHED);
      const result = await firstboot(disposer);
      expect(result.code).toBe(78);
      expect(result.stderr).toContain('is NetworkManager installed?');
      expect(snapshot(WATCHED)).toEqual(before);
    } finally {
      await mkdir(inRoot(NM_DIR), { recursive: true, mode: 0o700 });
    }
  });

  it('a good file: agent.json, Wi-Fi keyfile and country written, secrets erased, the agent enrolls; a rerun does nothing', async () => {
    const clusterDir = await makeTempDir(disposer, 'portway-firstboot-cluster-');
    const cluster = await PortwayCluster.start({ dir: clusterDir, services: [] });
    disposer.add(() => cluster.stop(), 'stop cluster');
    await cluster.agent?.stop();
    const text = `# written on a laptop\nrelay = "${cluster.relayAddress}"\ncaFingerprint = "${cluster.caFingerprint.toUpperCase().match(/../g)!.join(':')}"\nenrollKey = "${cluster.enrollKey}"\nname = "pi-first"\n\n[wifi]\nssid = "Field Net"\npassphrase = "${PSK}"\ncountry = "de"\n`;
    await writeFile(inRoot(path.join(BOOT, 'portway.toml')), text);

    const result = await firstboot(disposer);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.stdout).toContain('portway-firstboot: wrote /etc/portway/agent.json');
    expect(result.stdout).not.toContain(cluster.enrollKey);
    expect(result.stdout).not.toContain(PSK);

    const configFile = inRoot('/etc/portway/agent.json');
    const config = parseAgentConfig(JSON.parse(readFileSync(configFile, 'utf8')), 'agent.json');
    expect(config).toMatchObject({ relay: cluster.relayAddress, caFingerprint: cluster.caFingerprint, enrollKey: cluster.enrollKey, name: 'pi-first', stateDir: '/var/lib/portway', services: [] });
    const portwayGid = Number(readFileSync(inRoot('/etc/group'), 'utf8').split('\n').find((l) => l.startsWith('portway:'))?.split(':')[2]);
    expect([(statSync(configFile).mode & 0o777).toString(8), statSync(configFile).uid, statSync(configFile).gid]).toEqual(['640', 0, portwayGid]);

    const nmFile = inRoot(path.join(NM_DIR, 'portway-wifi.nmconnection'));
    expect((statSync(nmFile).mode & 0o777).toString(8)).toBe('600');
    const keyfile = readFileSync(nmFile, 'utf8');
    expect(keyfile).toMatch(/^\[connection\]\nid=portway-wifi\nuuid=[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\ntype=wifi\n/);
    expect(keyfile).toContain('\nssid=Field Net\n');
    expect(keyfile).toContain(`\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=${PSK}\n`);
    expect(readFileSync(inRoot('/etc/modprobe.d/portway-wifi-country.conf'), 'utf8')).toContain('options cfg80211 ieee80211_regdom=DE\n');

    // The boot partition: the file is gone, its non-secret part kept; no byte of a secret anywhere.
    expect(readdirSync(inRoot(BOOT)).sort()).toEqual(['portway.toml.applied']);
    const applied = readFileSync(inRoot(path.join(BOOT, 'portway.toml.applied')), 'utf8');
    expect(applied).toContain(`relay = "${cluster.relayAddress}"`);
    expect(applied).toContain('ssid = "Field Net"');
    for (const f of readdirSync(inRoot(BOOT))) {
      const bytes = readFileSync(inRoot(path.join(BOOT, f)), 'utf8');
      expect([f, bytes.includes(cluster.enrollKey), bytes.includes(PSK)]).toEqual([f, false, false]);
    }

    // The agent, as its unit runs it, with what firstboot wrote.
    await mustRun(disposer, 'chroot', [rootfs, 'install', '-d', '-o', 'portway', '-g', 'portway', '-m', '0700', '/var/lib/portway']);
    const child = spawn('chroot', ['--userspec=portway:portway', rootfs, '/usr/bin/node', '/usr/lib/portway/portway-agent.js', '--config', '/etc/portway/agent.json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const agent = new ManagedProcess(child);
    cluster.children.add(agent);
    await agent.waitForLine(isEvent('agent.control.online'), 60_000, 'agent.control.online');
    expect(await agent.stop()).toBe(0);

    const before = snapshot(WATCHED);
    const again = await firstboot(disposer);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('nothing to do');
    expect(snapshot(WATCHED)).toEqual(before);
    await rm(inRoot('/var/lib/portway'), { recursive: true, force: true });
  }, 180_000);
});
