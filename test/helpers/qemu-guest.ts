/**
 * The Portway SD image under qemu-system-aarch64 (-M virt, TCG, cortex-a72), booted with its own kernel and
 * initrd taken from the image's FAT boot partition and the kernel command line from its cmdline.txt (the console
 * moved to the virt board's ttyAMA0), as the Raspberry Pi firmware would use them. The serial console is kept in
 * memory and in a log file (the qemu monitor is multiplexed on it: powerOff()). With `netns`, the guest gets a virtio NIC on a tap device inside that namespace (no
 * option ROM: the kernel is booted directly, and Debian's qemu-system-arm does not ship efi-virtio.rom).
 * Every wait is bounded; the disposer kills qemu.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Disposer } from './disposer';
import { runProcess } from './process';

export const FAT_OFFSET = 4 * 1024 * 1024;
export const ROOT_OFFSET = 260 * 1024 * 1024;
/** Longest any single guest run may take (qemu is started under `timeout`). */
const QEMU_MAX_S = 1800;
const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

/** A file on the image's FAT partition, as text. */
export async function readBootFile(disposer: Disposer, image: string, name: string): Promise<string> {
  const r = await runProcess(disposer, 'mtype', ['-i', `${image}@@${FAT_OFFSET}`, `::/${name}`], { env: MTOOLS_ENV });
  if (r.code !== 0) throw new Error(`mtype ${name}: ${r.stderr}`);
  return r.stdout;
}

export async function writeBootFile(disposer: Disposer, image: string, name: string, content: string | Buffer, dir: string): Promise<void> {
  const tmp = path.join(dir, `boot-file-${process.pid}`);
  await writeFile(tmp, content);
  const r = await runProcess(disposer, 'mcopy', ['-o', '-i', `${image}@@${FAT_OFFSET}`, tmp, `::/${name}`], { env: MTOOLS_ENV });
  await rm(tmp, { force: true });
  if (r.code !== 0) throw new Error(`mcopy ${name}: ${r.stderr}`);
}

