/**
 * The Portway SD image, built by image/build (rootfs cached between runs, see image/README.md) and booted under
 * qemu-system-aarch64 (-M virt, TCG, cortex-a72) with its own kernel, initrd and cmdline.txt (test/helpers/qemu-guest.ts):
 *
 * - build: the outputs exist, the sha256 file matches, os-list.json describes the .img.xz and the raw image,
 *   the package list has the kernel, raspi-firmware, nodejs and portway-agent.
 * - first boot, on a copy enlarged to 4 GiB (a bigger card) with portway.toml written by image/customize
 *   (relay address, a new claim code, an SSH key), inside a network namespace this test creates: a tap device,
 *   10.254.77.1/29 for the relay and dnsmasq (DHCP, one fixed lease 10.254.77.2 for the guest's MAC), nothing routed
 *   anywhere else. portway-firstboot applies the file, the agent starts under systemd and registers its claim
 *   code, `portway claim` takes the device, `portway devices` shows it online with telemetry, and real OpenSSH
 *   through `portway pipe` (ProxyCommand, the key from portway.toml) runs commands as root: aarch64, the root file
 *   system grew past 3 GiB, the secrets are gone from the boot partition. Then `systemctl reboot`: the device goes
 *   offline, comes back online by itself, and SSH shows a new boot ID.
 * - Raspberry Pi Imager's "systemd" customisation (os-list.json's init_format): a firstrun.sh as Imager writes it,
 *   and systemd.run=... appended to cmdline.txt; the boot runs it, reboots, and leaves hostname, keys, user and
 *   Wi-Fi connection on the card and no firstrun.sh or systemd.run on the boot partition.
 * - bad portway.toml (a typo, a bad Wi-Fi block, no claim code) on the same card, one boot each without a NIC: the
 *   reason on the serial console, both straight from the unit and as a journal entry (forwarded to the console with
 *   systemd.journald.forward_to_console=1, proving it is in the journal), nothing applied, and the console still
 *   offers a login prompt (what "reachable on its local console" means here: the card has no password, so the
 *   prompt is as far as a console user gets without an SSH key). A file with CRLF line endings is applied.
 *
 * Needs root (mmdebstrap, chroot, ip netns), qemu-system-arm, qemu-user-static, mtools, dosfstools, fdisk,
 * e2fsprogs, dnsmasq, openssh-client; the Debian mirror of this machine's apt configuration for a fresh rootfs.
 * Set PORTWAY_IMAGE_TEST=0 to skip it (never skipped silently otherwise). Durations are printed at the end.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ManagedProcess, PORTWAY_BIN, isEvent } from '../../devtools/portway-cluster';
import { Disposer, makeTempDir, runProcess, waitFor } from '../helpers';
import { mustRun } from '../helpers/debian-root';
import { QemuGuest, extractKernel, guestCmdline, readBootFile, readRootFile, bootFileNames, writeBootFile } from '../helpers/qemu-guest';

const ROOT = path.resolve(__dirname, '..', '..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const NAME = `portway-${VERSION}-arm64`;
const skip = process.env.PORTWAY_IMAGE_TEST === '0';

const NETNS = `pwimg${process.pid}`;
const TAP = 'pwtap0';
const HOST_IP = '10.254.77.1';
const GUEST_IP = '10.254.77.2';
const GUEST_MAC = '52:54:00:4d:77:02';
/** A fixed port is safe here: nothing else lives in this test's own namespace. */
const RELAY = `${HOST_IP}:8443`;
const DEVICE = 'pi-image';
/** Bounds: a cold rootfs build, a boot to first-boot done, the agent's slow (TCG) TLS and key generation. */
const BUILD_TIMEOUT_MS = 45 * 60_000;
const FIRSTBOOT_TIMEOUT_MS = 8 * 60_000;
const ONLINE_TIMEOUT_MS = 10 * 60_000;

const setup = new Disposer();
const durations: Record<string, number> = {};
let work = '';
let baseImage = '';
let kernel = { kernel: '', initrd: '' };
let sshKey = '';
let clientHome = '';
let fingerprint = '';
const serialLog = (): string => path.join(work, 'serial.log');

async function timed<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    durations[what] = Math.round((Date.now() - started) / 1000);
  }
}

/** A command inside the test's namespace (the relay, the CLI, ssh). */
const inNs = (cmd: string, args: readonly string[]): [string, string[]] => ['ip', ['netns', 'exec', NETNS, cmd, ...args]];
const cliEnv = (): NodeJS.ProcessEnv => ({ ...process.env, XDG_CONFIG_HOME: clientHome });

