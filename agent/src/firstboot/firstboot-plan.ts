/**
 * What first boot does with `portway.toml` from the boot partition, decided before anything is written:
 *
 *   relay = "relay.example.com:443"          # required, HOST:PORT
 *   caFingerprint = "3f9a…"                   # required, SHA-256 of the relay CA (64 hex digits, colons allowed)
 *   enrollKey = "pwk_…"                       # exactly one of enrollKey and claimCode
 *   claimCode = "…"
 *   name = "pump-station-7"                   # required, the device's name
 *   sshAuthorizedKeys = ["ssh-ed25519 AAAA… me@laptop"]   # optional, OpenSSH public keys for root's authorized_keys
 *   [wifi]                                    # optional
 *   ssid = "Field-Net"                        # 1-32 bytes
 *   passphrase = "…"                          # WPA-PSK: 8-63 printable ASCII characters or 64 hex digits
 *   country = "DE"                            # ISO 3166 alpha-2, the Wi-Fi regulatory domain
 *
 * Unknown keys are errors (a typo must not be silently ignored on a device nobody can log in to yet). A file with
 * no keys at all (the SD image's template, every line still commented out) is "not configured yet": nothing to do.
 * The plan holds every file to write: agent.json (the existing config's other keys, such as services, are kept),
 * root's SSH authorized_keys, the NetworkManager keyfile and the regulatory-domain setting, and the boot file's new
 * text without its secrets. CRLF line endings (a file saved on Windows) are valid TOML and read like LF.
 * Pure: the caller reads and writes.
 */
import { createHash } from 'node:crypto';
import { parseToml, stringifyToml } from './toml';
import * as z from 'zod';
import { nameSchema, PortwayError } from '../../../protocol';
import { agentConfigSchema } from '../config';

export const AGENT_STATE_DIR = '/var/lib/portway';
const MAX_TOML_BYTES = 16 * 1024;
/** Keys firstboot sets in agent.json; the rest of an existing config is kept. */
const OWNED_KEYS = ['relay', 'caFile', 'caFingerprint', 'enrollKey', 'claimCode', 'name'] as const;

const wifiSchema = z
  .object({
    ssid: z.string().min(1).refine((s) => Buffer.byteLength(s) <= 32, 'must be at most 32 bytes').refine((s) => !/[\u0000-\u001f]/.test(s), 'must not contain control characters'),
    passphrase: z.string().regex(/^(?:[\x20-\x7e]{8,63}|[0-9a-fA-F]{64})$/, 'must be 8-63 printable ASCII characters or 64 hex digits (WPA-PSK)').optional(),
    country: z.string().regex(/^[A-Za-z]{2}$/, 'must be a two-letter country code such as DE or US').transform((c) => c.toUpperCase()),
  })
  .strict();

/** One OpenSSH public key line: type, base64 key, optional comment; no options (from="..." etc.), no line breaks. */
const SSH_KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( [^\r\n\u0000]*)?$/;
const MAX_SSH_KEYS = 32;

export const bootConfigSchema = z
  .object({
    relay: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be HOST:PORT'),
    caFingerprint: z.string().transform((s) => s.replace(/:/g, '').toLowerCase()).pipe(z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 hex digits (SHA-256), colons allowed')),
    enrollKey: z.string().min(1).max(256).optional(),
    claimCode: z.string().min(1).max(256).optional(),
    name: nameSchema,
    sshAuthorizedKeys: z.array(z.string().trim().max(16 * 1024).regex(SSH_KEY_RE, 'must be an OpenSSH public key line such as "ssh-ed25519 AAAA... me@laptop"')).max(MAX_SSH_KEYS).optional(),
    wifi: wifiSchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.enrollKey === undefined) === (c.claimCode === undefined)) ctx.addIssue({ code: 'custom', path: ['enrollKey'], message: 'give exactly one of enrollKey or claimCode' });
  });
export type BootConfig = z.infer<typeof bootConfigSchema>;

export interface FirstbootPlan {
  readonly agentJson: string;
  /** root's authorized_keys, when sshAuthorizedKeys is given. */
  readonly authorizedKeys?: string;
  /** NetworkManager keyfile text, when [wifi] is given. */
  readonly nmConnection?: string;
  /** modprobe.d line setting the Wi-Fi regulatory domain, when [wifi] is given. */
  readonly regulatoryDomain?: string;
  readonly country?: string;
  /** The boot file's text with enrollKey, claimCode and the Wi-Fi passphrase removed. */
  readonly consumedToml: string;
  readonly summary: Record<string, unknown>;
}

/** The template's state: every setting still commented out. */
export const NOT_CONFIGURED = 'not-configured';

