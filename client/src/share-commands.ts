/**
 * `portway share` and `portway unshare`: the relay's share (its ACL: who it lets open streams) and, on a device
 * this machine claimed, the owner-signed grant the device itself checks (device-grants.ts). USER may be the
 * caller's own name, with the keys of their other machines: the relay already lets its owner in, the device
 * needs the grant.
 */
import { PortwayError, type GrantEntry } from '../../protocol';
import { apiRequest } from '../../shared/https-json';
import { parseDuration } from '../../shared/parse-duration';
import type { ShareView } from './account-commands';
import { changeGrants, checkFingerprints, granteeKeys, type GrantOutcome } from './device-grants';
import { configDir, loadSettings } from './settings';

const API_TIMEOUT_MS = 15_000;

export interface ShareResult {
  readonly share?: ShareView;
  readonly grant: GrantOutcome;
}

export async function shareDevice(options: { device: string; user: string; services: readonly string[]; keyFingerprints: readonly string[]; expires?: string }): Promise<ShareResult> {
  const pinned = checkFingerprints(options.keyFingerprints);
  const expiresAt = options.expires === undefined ? undefined : Date.now() + parseDuration(options.expires);
  const s = await loadSettings(configDir());
  const isSelf = options.user === s.userName;
  const share = isSelf
    ? undefined
    : await apiRequest<ShareView>({
        relay: s.relay, caPem: s.relayCaPem, method: 'POST', path: '/v1/shares', token: s.token, timeoutMs: API_TIMEOUT_MS,
        body: { device: options.device, user: options.user, ...(options.services.length > 0 ? { services: options.services } : {}) },
      });
  const grant = await changeGrants(s, options.device, async (entries) => {
    const { keys, from } = await granteeKeys(s, options.user, pinned);
    // Without pinned keys the user's grant is replaced as a whole; with them, only those keys' entries.
    const kept = entries.filter((e) => (from === 'pinned' ? !keys.includes(e.key) : e.user !== options.user && !keys.includes(e.key)));
    const added: GrantEntry[] = keys.map((key) => ({
      key, user: options.user, ...(options.services.length > 0 ? { services: [...new Set(options.services)].sort() } : {}), ...(expiresAt === undefined ? {} : { expiresAt }),
    }));
    return { entries: [...kept, ...added], keys, keysFrom: from };
  });
  if (isSelf && grant.kind !== 'signed') {
    // Nothing to sign here: the relay's answer to a share with the owner (PW_BAD_REQUEST, or the token's scope) says why.
    await apiRequest<ShareView>({ relay: s.relay, caPem: s.relayCaPem, method: 'POST', path: '/v1/shares', token: s.token, timeoutMs: API_TIMEOUT_MS, body: { device: options.device, user: options.user } });
    throw new PortwayError('PW_BAD_REQUEST', `you own ${options.device}; sharing with yourself grants your other machines' keys on a device this machine claimed`);
  }
  return { ...(share ? { share } : {}), grant };
}

export async function unshareDevice(options: { device: string; user: string; keyFingerprints: readonly string[] }): Promise<ShareResult & { readonly removedShare: boolean }> {
  const pinned = checkFingerprints(options.keyFingerprints);
  const s = await loadSettings(configDir());
  let removedShare = false;
  if (options.user !== s.userName && pinned.length === 0) {
    try {
      await apiRequest({ relay: s.relay, caPem: s.relayCaPem, method: 'DELETE', path: `/v1/shares/${encodeURIComponent(options.device)}/${encodeURIComponent(options.user)}`, token: s.token, timeoutMs: API_TIMEOUT_MS });
      removedShare = true;
    } catch (err) {
      // No relay share: the user may still hold a grant (a key granted by fingerprint); that is removed below.
      if (!(err instanceof PortwayError && err.code === 'PW_NOT_FOUND')) throw err;
    }
  }
  let removedKeys: string[] = [];
  const grant = await changeGrants(s, options.device, async (entries) => {
    const gone = (e: GrantEntry): boolean => (pinned.length > 0 ? pinned.includes(e.key) : e.user === options.user);
    removedKeys = [...new Set(entries.filter(gone).map((e) => e.key))];
    if (removedKeys.length === 0 && !removedShare) throw new PortwayError('PW_NOT_FOUND', `${options.device} is not shared with ${options.user}`);
    return Promise.resolve({ entries: entries.filter((e) => !gone(e)), keys: removedKeys, keysFrom: 'pinned' as const });
  });
  if (!removedShare && grant.kind !== 'signed') throw new PortwayError('PW_NOT_FOUND', `${options.device} is not shared with ${options.user}`);
  return { grant, removedShare };
}