async function portway(disposer: Disposer, args: readonly string[], timeoutMs = 60_000) {
  const [cmd, a] = inNs(process.execPath, [PORTWAY_BIN, ...args]);
  return runProcess(disposer, cmd, a, { env: cliEnv(), timeoutMs });
}

async function copyImage(disposer: Disposer, to: string, sizeBytes?: number): Promise<string> {
  await mustRun(disposer, 'cp', ['--sparse=always', baseImage, to]);
  if (sizeBytes !== undefined) await mustRun(disposer, 'truncate', ['-s', String(sizeBytes), to]);
  return to;
}

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
  });
}

interface DeviceJson {
  name: string;
  online: boolean;
  telemetry?: { at: number; uptimeS?: number };
}

async function devices(disposer: Disposer): Promise<DeviceJson[]> {
  const r = await portway(disposer, ['devices', '--json']);
  if (r.code !== 0) return [];
  return JSON.parse(r.stdout) as DeviceJson[];
}

async function ssh(disposer: Disposer, command: string, timeoutMs = 180_000) {
  const [cmd, args] = inNs('ssh', [
    '-F', '/dev/null', '-i', sshKey, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'ConnectTimeout=150', '-o', 'LogLevel=ERROR', '-o', `ProxyCommand=${process.execPath} ${PORTWAY_BIN} pipe %h ssh`, `root@${DEVICE}`, command,
  ]);
  return runProcess(disposer, cmd, args, { env: cliEnv(), timeoutMs });
}

beforeAll(async () => {
  if (skip) return;
  if (process.getuid?.() !== 0) throw new Error('the image test needs root (mmdebstrap, chroot, ip netns); set PORTWAY_IMAGE_TEST=0 to skip it');
  work = await makeTempDir(setup, 'portway-image-test-');
  const out = path.join(work, 'out');
  // ---- the image (rootfs from the cache when its inputs did not change)
  await timed('image/build', () => mustRun(setup, path.join(ROOT, 'image', 'build'), ['--outdir', out, '--keep-img', '--xz-level', '1', '--base-url', 'https://images.example.invalid/portway'], { timeoutMs: BUILD_TIMEOUT_MS }));
  baseImage = path.join(out, `${NAME}.img`);
  kernel = await extractKernel(setup, baseImage, work);
  sshKey = path.join(work, 'id_ed25519');
  await mustRun(setup, 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'image-test', '-f', sshKey]);

  // ---- the namespace: tap + addresses + DHCP; nothing routed out of it
  await mustRun(setup, 'ip', ['netns', 'add', NETNS]);
  setup.add(async () => void (await runProcess(new Disposer(), 'ip', ['netns', 'del', NETNS])), `ip netns del ${NETNS}`);
  await mustRun(setup, 'ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  await mustRun(setup, 'ip', ['-n', NETNS, 'tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  await mustRun(setup, 'ip', ['-n', NETNS, 'addr', 'add', `${HOST_IP}/29`, 'dev', TAP]);
  await mustRun(setup, 'ip', ['-n', NETNS, 'link', 'set', TAP, 'up']);
  const [dcmd, dargs] = inNs('dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--port=0', `--interface=${TAP}`, '--bind-interfaces', '--except-interface=lo',
    `--dhcp-range=${GUEST_IP},${GUEST_IP},255.255.255.248,1h`, `--dhcp-host=${GUEST_MAC},${GUEST_IP}`, `--dhcp-leasefile=${path.join(work, 'leases')}`, '--log-dhcp', '--log-facility=-', '--user=root']);
  const dnsmasq = spawn(dcmd, dargs, { stdio: ['ignore', 'ignore', 'pipe'] });
  const dnsmasqExited = new Promise((resolve) => dnsmasq.once('exit', resolve));
  dnsmasq.stderr.setEncoding('utf8').on('data', (t: string) => void appendFile(path.join(work, 'dnsmasq.log'), t));
  setup.add(async () => {
    if (dnsmasq.exitCode === null) dnsmasq.kill('SIGTERM');
    await dnsmasqExited;
  }, 'stop dnsmasq');

  // ---- the relay, listening in the namespace; a user logged in from the namespace
  const relayDir = path.join(work, 'relay');
  const relayCli = (args: string[]) => mustRun(setup, process.execPath, [PORTWAY_BIN, ...args]);
  await relayCli(['relay', 'init', '--data', relayDir, '--name', HOST_IP]);
  fingerprint = (await relayCli(['relay', 'ca', '--data', relayDir, '--fingerprint'])).trim();
  const token = (await relayCli(['relay', 'user', 'add', 'alice', '--data', relayDir])).trim();
  // The guest answers slowly (Node under TCG): a claim may wait minutes for it.
  await writeFile(path.join(work, 'relay.json'), JSON.stringify({ claims: { answerTimeoutMs: 240_000, maxSourceFailures: 1000, maxUserFailures: 1000 } }));
  const [rcmd, rargs] = inNs(process.execPath, [PORTWAY_BIN, 'relay', '--data', relayDir, '--listen', RELAY, '--config', path.join(work, 'relay.json'), '--log-level', 'info']);
  const relay = new ManagedProcess(spawn(rcmd, rargs, { stdio: ['ignore', 'pipe', 'pipe'] }));
  setup.add(() => relay.stop('SIGTERM', 10_000), 'stop relay');
  await relay.waitForLine(isEvent('relay.started'), 30_000, 'relay.started');
  clientHome = path.join(work, 'client');
  await mkdir(clientHome);
  const login = await portway(setup, ['login', '--relay', RELAY, '--token', token, '--fingerprint', fingerprint]);
  if (login.code !== 0) throw new Error(`login failed: ${login.stderr}`);
}, BUILD_TIMEOUT_MS + 120_000);

