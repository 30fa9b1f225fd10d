/** Row shapes of the store's tables (both drivers return the same) and their mapping to store types. */
import type { ApiToken, AuditEntry, Device, Share, TokenScope, User, UserCert } from './store';

export interface UserRow { id: string; name: string; is_admin: number; created_at: number }
export interface TokenRow { id: string; user_id: string; scope: TokenScope; token_hash: string; created_at: number; expires_at: number | null; revoked_at: number | null }
export interface EnrollKeyRow { id: string; key_hash: string; owner_user_id: string | null }
export interface DeviceRow { id: string; name: string; owner_user_id: string | null; cert_fingerprint: string; key_fingerprint: string; created_at: number; revoked_at: number | null }
export interface UserCertRow {
  fingerprint: string; user_id: string; key_fingerprint: string; created_at: number; revoked_at: number | null;
  token_id: string | null; t_scope: TokenScope | null; t_created_at: number | null; t_expires_at: number | null; t_revoked_at: number | null;
}
export interface ShareRow { device_id: string; user_id: string; services: string | null; created_at: number; created_by: string }
export interface AuditRow { id: number; at: number; actor: string; action: string; target: string | null; source: string | null; outcome: string }

export const USER_COLUMNS = 'id, name, is_admin, created_at';
export const TOKEN_COLUMNS = 'id, user_id, scope, token_hash, created_at, expires_at, revoked_at';
export const DEVICE_COLUMNS = 'id, name, owner_user_id, cert_fingerprint, key_fingerprint, created_at, revoked_at';
export const USER_CERT_SELECT =
  'SELECT c.fingerprint, c.user_id, c.key_fingerprint, c.created_at, c.revoked_at, c.token_id, t.scope AS t_scope, t.created_at AS t_created_at, ' +
  't.expires_at AS t_expires_at, t.revoked_at AS t_revoked_at FROM user_certs c LEFT JOIN api_tokens t ON t.id = c.token_id';
export const SHARE_COLUMNS = 'device_id, user_id, services, created_at, created_by';
export const AUDIT_COLUMNS = 'id, at, actor, action, target, source, outcome';

const optional = <K extends string>(key: K, value: number | string | null): Partial<Record<K, number | string>> => (value === null ? {} : ({ [key]: value } as Record<K, number | string>));

export function toUser(row: UserRow): User {
  return { id: row.id, name: row.name, isAdmin: row.is_admin === 1, createdAt: row.created_at };
}

export function toToken(row: TokenRow): ApiToken {
  return { id: row.id, userId: row.user_id, scope: row.scope, createdAt: row.created_at, ...(optional('expiresAt', row.expires_at) as { expiresAt?: number }), ...(optional('revokedAt', row.revoked_at) as { revokedAt?: number }) };
}

export function toDevice(row: DeviceRow): Device {
  return {
    id: row.id,
    name: row.name,
    ...(row.owner_user_id === null ? {} : { ownerUserId: row.owner_user_id }),
    certFingerprint: row.cert_fingerprint,
    keyFingerprint: row.key_fingerprint,
    createdAt: row.created_at,
    ...(row.revoked_at === null ? {} : { revokedAt: row.revoked_at }),
  };
}

export function toUserCert(row: UserCertRow): UserCert {
  const token: ApiToken | undefined =
    row.token_id === null || row.t_scope === null || row.t_created_at === null
      ? undefined
      : toToken({ id: row.token_id, user_id: row.user_id, scope: row.t_scope, token_hash: '', created_at: row.t_created_at, expires_at: row.t_expires_at, revoked_at: row.t_revoked_at });
  return {
    fingerprint: row.fingerprint,
    userId: row.user_id,
    keyFingerprint: row.key_fingerprint,
    createdAt: row.created_at,
    ...(row.revoked_at === null ? {} : { revokedAt: row.revoked_at }),
    ...(token ? { token } : {}),
  };
}

export function toShare(row: ShareRow): Share {
  const services = row.services === null ? undefined : (JSON.parse(row.services) as string[]);
  return { deviceId: row.device_id, userId: row.user_id, ...(services ? { services } : {}), createdAt: row.created_at, createdBy: row.created_by };
}

export function toAudit(row: AuditRow): AuditEntry {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    action: row.action,
    ...(row.target === null ? {} : { target: row.target }),
    ...(row.source === null ? {} : { source: row.source }),
    outcome: row.outcome,
  };
}
