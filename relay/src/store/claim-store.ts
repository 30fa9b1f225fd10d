/**
 * Pending device claims (claim codes, docs/security.md): the types and the store operations, run by SqlStore
 * over its driver. Every transition is one guarded statement, so concurrent claimers on any number of relays
 * see exactly one winner:
 *
 *   register (device)        -> pending
 *   pending  --offer-->         offered   (one claimer at a time; a stale offer may be taken over)
 *   offered  --withdraw-->      pending   (wrong MAC, device silent; failures + 1)
 *   offered  --complete-->      claimed   (in one transaction with the new device row; final)
 */
import { PortwayError } from '../../../protocol';
import type { SqlDriver, SqlExecutor } from './sql-driver';
import { DEVICE_COLUMNS, toDevice, type DeviceRow } from './store-rows';
import type { Device } from './store';

export type ClaimState = 'pending' | 'offered' | 'claimed';

export interface ClaimOffer {
  readonly offerId: string;
  readonly userId: string;
  /** Base64 DER SPKI of the claimer's key, and its MAC under the code's secret. */
  readonly ownerKey: string;
  readonly ownerTag: string;
  readonly name?: string;
  readonly offeredAt: number;
  /** The device's verdict, once it answered. */
  readonly answer?: { readonly ok: boolean; readonly deviceTag?: string; readonly code?: string };
}

export interface Claim {
  readonly claimId: string;
  readonly name: string;
  readonly csr: string;
  /** Base64 DER SPKI of the device key, and its SHA-256 hex. */
  readonly deviceKey: string;
  readonly keyFingerprint: string;
  /** SHA-256 hex of the device's poll token. */
  readonly pollHash: string;
  readonly state: ClaimState;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly failures: number;
  readonly offer?: ClaimOffer;
  readonly deviceId?: string;
  readonly certificate?: string;
  readonly claimedAt?: number;
}

export interface NewClaim {
  readonly claimId: string;
  readonly name: string;
  readonly csr: string;
  readonly deviceKey: string;
  readonly keyFingerprint: string;
  readonly pollHash: string;
  readonly expiresAt: number;
}

export interface ClaimedDevice {
  readonly id: string;
  readonly name: string;
  readonly ownerUserId: string;
  readonly certFingerprint: string;
  readonly keyFingerprint: string;
  readonly certificate: string;
}

interface ClaimRow {
  id: string; name: string; csr: string; device_key: string; key_fingerprint: string; poll_hash: string; state: ClaimState;
  created_at: number; expires_at: number; offer_id: string | null; offer_user_id: string | null; owner_key: string | null; owner_tag: string | null;
  offer_name: string | null; offered_at: number | null; answer_ok: number | null; device_tag: string | null; answer_code: string | null;
  failures: number; device_id: string | null; certificate: string | null; claimed_at: number | null;
}

const CLAIM_COLUMNS =
  'id, name, csr, device_key, key_fingerprint, poll_hash, state, created_at, expires_at, offer_id, offer_user_id, owner_key, owner_tag, offer_name, ' +
  'offered_at, answer_ok, device_tag, answer_code, failures, device_id, certificate, claimed_at';

function toClaim(r: ClaimRow): Claim {
  const offer: ClaimOffer | undefined =
    r.offer_id === null || r.offer_user_id === null || r.owner_key === null || r.owner_tag === null || r.offered_at === null
      ? undefined
      : {
          offerId: r.offer_id, userId: r.offer_user_id, ownerKey: r.owner_key, ownerTag: r.owner_tag, offeredAt: r.offered_at,
          ...(r.offer_name === null ? {} : { name: r.offer_name }),
          ...(r.answer_ok === null ? {} : { answer: { ok: r.answer_ok === 1, ...(r.device_tag === null ? {} : { deviceTag: r.device_tag }), ...(r.answer_code === null ? {} : { code: r.answer_code }) } }),
        };
  return {
    claimId: r.id, name: r.name, csr: r.csr, deviceKey: r.device_key, keyFingerprint: r.key_fingerprint, pollHash: r.poll_hash, state: r.state,
    createdAt: r.created_at, expiresAt: r.expires_at, failures: r.failures,
    ...(offer ? { offer } : {}),
    ...(r.device_id === null ? {} : { deviceId: r.device_id }),
    ...(r.certificate === null ? {} : { certificate: r.certificate }),
    ...(r.claimed_at === null ? {} : { claimedAt: r.claimed_at }),
  };
}

export async function selectClaim(db: SqlExecutor, claimId: string): Promise<Claim | undefined> {
  const row = (await db.query<ClaimRow>(`SELECT ${CLAIM_COLUMNS} FROM claims WHERE id = ?`, [claimId]))[0];
  return row ? toClaim(row) : undefined;
}

