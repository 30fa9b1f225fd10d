/**
 * Owner grant sets (protocol/grants.ts) and what the relay needs to check and deliver them: the latest signed set
 * of each device, kept as received, replaced only by a higher sequence number (one guarded upsert, so racing
 * writers on any number of relays cannot lower it); the owner key a claimed device pinned (from its claim row);
 * the keys of a user's certificates (for `portway share` to show); certificates revoked since a time (running relays
 * poll them to end live streams). Run by SqlStore over its driver.
 */
import { PortwayError } from '../../../protocol';
import type { SqlExecutor } from './sql-driver';
import { toUserCert, USER_CERT_SELECT, type UserCertRow } from './store-rows';
import type { UserCert } from './store';

export interface DeviceGrants {
  readonly deviceId: string;
  readonly seq: number;
  /** The SignedGrantSet as JSON text, exactly as the owner's client sent it. */
  readonly grants: string;
  readonly updatedAt: number;
  /** User ID of the caller who stored it. */
  readonly updatedBy: string;
}

/** Most certificates listed for one user. */
export const MAX_LISTED_USER_CERTS = 100;
/** A stored grant set (JSON text) is at most this long. */
export const MAX_GRANTS_TEXT_CHARS = 64 * 1024;

interface GrantRow {
  device_id: string;
  seq: number | string;
  grants: string;
  updated_at: number | string;
  updated_by: string;
}

const toGrants = (r: GrantRow): DeviceGrants => ({ deviceId: r.device_id, seq: Number(r.seq), grants: r.grants, updatedAt: Number(r.updated_at), updatedBy: r.updated_by });

/** Store `grants` unless the device already has a set with this or a higher seq (PW_GRANT_STALE). PW_UNKNOWN_DEVICE for no such device. */
export async function upsertGrants(db: SqlExecutor, entry: DeviceGrants): Promise<void> {
  const device = await db.query<{ id: string }>('SELECT id FROM devices WHERE id = ?', [entry.deviceId]);
  if (device.length === 0) throw new PortwayError('PW_UNKNOWN_DEVICE', 'no device with this ID');
  const changed = await db.execute(
    'INSERT INTO device_grants (device_id, seq, grants, updated_at, updated_by) VALUES (?, ?, ?, ?, ?) ' +
      'ON CONFLICT (device_id) DO UPDATE SET seq = excluded.seq, grants = excluded.grants, updated_at = excluded.updated_at, updated_by = excluded.updated_by ' +
      'WHERE device_grants.seq < excluded.seq',
    [entry.deviceId, entry.seq, entry.grants, entry.updatedAt, entry.updatedBy],
  );
  if (changed === 0) throw new PortwayError('PW_GRANT_STALE', `the stored grant set of this device is not older than ${entry.seq}`);
}

export async function selectGrants(db: SqlExecutor, deviceId: string): Promise<DeviceGrants | undefined> {
  const row = (await db.query<GrantRow>('SELECT device_id, seq, grants, updated_at, updated_by FROM device_grants WHERE device_id = ?', [deviceId]))[0];
  return row ? toGrants(row) : undefined;
}

/** Base64 SPKI of the owner key a claimed device pinned, or undefined (enrolled with a fleet key, or unknown). */
export async function selectClaimOwnerKey(db: SqlExecutor, deviceId: string): Promise<string | undefined> {
  const row = (await db.query<{ owner_key: string | null }>("SELECT owner_key FROM claims WHERE device_id = ? AND state = 'claimed'", [deviceId]))[0];
  return row?.owner_key ?? undefined;
}

/** A user's certificates, newest first, at most MAX_LISTED_USER_CERTS. */
export async function selectUserCerts(db: SqlExecutor, userId: string): Promise<UserCert[]> {
  const rows = await db.query<UserCertRow>(`${USER_CERT_SELECT} WHERE c.user_id = ? ORDER BY c.created_at DESC, c.fingerprint LIMIT ${MAX_LISTED_USER_CERTS}`, [userId]);
  return rows.map(toUserCert);
}

/** User certificates revoked at or after `since` (store clock), oldest revocation first, at most 1000. */
export async function selectRevokedUserCerts(db: SqlExecutor, since: number): Promise<UserCert[]> {
  const rows = await db.query<UserCertRow>(`${USER_CERT_SELECT} WHERE c.revoked_at IS NOT NULL AND c.revoked_at >= ? ORDER BY c.revoked_at, c.fingerprint LIMIT 1000`, [since]);
  return rows.map(toUserCert);
}
