/**
 * Client settings under $XDG_CONFIG_HOME/portway (default ~/.config/portway), every file mode 0600:
 *   client.json        { relay: "host:port", userId, userName }
 *   token              the API token
 *   user.key/user.crt  the user's key pair and certificate (the key never leaves this machine)
 *   ca.crt             the relay CA (verifies devices in end-to-end sessions)
 *   relay-ca.crt       verifies the relay's TLS certificate
 *   known_devices.json device ID -> pinned key fingerprint (first use, then enforced)
 *   device-grants.json device ID -> the last grant set this machine signed as a device's owner (device-grants.ts)
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as z from 'zod';
import { PortwayError } from '../../protocol';
import { parseHostPort } from '../../shared/relay-trust';
import { writeFileAtomic } from '../../shared/write-file-atomic';

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.length > 0 ? env.XDG_CONFIG_HOME : path.join(os.homedir(), '.config');
  return path.join(base, 'portway');
}

const clientJsonSchema = z.object({ relay: z.string().min(1), userId: z.string().min(1), userName: z.string() });

export interface ClientSettings {
  readonly dir: string;
  readonly relay: { host: string; port: number };
  readonly relayText: string;
  readonly userId: string;
  readonly userName: string;
  readonly token: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly caPem: string;
  readonly relayCaPem: string;
}

export async function saveSettings(dir: string, s: Omit<ClientSettings, 'dir' | 'relay'>): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const f = (n: string): string => path.join(dir, n);
  await writeFileAtomic(f('user.key'), s.keyPem, 0o600);
  await writeFileAtomic(f('user.crt'), s.certPem, 0o600);
  await writeFileAtomic(f('ca.crt'), s.caPem, 0o600);
  await writeFileAtomic(f('relay-ca.crt'), s.relayCaPem, 0o600);
  await writeFileAtomic(f('token'), s.token, 0o600);
  await writeFileAtomic(f('client.json'), JSON.stringify({ relay: s.relayText, userId: s.userId, userName: s.userName }, null, 2), 0o600);
}

export async function loadSettings(dir: string): Promise<ClientSettings> {
  const f = (n: string): string => path.join(dir, n);
  let files: string[];
  try {
    files = await Promise.all(['client.json', 'token', 'user.key', 'user.crt', 'ca.crt', 'relay-ca.crt'].map((n) => fs.readFile(f(n), 'utf8')));
  } catch (err) {
    throw new PortwayError('PW_NOT_LOGGED_IN', `no client settings in ${dir}; run "portway login" first`, { cause: err });
  }
  const [json, token, keyPem, certPem, caPem, relayCaPem] = files as [string, string, string, string, string, string];
  let parsed: z.infer<typeof clientJsonSchema>;
  try {
    parsed = clientJsonSchema.parse(JSON.parse(json));
  } catch (err) {
    throw new PortwayError('PW_CONFIG_INVALID', `${f('client.json')} is damaged; run "portway login" again`, { cause: err });
  }
  return { dir, relay: parseHostPort(parsed.relay), relayText: parsed.relay, userId: parsed.userId, userName: parsed.userName, token: token.trim(), keyPem, certPem, caPem, relayCaPem };
}

/** Pins of device keys, recorded on first use and enforced afterwards. */
export class KnownDevices {
  private constructor(
    private readonly file: string,
    private readonly pins: Record<string, string>,
  ) {}

  static async load(dir: string): Promise<KnownDevices> {
    const file = path.join(dir, 'known_devices.json');
    try {
      const parsed = z.record(z.string(), z.string().regex(/^[0-9a-f]{64}$/)).parse(JSON.parse(await fs.readFile(file, 'utf8')));
      return new KnownDevices(file, parsed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new KnownDevices(file, {});
      throw new PortwayError('PW_CONFIG_INVALID', `${file} is damaged; fix or remove it (it holds device key pins)`, { cause: err });
    }
  }

  get(deviceId: string): string | undefined {
    return this.pins[deviceId];
  }

  /** Check `fingerprint` against the pin; pin it if the device is new. */
  async check(deviceId: string, fingerprint: string): Promise<void> {
    const pinned = this.pins[deviceId];
    if (pinned === undefined) {
      this.pins[deviceId] = fingerprint;
      await writeFileAtomic(this.file, JSON.stringify(this.pins, null, 2), 0o600);
      return;
    }
    if (pinned !== fingerprint) {
      throw new PortwayError('PW_E2E_DEVICE_KEY_MISMATCH', `device ${deviceId} presented key ${fingerprint.slice(0, 16)}…, but ${pinned.slice(0, 16)}… is pinned for it`);
    }
  }
}
