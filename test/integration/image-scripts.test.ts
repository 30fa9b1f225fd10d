/**
 * The SD image's scripts without building an image (fast, no root): every shell script under image/ is
 * shellcheck-clean; image/customize writes a portway.toml that the device's first boot accepts into a small FAT +
 * MBR file shaped like the image (mkfs.vfat + sfdisk, no mounts), prints a new claim code (and a label line), and
 * refuses bad options, settings the device would refuse and files that are not a Portway image with the right exit
 * status and without changing the file; image/build refuses bad options before it needs root; image/os-list.mjs
 * writes the fields Raspberry Pi Imager's schema requires. The image itself is built and booted in
 * test/integration/image-boot.test.ts.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NOT_CONFIGURED, planFirstboot } from '../../agent/src/firstboot/firstboot-plan';
import { parseClaimCode } from '../../protocol';
import { Disposer, makeTempDir, runProcess } from '../helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const IMAGE_DIR = path.join(ROOT, 'image');
const CUSTOMIZE = path.join(IMAGE_DIR, 'customize');
/** Every shell script of the image: the build, its hooks, and the scripts it installs into the rootfs. */
const SHELL_SCRIPTS = [
  'build',
  'customize',
  'hooks/setup-rootfs',
  'hooks/customize-rootfs',
  'rootfs/usr/lib/portway-image/growroot',
  'rootfs/usr/lib/portway-image/imager-firstrun',
  'rootfs/usr/lib/raspberrypi-sys-mods/imager_custom',
  'rootfs/usr/lib/userconf-pi/userconf',
].map((p) => path.join(IMAGE_DIR, p));
const FP = 'ef'.repeat(32);
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEm/mOCZuikZX+Tbs9PvZhd3mTy/oSuFkdFpltT0MM8 me@laptop';
const FAT_OFFSET = 1024 * 1024;

const disposer = new Disposer();
afterEach(() => disposer.run());