/** Every problem at once, with its key path, as one PW_CONFIG_INVALID; NOT_CONFIGURED for a file without settings. */
export function planFirstboot(tomlBytes: Buffer, existingAgentJson: string | undefined, source: string): FirstbootPlan | typeof NOT_CONFIGURED {
  if (tomlBytes.length > MAX_TOML_BYTES) throw invalid(`${source}: larger than ${MAX_TOML_BYTES} bytes`);
  const text = new TextDecoder('utf-8', { fatal: false }).decode(tomlBytes);
  if (text.includes('\uFFFD') || text.includes('\u0000')) throw invalid(`${source}: not UTF-8 text`);
  let raw: unknown;
  try {
    raw = parseToml(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw invalid(`${source}: not valid TOML: ${String((err as Error).message).split('\n')[0]?.slice(0, 200)}`);
  }
  if (Object.keys(raw as Record<string, unknown>).length === 0) return NOT_CONFIGURED;
  const parsed = bootConfigSchema.safeParse(raw);
  if (!parsed.success) throw invalid(`${source}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ')}`);
  const boot = parsed.data;

  let base: Record<string, unknown> = {};
  if (existingAgentJson !== undefined) {
    try {
      const json: unknown = JSON.parse(existingAgentJson);
      if (json !== null && typeof json === 'object' && !Array.isArray(json)) base = json as Record<string, unknown>;
    } catch {
      // an unreadable old config is replaced as a whole: nothing in it can be trusted to keep
    }
  }
  const agent: Record<string, unknown> = Object.fromEntries(Object.entries(base).filter(([k]) => !(OWNED_KEYS as readonly string[]).includes(k)));
  Object.assign(agent, { relay: boot.relay, caFingerprint: boot.caFingerprint, name: boot.name, stateDir: typeof base.stateDir === 'string' ? base.stateDir : AGENT_STATE_DIR });
  if (boot.enrollKey !== undefined) agent.enrollKey = boot.enrollKey;
  if (boot.claimCode !== undefined) agent.claimCode = boot.claimCode;
  const checked = agentConfigSchema.safeParse(agent);
  if (!checked.success) {
    const problems = checked.error.issues.map((i) => (i.code === 'unrecognized_keys' && i.keys.includes('claimCode') ? 'claimCode: this agent version does not support claim codes yet; use enrollKey' : `${i.path.join('.') || '(config)'}: ${i.message}`));
    throw invalid(`agent.json from ${source} would be invalid: ${problems.join('; ')}`);
  }

  const consumed: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  delete consumed.enrollKey;
  delete consumed.claimCode;
  if (boot.wifi) consumed.wifi = { ...(consumed.wifi as Record<string, unknown>), passphrase: undefined };
  const consumedToml = `# Applied by portway-firstboot; enrollKey, claimCode and the Wi-Fi passphrase were removed.\n# The device now reads /etc/portway/agent.json; editing this file changes nothing.\n${stringifyToml(JSON.parse(JSON.stringify(consumed)) as Record<string, unknown>)}\n`;

  return {
    agentJson: `${JSON.stringify(agent, null, 2)}\n`,
    authorizedKeys: boot.sshAuthorizedKeys && boot.sshAuthorizedKeys.length > 0 ? `# Written by portway-firstboot from portway.toml (sshAuthorizedKeys)\n${boot.sshAuthorizedKeys.join('\n')}\n` : undefined,
    nmConnection: boot.wifi ? nmConnection(boot.wifi) : undefined,
    regulatoryDomain: boot.wifi ? `# Written by portway-firstboot from portway.toml\noptions cfg80211 ieee80211_regdom=${boot.wifi.country}\n` : undefined,
    country: boot.wifi?.country,
    consumedToml,
    summary: { relay: boot.relay, name: boot.name, secret: boot.enrollKey !== undefined ? 'enrollKey' : 'claimCode', sshKeys: boot.sshAuthorizedKeys?.length ?? 0, wifi: boot.wifi ? { ssid: boot.wifi.ssid, country: boot.wifi.country } : undefined },
  };
}

/** A NetworkManager keyfile for one WPA-PSK (or open) network, connecting automatically. */
function nmConnection(wifi: NonNullable<BootConfig['wifi']>): string {
  const uuid = uuidFrom(`portway-wifi:${wifi.ssid}`);
  const lines = ['[connection]', 'id=portway-wifi', `uuid=${uuid}`, 'type=wifi', 'autoconnect=true', '', '[wifi]', 'mode=infrastructure', `ssid=${keyfileString(wifi.ssid)}`, ''];
  if (wifi.passphrase !== undefined) lines.push('[wifi-security]', 'key-mgmt=wpa-psk', `psk=${keyfileString(wifi.passphrase)}`, '');
  lines.push('[ipv4]', 'method=auto', '', '[ipv6]', 'method=auto', '');
  return lines.join('\n');
}

/** GKeyFile escaping: backslash, and leading/trailing spaces and line breaks (no control characters get here). */
function keyfileString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/^ /, '\\s').replace(/ $/, '\\s').replace(/\n/g, '\\n').replace(/;/g, '\\;');
}

/** A stable RFC 4122-shaped UUID from a name (so a rerun keeps the same connection). */
function uuidFrom(name: string): string {
  const h = createHash('sha256').update(name).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((Number.parseInt(h[16] as string, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function invalid(message: string): PortwayError {
  return new PortwayError('PW_CONFIG_INVALID', message);
}