afterAll(async () => {
  await setup.run();
  if (!skip) process.stdout.write(`image test durations (s): ${JSON.stringify(durations)}\n`);
});

(skip ? describe.skip : describe)('the Portway SD image', () => {
  const disposer = new Disposer();
  afterEach(() => disposer.run());

  it('build outputs: .img.xz with its sha256, package list, build log, os-list.json', async () => {
    const out = path.dirname(baseImage);
    const xz = path.join(out, `${NAME}.img.xz`);
    const [sum, file] = readFileSync(`${xz}.sha256`, 'utf8').trim().split(/\s+/);
    expect(file).toBe(`${NAME}.img.xz`);
    expect(await sha256File(xz)).toBe(sum);
    const packages = readFileSync(path.join(out, `${NAME}.packages.txt`), 'utf8');
    for (const p of ['linux-image-arm64', 'raspi-firmware', 'nodejs', 'openssh-server', 'network-manager', 'systemd-timesyncd', 'portway-agent']) expect(packages).toMatch(new RegExp(`^${p}\\t`, 'm'));
    expect(readFileSync(path.join(out, `${NAME}.build.log`), 'utf8')).toContain('done:');
    const list = JSON.parse(readFileSync(path.join(out, 'os-list.json'), 'utf8')) as { os_list: Record<string, unknown>[] };
    expect(list.os_list[0]).toMatchObject({
      url: `https://images.example.invalid/portway/${NAME}.img.xz`,
      extract_size: 2 * 1024 * 1024 * 1024,
      extract_sha256: await sha256File(baseImage),
      image_download_size: statSync(xz).size,
      image_download_sha256: sum,
      init_format: 'systemd',
    });
    // The boot partition: the commented template, the firmware, a cmdline.txt with the root by label.
    expect(await readBootFile(disposer, baseImage, 'portway.toml')).toContain('# relay = "relay.example.org:443"');
    expect(await readBootFile(disposer, baseImage, 'cmdline.txt')).toContain('root=LABEL=RASPIROOT');
    const names = await bootFileNames(disposer, baseImage);
    for (const f of ['config.txt', 'bootcode.bin', 'start4.elf', 'bcm2837-rpi-3-b.dtb', 'bcm2711-rpi-4-b.dtb', 'bcm2837-rpi-zero-2-w.dtb']) expect(names).toContain(f);
    // No host keys, no passwords.
    expect(await readRootFile(disposer, baseImage, '/etc/ssh/ssh_host_ed25519_key')).toBeUndefined();
    expect(await readRootFile(disposer, baseImage, '/etc/shadow')).toMatch(/^root:[*!]/m);
  });

  it('first boot: portway.toml applied, claimed, online with telemetry, SSH through portway pipe; back online after a reboot', async () => {
    const image = await copyImage(disposer, path.join(work, 'card.img'), 4 * 1024 * 1024 * 1024);
    const customized = await mustRun(disposer, path.join(ROOT, 'image', 'customize'), [image, '--relay', RELAY, '--ca-fingerprint', fingerprint, '--name', DEVICE, '--new-claim-code', '--ssh-key-file', `${sshKey}.pub`]);
    const code = customized.trim();
    const started = Date.now();
    const guest = QemuGuest.start(disposer, { image, ...kernel, cmdline: await guestCmdline(disposer, image), logFile: serialLog(), netns: NETNS, tap: TAP, mac: GUEST_MAC });
    await timed('boot to portway.toml applied', () => guest.waitForSerial(/portway-firstboot: applied .*"name":"pi-image"/, FIRSTBOOT_TIMEOUT_MS, 'portway-firstboot: applied'));

    // The agent registers its claim code; `portway claim` succeeds once it has (retried, bounded).
    const claimed = await timed('claim', () =>
      waitFor(async () => {
        const r = await portway(disposer, ['claim', code], 300_000);
        return r.code === 0 ? r.stdout : undefined;
      }, { timeoutMs: ONLINE_TIMEOUT_MS, intervalMs: 5_000, description: 'portway claim to succeed' }));
    expect(claimed).toContain(`claimed ${DEVICE}`);
    const online = await timed('claimed to online with telemetry', () =>
      waitFor(async () => (await devices(disposer)).find((d) => d.name === DEVICE && d.online && d.telemetry), { timeoutMs: ONLINE_TIMEOUT_MS, intervalMs: 3_000, description: 'the device online with telemetry' }));
    durations['first boot to online'] = Math.round((Date.now() - started) / 1000);
    expect(online?.telemetry?.at).toBeGreaterThan(0);

    const first = await timed('ssh through portway pipe', () => ssh(disposer, 'uname -m; findmnt -n -b -o SIZE /; systemctl is-active portway-agent; ls /boot/firmware; cat /proc/sys/kernel/random/boot_id'));
    expect({ code: first.code, stderr: first.stderr }).toEqual({ code: 0, stderr: '' });
    const [arch, rootSize, agentState, ...rest] = first.stdout.trim().split('\n');
    expect(arch).toBe('aarch64');
    expect(Number(rootSize)).toBeGreaterThan(3 * 1024 * 1024 * 1024); // grown from 1.75 GiB to fill the 4 GiB card
    expect(agentState).toBe('active');
    const bootId = rest.pop();
    expect(rest).toContain('portway.toml.applied');
    expect(rest).not.toContain('portway.toml');

    // Reboot: offline, then online again by itself, with a new boot ID.
    const rebootStarted = Date.now();
    await ssh(disposer, 'systemctl reboot', 60_000).catch(() => undefined);
    await waitFor(async () => (await devices(disposer)).find((d) => d.name === DEVICE && !d.online), { timeoutMs: 300_000, intervalMs: 2_000, description: 'the device offline while rebooting' });
    await timed('reboot to online', () => waitFor(async () => (await devices(disposer)).find((d) => d.name === DEVICE && d.online), { timeoutMs: ONLINE_TIMEOUT_MS, intervalMs: 3_000, description: 'the device online again' }));
    durations['reboot to online'] = Math.round((Date.now() - rebootStarted) / 1000);
    const second = await ssh(disposer, 'cat /proc/sys/kernel/random/boot_id; systemctl is-active portway-agent');
    expect(second.code).toBe(0);
    const [bootId2, agentState2] = second.stdout.trim().split('\n');
    expect(bootId2).not.toBe(bootId);
    expect(agentState2).toBe('active');
    expect(guest.serial.match(/Booting Linux/g)?.length).toBe(2);
    await guest.powerOff();
  }, FIRSTBOOT_TIMEOUT_MS + 4 * ONLINE_TIMEOUT_MS);

  it("Raspberry Pi Imager's systemd customisation: firstrun.sh runs once, the card reboots configured", async () => {
    const image = await copyImage(disposer, path.join(work, 'imager.img'));
    const key = readFileSync(`${sshKey}.pub`, 'utf8').trim();
    // What Imager writes for hostname, SSH key, user and Wi-Fi (its generateSystemdScript, imager_custom branch).
    const firstrun = [
      '#!/bin/sh', '', 'set +e', '',
      'CURRENT_HOSTNAME=$(cat /etc/hostname | tr -d " \\t\\n\\r")',
      'if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then', '   /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname imager-pi', 'else', '   echo imager-pi >/etc/hostname', 'fi',
      'FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)',
      'if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then', `   /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k '${key}'`, 'fi',
      'if [ -f /usr/lib/userconf-pi/userconf ]; then', "   /usr/lib/userconf-pi/userconf 'pi' ''", 'fi',
      'if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then', `   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan 'Field Net' '${'ab'.repeat(32)}' 'DE'`, 'fi',
      'rm -f /boot/firstrun.sh', "sed -i 's| systemd.run.*||g' /boot/cmdline.txt", 'exit 0', '',
    ].join('\n');
    await writeBootFile(disposer, image, 'firstrun.sh', firstrun, work);
    const cmdline = (await readBootFile(disposer, image, 'cmdline.txt')).trim();
    await writeBootFile(disposer, image, 'cmdline.txt', `${cmdline} systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n`, work);

    const guest = QemuGuest.start(disposer, { image, ...kernel, cmdline: await guestCmdline(disposer, image), logFile: serialLog(), exitOnReboot: true });
    await timed('Imager customisation boot', async () => {
      await guest.waitForSerial(/portway-imager: firstrun\.sh exited with 0/, FIRSTBOOT_TIMEOUT_MS, "Imager's firstrun.sh");
      await Promise.race([guest.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('no reboot after firstrun.sh')), 180_000))]);
    });
    expect(await bootFileNames(disposer, image)).not.toContain('firstrun.sh');
    expect(await readBootFile(disposer, image, 'cmdline.txt')).toBe(`${cmdline}\n`);
    expect((await readRootFile(disposer, image, '/etc/hostname'))?.trim()).toBe('imager-pi');
    expect(await readRootFile(disposer, image, '/root/.ssh/authorized_keys')).toContain(key);
    expect(await readRootFile(disposer, image, '/home/pi/.ssh/authorized_keys')).toContain(key);
    expect(await readRootFile(disposer, image, '/etc/NetworkManager/system-connections/imager-wifi.nmconnection')).toContain('ssid=Field Net');
    expect(await readRootFile(disposer, image, '/etc/shadow')).toMatch(/^pi:[*!]/m);
  }, FIRSTBOOT_TIMEOUT_MS + 300_000);

  describe('a bad portway.toml: the reason on the console and in the journal, nothing applied, a login prompt', () => {
    let image = '';
    beforeAll(async () => {
      if (!skip) image = await copyImage(setup, path.join(work, 'bad.img'));
    });
    const good = (): string => `relay = "${RELAY}"\ncaFingerprint = "${'ab'.repeat(32)}"\nclaimCode = "KYVJ-1HGM-3BSH-SH72-MGXG-1KHS"\nname = "pi-bad"\n`;

    it.each<[string, () => string, RegExp]>([
      ['a misspelt key', () => good().replace('name =', 'nmae ='), /nmae/],
      ['a bad Wi-Fi block', () => `${good()}[wifi]\nssid = "Field"\npassphrase = "short"\ncountry = "DE"\n`, /wifi\.passphrase: must be 8-63/],
      ['no claim code', () => good().replace(/claimCode = .*\n/, ''), /give exactly one of enrollKey or claimCode/],
    ])('%s', async (_what, text, reason) => {
      await writeBootFile(disposer, image, 'portway.toml', text(), work);
      const guest = QemuGuest.start(disposer, { image, ...kernel, cmdline: await guestCmdline(disposer, image, ['systemd.journald.forward_to_console=1']), logFile: serialLog() });
      await timed(`bad portway.toml boot (${_what})`, async () => {
        const direct = await guest.waitForSerial(new RegExp(`portway-agent: PW_CONFIG_INVALID: .*${reason.source}`), FIRSTBOOT_TIMEOUT_MS, 'the reason on the console');
        await guest.waitForSerial(new RegExp(`portway-firstboot\\[\\d+\\]: .*${reason.source}`), 120_000, 'the reason as a journal entry');
        await guest.waitForSerial(/was NOT applied/, 60_000, 'NOT applied');
        await guest.waitForSerial(/login: /, 300_000, 'a login prompt', direct.index);
      });
      await guest.powerOff();
      expect(await readBootFile(disposer, image, 'portway.toml')).toBe(text());
      expect(await readRootFile(disposer, image, '/etc/portway/agent.json')).toContain('relay.invalid');
    }, FIRSTBOOT_TIMEOUT_MS + 600_000);

    it('CRLF line endings (saved on Windows): applied', async () => {
      await writeBootFile(disposer, image, 'portway.toml', good().replace(/\n/g, '\r\n'), work);
      const guest = QemuGuest.start(disposer, { image, ...kernel, cmdline: await guestCmdline(disposer, image), logFile: serialLog() });
      await timed('CRLF portway.toml boot', async () => {
        await guest.waitForSerial(/portway-firstboot: applied .*"name":"pi-bad"/, FIRSTBOOT_TIMEOUT_MS, 'applied');
        await guest.waitForSerial(/login: /, 300_000, 'a login prompt');
      });
      await guest.powerOff();
      expect(existsSync(image)).toBe(true);
      expect(await bootFileNames(disposer, image)).not.toContain('portway.toml');
      expect(await readRootFile(disposer, image, '/etc/portway/agent.json')).toContain('"name": "pi-bad"');
    }, FIRSTBOOT_TIMEOUT_MS + 600_000);
  });
});
