/**
 * The owner side of grants (docs/security.md "Grants"): `portway share` / `unshare` on a device this machine
 * claimed also sign a new grant set with user.key (the key the device pinned) and hand it to the relay, which
 * delivers it to the device. The relay's own share (its ACL) is changed as before.
 *
 * The sequence number is one above the highest this machine signed (device-grants.json, 0600) and the relay holds,
 * and the entries start from the newest set this machine can verify as its own: a relay that hands back an older
 * set cannot make the owner re-grant a key that was removed since. A grantee's key comes from the relay (the keys
 * of their current certificates) unless `--key-fingerprint` pins it: both are printed, so the owner can compare
 * with `portway key` on the grantee's machine.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { PortwayError, signedGrantSetSchema, type GrantEntry, type SignedGrantSet } from '../../protocol';
import { spkiOfKeyPem } from '../../shared/claim-tag';
import { signGrantSet, verifyGrantSet } from '../../shared/grant-signature';
import { apiRequest } from '../../shared/https-json';
import { writeFileAtomic } from '../../shared/write-file-atomic';
import { spkiFingerprint } from '../../shared/x509';
import { configDir, loadSettings, type ClientSettings } from './settings';

const API_TIMEOUT_MS = 15_000;
const FINGERPRINT = /^[0-9a-f]{64}$/;

const grantInfoSchema = z.object({ deviceId: z.string(), deviceName: z.string(), ownerKey: z.string().regex(FINGERPRINT).optional(), seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER - 1), grants: z.unknown().optional() });
const userKeysSchema = z.object({ userId: z.string(), userName: z.string(), keys: z.array(z.object({ fingerprint: z.string().regex(FINGERPRINT), since: z.number() })).max(100) });
const localFileSchema = z.record(z.string(), signedGrantSetSchema);

export type GrantOutcome =
  /** A new set was signed and stored: `keys` granted (or removed), at `seq`; `delivered` when the device was online. */
  | { readonly kind: 'signed'; readonly seq: number; readonly keys: readonly string[]; readonly keysFrom: 'relay' | 'pinned'; readonly delivered: boolean; readonly entries: readonly GrantEntry[] }
  /** Enrolled with a fleet key: the relay's share is all there is. */
  | { readonly kind: 'not-claimed' }
  /** Claimed with another key (another machine of the owner, or the caller is an admin): this machine cannot sign. */
  | { readonly kind: 'not-owner'; readonly ownerKey: string };

export function myKeyFingerprint(s: ClientSettings): string {
  return spkiFingerprint(spkiOfKeyPem(s.keyPem));
}

/** This machine's user key fingerprint (`portway key`). */
export async function ownKeyFingerprint(): Promise<string> {
  return myKeyFingerprint(await loadSettings(configDir()));
}

function call<T>(s: ClientSettings, method: 'GET' | 'PUT', pathName: string, body?: unknown): Promise<T> {
  return apiRequest<T>({ relay: s.relay, caPem: s.relayCaPem, method, path: pathName, token: s.token, timeoutMs: API_TIMEOUT_MS, ...(body === undefined ? {} : { body }) });
}

export function checkFingerprints(values: readonly string[]): string[] {
  const out = values.map((v) => v.toLowerCase().replace(/^sha256:/, '').replace(/:/g, ''));
  for (const fp of out) if (!FINGERPRINT.test(fp)) throw new PortwayError('PW_BAD_REQUEST', `--key-fingerprint must be a SHA-256 hex fingerprint (64 hex digits), got ${JSON.stringify(fp).slice(0, 80)}`);
  return out;
}

/** The keys to grant `user`: pinned ones, or the relay's (minus this machine's own key). */
export async function granteeKeys(s: ClientSettings, user: string, pinned: readonly string[]): Promise<{ keys: string[]; from: 'relay' | 'pinned' }> {
  if (pinned.length > 0) return { keys: [...new Set(pinned)], from: 'pinned' };
  const answer = userKeysSchema.safeParse(await call<unknown>(s, 'GET', `/v1/users/${encodeURIComponent(user)}/keys`));
  if (!answer.success) throw new PortwayError('PW_BAD_FRAME', 'the relay sent a malformed key list');
  const mine = myKeyFingerprint(s);
  const keys = answer.data.keys.map((k) => k.fingerprint).filter((k) => k !== mine);
  if (keys.length === 0) throw new PortwayError('PW_NOT_FOUND', `${user} has no current certificate on the relay (they need to run portway login), or pass --key-fingerprint`);
  return { keys, from: 'relay' };
}

