/**
 * `portway claim CODE [--name NAME]` and `portway claim-code new` (docs/security.md "Claim codes").
 *
 * The code is checked locally first (length, alphabet, check character: a typo never reaches the relay). Only
 * its lookup part is sent. The client asks for the pending device's key, sends its own key with
 * tagOwner = HMAC(S, owner input), and checks the device's tagDevice before it pins the device key in
 * known_devices.json: a relay that substituted either key cannot produce a MAC that verifies, and the claim
 * fails with PW_CLAIM_BINDING_FAILED on both sides.
 */
import { claimInfoSchema, claimResultSchema, parseClaimCode, PortwayError } from '../../protocol';
import { claimTag, isClaimTagValid, newClaimCode, parseSpkiBase64, spkiOfKeyPem } from '../../shared/claim-tag';
import { apiRequest } from '../../shared/https-json';
import { spkiFingerprint } from '../../shared/x509';
import { configDir, KnownDevices, loadSettings } from './settings';

/** The claimer waits for the device's answer; the relay gives up after its answerTimeoutMs (30 s). */
const CLAIM_TIMEOUT_MS = 45_000;
const API_TIMEOUT_MS = 15_000;

export interface ClaimedDevice {
  readonly deviceId: string;
  readonly name: string;
  readonly keyFingerprint: string;
}

export function newClaimCodeText(): string {
  return newClaimCode().text;
}

export async function claimDevice(codeText: string, options: { name?: string } = {}): Promise<ClaimedDevice> {
  const code = parseClaimCode(codeText);
  const s = await loadSettings(configDir());
  const ownerKey = spkiOfKeyPem(s.keyPem);
  const path = `/v1/claims/${code.claimId}`;
  const info = claimInfoSchema.safeParse(await apiRequest<unknown>({ relay: s.relay, caPem: s.relayCaPem, method: 'GET', path, token: s.token, timeoutMs: API_TIMEOUT_MS }));
  if (!info.success) throw new PortwayError('PW_BAD_FRAME', 'the relay sent a malformed claim answer');
  const deviceKey = parseSpkiBase64(info.data.deviceKey);
  const ownerTag = claimTag(code.secret, 'owner', code.claimId, deviceKey, ownerKey).toString('base64');
  const body = { ownerKey: ownerKey.toString('base64'), ownerTag, ...(options.name === undefined ? {} : { name: options.name }) };
  const result = claimResultSchema.safeParse(await apiRequest<unknown>({ relay: s.relay, caPem: s.relayCaPem, method: 'POST', path, token: s.token, body, timeoutMs: CLAIM_TIMEOUT_MS }));
  if (!result.success) throw new PortwayError('PW_BAD_FRAME', 'the relay sent a malformed claim result');
  const claimedKey = parseSpkiBase64(result.data.deviceKey);
  if (!claimedKey.equals(deviceKey) || !isClaimTagValid(result.data.deviceTag, code.secret, 'device', code.claimId, deviceKey, ownerKey)) {
    throw new PortwayError('PW_CLAIM_BINDING_FAILED', "the device's claim MAC does not verify: the relay changed a key on the way; nothing was pinned");
  }
  const keyFingerprint = spkiFingerprint(deviceKey);
  const known = await KnownDevices.load(s.dir);
  await known.check(result.data.deviceId, keyFingerprint);
  return { deviceId: result.data.deviceId, name: result.data.name, keyFingerprint };
}