/** Insert, or return the row already there when it is the same device (same key and poll token); else PW_CLAIM_ID_TAKEN. */
export async function insertClaim(db: SqlExecutor, claim: NewClaim, now: number): Promise<Claim> {
  await db.execute(
    'INSERT INTO claims (id, name, csr, device_key, key_fingerprint, poll_hash, state, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING',
    [claim.claimId, claim.name, claim.csr, claim.deviceKey, claim.keyFingerprint, claim.pollHash, 'pending', now, claim.expiresAt],
  );
  const row = await selectClaim(db, claim.claimId);
  if (!row || row.keyFingerprint !== claim.keyFingerprint || row.pollHash !== claim.pollHash) throw new PortwayError('PW_CLAIM_ID_TAKEN', 'another device registered this claim code');
  return row;
}

/** Why an offer could not be made: the precise code for the row's state. */
async function refusal(db: SqlExecutor, claimId: string, now: number): Promise<PortwayError> {
  const row = await selectClaim(db, claimId);
  if (!row) return new PortwayError('PW_CLAIM_NOT_FOUND', 'no device is waiting to be claimed with this code');
  if (row.state === 'claimed') return new PortwayError('PW_CLAIM_USED', 'this claim code was already used');
  if (row.expiresAt <= now) return new PortwayError('PW_CLAIM_EXPIRED', 'this claim code has expired');
  return new PortwayError('PW_CLAIM_IN_PROGRESS', 'another claim of this device is being answered');
}

export async function offerClaim(db: SqlExecutor, claimId: string, offer: Omit<ClaimOffer, 'offeredAt' | 'answer'>, now: number, staleBefore: number): Promise<Claim> {
  const rows = await db.query<ClaimRow>(
    "UPDATE claims SET state = 'offered', offer_id = ?, offer_user_id = ?, owner_key = ?, owner_tag = ?, offer_name = ?, offered_at = ?, answer_ok = NULL, device_tag = NULL, answer_code = NULL " +
      "WHERE id = ? AND expires_at > ? AND (state = 'pending' OR (state = 'offered' AND offered_at < ?)) RETURNING " + CLAIM_COLUMNS,
    [offer.offerId, offer.userId, offer.ownerKey, offer.ownerTag, offer.name ?? null, now, claimId, now, staleBefore],
  );
  const row = rows[0];
  if (!row) throw await refusal(db, claimId, now);
  return toClaim(row);
}

/** Record the device's verdict on the current offer; false when that offer is no longer current or already answered. */
export async function answerClaim(db: SqlExecutor, claimId: string, offerId: string, answer: { ok: boolean; deviceTag?: string; code?: string }): Promise<boolean> {
  return (
    (await db.execute("UPDATE claims SET answer_ok = ?, device_tag = ?, answer_code = ? WHERE id = ? AND offer_id = ? AND state = 'offered' AND answer_ok IS NULL", [
      answer.ok ? 1 : 0, answer.deviceTag ?? null, answer.code ?? null, claimId, offerId,
    ])) === 1
  );
}

export async function withdrawOffer(db: SqlExecutor, claimId: string, offerId: string): Promise<boolean> {
  return (
    (await db.execute(
      "UPDATE claims SET state = 'pending', offer_id = NULL, offer_user_id = NULL, owner_key = NULL, owner_tag = NULL, offer_name = NULL, offered_at = NULL, answer_ok = NULL, device_tag = NULL, answer_code = NULL, failures = failures + 1 WHERE id = ? AND offer_id = ? AND state = 'offered'",
      [claimId, offerId],
    )) === 1
  );
}

/** offered -> claimed and the device row, in one transaction; PW_CLAIM_IN_PROGRESS when the offer is no longer current. */
export function completeClaim(driver: SqlDriver, claimId: string, offerId: string, device: ClaimedDevice, now: number): Promise<Device> {
  return driver.transaction(async (tx) => {
    await tx.execute(`INSERT INTO devices (${DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)`, [device.id, device.name, device.ownerUserId, device.certFingerprint, device.keyFingerprint, now]);
    const changed = await tx.execute("UPDATE claims SET state = 'claimed', device_id = ?, certificate = ?, claimed_at = ? WHERE id = ? AND offer_id = ? AND state = 'offered' AND offer_user_id = ?", [
      device.id, device.certificate, now, claimId, offerId, device.ownerUserId,
    ]);
    if (changed !== 1) throw new PortwayError('PW_CLAIM_IN_PROGRESS', 'the claim offer is no longer current');
    const row = (await tx.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`, [device.id]))[0];
    if (!row) throw new PortwayError('PW_INTERNAL', 'claimed device row missing');
    return toDevice(row);
  });
}