/** A 64 MiB file with an MBR, a FAT32 first partition labelled `label` at 1 MiB and a second partition. */
async function fakeImage(label = 'RASPIFIRM', type = 'c'): Promise<string> {
  const dir = await makeTempDir(disposer, 'portway-image-scripts-');
  const img = path.join(dir, 'card.img');
  const fat = path.join(dir, 'fat.part');
  const run = async (cmd: string, args: string[], input?: string): Promise<void> => {
    const r = await runProcess(disposer, cmd, args, { input });
    if (r.code !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  };
  await run('truncate', ['-s', '64M', img]);
  await run('sfdisk', ['-q', img], `label: dos\nstart=1MiB, size=40MiB, type=${type}\nstart=41MiB, type=83\n`);
  await run('mkfs.vfat', ['-F', '32', '-n', label, '-C', fat, String(40 * 1024)]);
  await run('dd', [`if=${fat}`, `of=${img}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
  return img;
}

async function bootFile(img: string): Promise<string> {
  const r = await runProcess(disposer, 'mtype', ['-i', `${img}@@${FAT_OFFSET}`, '::/portway.toml'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  if (r.code !== 0) throw new Error(`mtype: ${r.stderr}`);
  return r.stdout;
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
const customize = (args: readonly string[], input?: string) => runProcess(disposer, CUSTOMIZE, args, { input, timeoutMs: 60_000 });
const common = (img: string): string[] => [img, '--relay', '10.254.77.1:8443', '--ca-fingerprint', FP, '--name', 'pi-card'];

describe('image/ scripts', () => {
  it('are shellcheck-clean', async () => {
    const result = await runProcess(disposer, 'shellcheck', SHELL_SCRIPTS);
    expect(result.stdout).toBe('');
    expect(result.code).toBe(0);
  });

  it('customize --new-claim-code --label: a valid code printed, portway.toml accepted by first boot', async () => {
    const img = await fakeImage();
    const dir = path.dirname(img);
    await writeFile(path.join(dir, 'keys.pub'), `# my keys\r\n${KEY}\r\n\r\n`);
    const result = await customize([...common(img), '--new-claim-code', '--label', '--ssh-key-file', path.join(dir, 'keys.pub'), '--wifi-ssid', 'Field "Net"', '--wifi-country', 'de', '--wifi-passphrase-file', '-'], 'correct horse battery\n');
    expect(result.stderr).toContain('wrote portway.toml for pi-card');
    expect(result.code).toBe(0);
    const [code, label] = result.stdout.trimEnd().split('\n');
    expect(() => parseClaimCode(code)).not.toThrow();
    expect(label).toBe(`pi-card\t${code}`);
    const toml = await bootFile(img);
    const plan = planFirstboot(Buffer.from(toml), undefined, 'portway.toml');
    if (plan === NOT_CONFIGURED) throw new Error('not configured');
    expect(JSON.parse(plan.agentJson)).toMatchObject({ relay: '10.254.77.1:8443', caFingerprint: FP, name: 'pi-card', claimCode: code });
    expect(plan.authorizedKeys).toContain(KEY);
    expect(plan.nmConnection).toContain('ssid=Field "Net"');
    expect(plan.nmConnection).toContain('psk=correct horse battery');
  });

  it('customize --enroll-key-file and --claim-code write the secret given', async () => {
    const img = await fakeImage();
    const key = path.join(path.dirname(img), 'enroll');
    await writeFile(key, 'pwe_enroll-me\n');
    expect((await customize([...common(img), '--enroll-key-file', key])).code).toBe(0);
    expect(await bootFile(img)).toContain('enrollKey = "pwe_enroll-me"');
    const code = 'KYVJ-1HGM-3BSH-SH72-MGXG-1KHS';
    const again = await customize([...common(img), '--claim-code', code]);
    expect(again.stdout).toBe('');
    expect(await bootFile(img)).toContain(`claimCode = "${code}"`);
  });

  it.each<[string, (img: string) => string[], number, string]>([
    ['no arguments', () => [], 2, 'no IMAGE given'],
    ['an unknown option', (img) => [...common(img), '--claim-code', 'X', '--bogus'], 2, 'unknown option: --bogus'],
    ['no relay', (img) => [img, '--ca-fingerprint', FP, '--name', 'x', '--new-claim-code'], 2, '--relay is required'],
    ['two secrets', (img) => [...common(img), '--new-claim-code', '--claim-code', 'X'], 2, 'exactly one of'],
    ['no secret', (img) => common(img), 2, 'exactly one of'],
    ['--label without --new-claim-code', (img) => [...common(img), '--claim-code', 'X', '--label'], 2, '--label goes with'],
    ['Wi-Fi without a country', (img) => [...common(img), '--new-claim-code', '--wifi-ssid', 'Net'], 2, '--wifi-ssid needs --wifi-country'],
    ['a country without Wi-Fi', (img) => [...common(img), '--new-claim-code', '--wifi-country', 'DE'], 2, 'need --wifi-ssid'],
    ['a compressed image', (img) => [`${img}.xz`, '--relay', 'r:1', '--ca-fingerprint', FP, '--name', 'x', '--new-claim-code'], 2, 'decompress it first'],
    ['a short fingerprint', (img) => [img, '--relay', '10.0.0.1:1', '--ca-fingerprint', 'abc', '--name', 'x', '--new-claim-code'], 2, 'caFingerprint: must be 64 hex digits'],
    ['a relay without a port', (img) => [img, '--relay', 'relay.example', '--ca-fingerprint', FP, '--name', 'x', '--new-claim-code'], 2, 'relay: must be HOST:PORT'],
    ['a bad device name', (img) => [img, '--relay', 'r.example:1', '--ca-fingerprint', FP, '--name', 'pi card', '--new-claim-code'], 2, 'name:'],
    ['a claim code that is not one', (img) => [...common(img), '--claim-code', 'ABCD-EFGH'], 2, 'claimCode: not a claim code'],
    ['a control character', (img) => [...common(img), '--new-claim-code', '--wifi-ssid', 'a\tb', '--wifi-country', 'DE'], 2, 'control characters'],
    ['a missing SSH key file', (img) => [...common(img), '--new-claim-code', '--ssh-key-file', '/nonexistent/key.pub'], 2, 'cannot read /nonexistent/key.pub'],
  ])('customize refuses %s with its exit status and leaves the image as it was', async (_what, args, status, message) => {
    const img = await fakeImage();
    const before = sha(img);
    const result = await customize(args(img));
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(status);
    expect(sha(img)).toBe(before);
  });

  it('customize refuses a garbage SSH key file: the device would refuse it', async () => {
    const img = await fakeImage();
    const keys = path.join(path.dirname(img), 'keys.pub');
    await writeFile(keys, 'this is not a key\n');
    const before = sha(img);
    const result = await customize([...common(img), '--new-claim-code', '--ssh-key-file', keys]);
    expect(result.stderr).toContain('sshAuthorizedKeys.0: must be an OpenSSH public key line');
    expect(result.code).toBe(2);
    expect(sha(img)).toBe(before);
  });

  it.each<[string, () => Promise<string>, string]>([
    ['a text file', async () => {
      const file = path.join(await makeTempDir(disposer), 'notes.img');
      await writeFile(file, 'hello\n'.repeat(1000));
      return file;
    }, 'no partition table'],
    ['a missing file', async () => '/nonexistent/portway.img', 'no such file'],
    ['a card whose first partition is Linux', () => fakeImage('RASPIFIRM', '83'), 'not a FAT32 (LBA) boot partition'],
    ['a card whose boot partition has another label', () => fakeImage('OTHERBOOT'), "labelled RASPIFIRM (got 'OTHERBOOT')"],
  ])('customize refuses %s as not a Portway image (exit 1)', async (_what, make, message) => {
    const img = await make();
    const result = await customize([...common(img), '--new-claim-code']);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(1);
  });

  it.each<[string[], string]>([
    [['--bogus'], 'unknown argument: --bogus'],
    [['--xz-level', 'x'], '--xz-level must be 0-9'],
    [['--outdir'], '--outdir needs a value'],
  ])('build %j exits 2 before doing anything', async (args, message) => {
    const result = await runProcess(disposer, path.join(IMAGE_DIR, 'build'), args);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(2);
  });

  it("os-list.mjs writes every field Raspberry Pi Imager's schema requires, and refuses a bad checksum", async () => {
    const out = path.join(await makeTempDir(disposer), 'os-list.json');
    const args = ['--out', out, '--url', 'https://example.invalid/portway-1.0.0-arm64.img.xz', '--version', '1.0.0', '--extract-size', '2147483648', '--extract-sha256', 'a'.repeat(64), '--download-size', '300000000', '--download-sha256', 'b'.repeat(64), '--release-date', '2026-01-02'];
    const ok = await runProcess(disposer, process.execPath, [path.join(IMAGE_DIR, 'os-list.mjs'), ...args]);
    expect(ok.code).toBe(0);
    const list = JSON.parse(readFileSync(out, 'utf8')) as { os_list: Record<string, unknown>[] };
    const entry = list.os_list[0] as Record<string, unknown>;
    for (const field of ['name', 'description', 'icon', 'url', 'extract_size', 'extract_sha256', 'image_download_size', 'release_date']) expect(entry).toHaveProperty(field);
    expect(entry).toMatchObject({ init_format: 'systemd', devices: ['pi3-64bit', 'pi4-64bit'], extract_size: 2147483648, release_date: '2026-01-02', image_download_sha256: 'b'.repeat(64) });
    const bad = await runProcess(disposer, process.execPath, [path.join(IMAGE_DIR, 'os-list.mjs'), ...args.map((a) => (a === 'a'.repeat(64) ? 'xyz' : a))]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--extract-sha256 must be 64 lowercase hex digits');
  });
});