/**
 * Change the grants of `device`: `edit` gets the current entries and returns the new ones. Signs and stores a new
 * set when this machine holds the device's owner key.
 */
export async function changeGrants(
  s: ClientSettings,
  device: string,
  edit: (entries: readonly GrantEntry[]) => Promise<{ entries: GrantEntry[]; keys: string[]; keysFrom: 'relay' | 'pinned' }>,
): Promise<GrantOutcome> {
  const info = grantInfoSchema.safeParse(await call<unknown>(s, 'GET', `/v1/devices/${encodeURIComponent(device)}/grants`));
  if (!info.success) throw new PortwayError('PW_BAD_FRAME', 'the relay sent a malformed grant answer');
  const { deviceId, ownerKey } = info.data;
  if (!ownerKey) return { kind: 'not-claimed' };
  const mine = myKeyFingerprint(s);
  if (ownerKey !== mine) return { kind: 'not-owner', ownerKey };
  const local = await loadLocal(s.dir);
  const owners = new Set([mine]);
  const candidates = [info.data.grants, local[deviceId]].flatMap((g) => {
    if (g === undefined) return [];
    try {
      return [verifyGrantSet(g, { deviceId, ownerKeys: owners }).document];
    } catch (err) {
      if (err instanceof PortwayError && err.code === 'PW_GRANT_INVALID') return []; // not ours: ignored
      throw err;
    }
  });
  const base = candidates.sort((a, b) => b.seq - a.seq)[0];
  const edited = await edit(base?.entries ?? []);
  const seq = Math.max(info.data.seq, base?.seq ?? 0) + 1;
  const signed = signGrantSet({ v: 1, deviceId, seq, issuedAt: Date.now(), entries: edited.entries }, s.keyPem);
  // Recorded before it is sent: a set the relay stored but this machine forgot would make the next seq collide.
  await saveLocal(s.dir, { ...local, [deviceId]: signed });
  const put = await call<{ seq: number; delivered: boolean }>(s, 'PUT', `/v1/devices/${encodeURIComponent(deviceId)}/grants`, { grants: signed });
  return { kind: 'signed', seq, keys: edited.keys, keysFrom: edited.keysFrom, delivered: put.delivered === true, entries: edited.entries };
}

/**
 * The grant set the relay holds for `device` (`portway shares`), verified against the owner key: this machine's
 * own when it claimed the device, else the one the relay names (`signer` says which; only the device's own check
 * counts). Undefined when there is none, or it does not verify.
 */
export async function currentGrants(device: string): Promise<{ seq: number; entries: readonly GrantEntry[]; signer: 'this machine' | string } | undefined> {
  const s = await loadSettings(configDir());
  const info = grantInfoSchema.safeParse(await call<unknown>(s, 'GET', `/v1/devices/${encodeURIComponent(device)}/grants`));
  if (!info.success || !info.data.ownerKey || info.data.grants === undefined) return undefined;
  const mine = myKeyFingerprint(s);
  const owners = new Set([info.data.ownerKey]);
  try {
    const { document } = verifyGrantSet(info.data.grants, { deviceId: info.data.deviceId, ownerKeys: owners });
    return { seq: document.seq, entries: document.entries, signer: info.data.ownerKey === mine ? 'this machine' : info.data.ownerKey };
  } catch (err) {
    if (err instanceof PortwayError && err.code === 'PW_GRANT_INVALID') return undefined;
    throw err;
  }
}

async function loadLocal(dir: string): Promise<Record<string, SignedGrantSet>> {
  const file = path.join(dir, 'device-grants.json');
  try {
    return localFileSchema.parse(JSON.parse(await fs.readFile(file, 'utf8')));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new PortwayError('PW_CONFIG_INVALID', `${file} is damaged; fix or remove it (it holds the grant sets this machine signed)`, { cause: err });
  }
}

async function saveLocal(dir: string, sets: Record<string, SignedGrantSet>): Promise<void> {
  await writeFileAtomic(path.join(dir, 'device-grants.json'), JSON.stringify(sets, null, 2), 0o600);
}