export async function bootFileNames(disposer: Disposer, image: string): Promise<string[]> {
  const r = await runProcess(disposer, 'mdir', ['-b', '-i', `${image}@@${FAT_OFFSET}`, '::/'], { env: MTOOLS_ENV });
  if (r.code !== 0) throw new Error(`mdir: ${r.stderr}`);
  return r.stdout.split('\n').map((l) => l.replace(/^::\//, '').trim()).filter(Boolean);
}

/** A file of the image's ext4 root, read with debugfs (no mount); undefined when it does not exist. */
export async function readRootFile(disposer: Disposer, image: string, file: string): Promise<string | undefined> {
  const r = await runProcess(disposer, 'debugfs', ['-R', `cat ${file}`, `${image}?offset=${ROOT_OFFSET}`]);
  if (r.code !== 0 || /File not found|not found by ext2_lookup/.test(r.stderr)) return undefined;
  return r.stdout;
}

/** Copy the kernel and initrd off the FAT partition into `dir`. */
export async function extractKernel(disposer: Disposer, image: string, dir: string): Promise<{ kernel: string; initrd: string }> {
  const names = await bootFileNames(disposer, image);
  const kernelName = names.find((n) => /^vmlinuz/.test(n));
  const initrdName = names.find((n) => /^initrd\.img/.test(n));
  if (!kernelName || !initrdName) throw new Error(`no vmlinuz/initrd.img on the boot partition: ${names.join(' ')}`);
  const kernel = path.join(dir, 'vmlinuz');
  const initrd = path.join(dir, 'initrd.img');
  for (const [name, out] of [[kernelName, kernel], [initrdName, initrd]] as const) {
    const r = await runProcess(disposer, 'mcopy', ['-o', '-i', `${image}@@${FAT_OFFSET}`, `::/${name}`, out], { env: MTOOLS_ENV });
    if (r.code !== 0) throw new Error(`mcopy ${name}: ${r.stderr}`);
  }
  return { kernel, initrd };
}

/** cmdline.txt as the firmware would pass it, with the console on the virt board's PL011 and `extra` appended. */
export async function guestCmdline(disposer: Disposer, image: string, extra: readonly string[] = []): Promise<string> {
  const words = (await readBootFile(disposer, image, 'cmdline.txt')).trim().split(/\s+/).filter((w) => !w.startsWith('console='));
  return [...words, 'console=ttyAMA0,115200', ...extra].join(' ');
}

export interface GuestOptions {
  readonly image: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
  readonly logFile: string;
  /** Network namespace holding `tap`; absent: no NIC at all. */
  readonly netns?: string;
  readonly tap?: string;
  readonly mac?: string;
  /** qemu exits when the guest reboots (-no-reboot). */
  readonly exitOnReboot?: boolean;
}

export class QemuGuest {
  serial = '';
  readonly exited: Promise<number | null>;
  private constructor(readonly child: ChildProcess, private readonly logFile: string) {
    child.stdout?.setEncoding('utf8').on('data', (text: string) => this.onSerial(text));
    child.stderr?.setEncoding('utf8').on('data', (text: string) => this.onSerial(text));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static start(disposer: Disposer, o: GuestOptions): QemuGuest {
    const qemu = ['timeout', '--kill-after=10', String(QEMU_MAX_S), 'qemu-system-aarch64', '-M', 'virt', '-cpu', 'cortex-a72', '-m', '1024', '-smp', '2',
      '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.cmdline,
      '-drive', `file=${o.image},format=raw,if=virtio`, '-nographic', '-serial', 'mon:stdio'];
    if (o.netns !== undefined) qemu.push('-netdev', `tap,id=n0,ifname=${o.tap ?? 'tap0'},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=n0,mac=${o.mac ?? '52:54:00:12:34:56'},romfile=`);
    else qemu.push('-nic', 'none');
    if (o.exitOnReboot) qemu.push('-no-reboot');
    const [cmd, ...args] = o.netns !== undefined ? ['ip', 'netns', 'exec', o.netns, ...qemu] : qemu;
    appendFileSync(o.logFile, `\n===== ${new Date().toISOString()} ${qemu.join(' ')}\n`);
    // detached: its own process group (timeout leads it), so stop() reaches qemu even if timeout is SIGKILLed
    const child = spawn(cmd as string, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const guest = new QemuGuest(child, o.logFile);
    disposer.add(() => guest.stop(), 'stop qemu');
    return guest;
  }

  private onSerial(text: string): void {
    this.serial += text;
    if (this.serial.length > 4 * 1024 * 1024) this.serial = this.serial.slice(-2 * 1024 * 1024);
    appendFileSync(this.logFile, text);
  }

  /** Resolves with the first match of `re` in the serial output after `from` (a character index). */
  async waitForSerial(re: RegExp, timeoutMs: number, what: string, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const m = re.exec(this.serial.slice(from));
      if (m) return m;
      if (exited) throw new Error(`qemu exited while waiting for ${what}; serial tail:\n${this.serial.slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; serial tail:\n${this.serial.slice(-3000)}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /**
   * A clean shutdown: the power button (qemu monitor `system_powerdown`, reached on the multiplexed serial with
   * Ctrl-A c), which systemd-logind turns into a poweroff, so the file systems are clean for debugfs/mtools
   * afterwards. Falls back to stop() when the guest does not power off in time.
   */
  async powerOff(timeoutMs = 120_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.write('\x01c');
    await new Promise((resolve) => setTimeout(resolve, 500));
    this.child.stdin?.write('system_powerdown\n');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([this.exited.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)))]);
    clearTimeout(timer);
    if (timedOut) {
      await this.stop();
      throw new Error(`the guest did not power off within ${timeoutMs} ms; serial tail:\n${this.serial.slice(-2000)}`);
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const group = (signal: NodeJS.Signals): void => {
        try {
          process.kill(-(this.child.pid as number), signal);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      };
      group('SIGTERM');
      const timer = setTimeout(() => group('SIGKILL'), 15_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}
