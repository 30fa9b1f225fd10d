/**
 * The relay's persistent state behind one database-agnostic interface: users, API tokens, enrollment keys,
 * devices, user certificates, shares and the audit log. One implementation (SqlStore, sql-store.ts) over two
 * drivers: SQLite (embedded, the default) and PostgreSQL (several relays). Both pass test/helpers/store-contract.ts.
 *
 * Times are milliseconds since the epoch. Secrets (API tokens `pwt_…`, enrollment keys `pwk_…`) are
 * returned in plaintext once, at creation, and stored only as SHA-256 hashes.
 *
 * Errors: bad arguments (wrong types, invalid names or IDs from the caller) throw TypeError/RangeError
 * synchronously; operational failures reject with a PortwayError — PW_NAME_TAKEN, PW_NOT_FOUND (unknown
 * user referenced), PW_UNKNOWN_DEVICE, PW_ENROLL_KEY_INVALID, PW_UNAUTHENTICATED, PW_TOKEN_EXPIRED,
 * PW_TOKEN_REVOKED, PW_SHUTTING_DOWN (after close), PW_INTERNAL. Lookups with credentials or names from peers
 * (authenticateToken, consumeEnrollKey, getDevice, findDevices, getUser*, getUserCert, getToken, getShare)
 * accept any string and answer "not found" (or PW_UNAUTHENTICATED / PW_ENROLL_KEY_INVALID) for garbage.
 */

export interface User {
  readonly id: string;
  readonly name: string;
  readonly isAdmin: boolean;
  readonly createdAt: number;
}

/** `read`: list and show devices, list own tokens and shares. `connect`: also open streams and change things. */
export type TokenScope = 'read' | 'connect';
export const TOKEN_SCOPES: readonly TokenScope[] = ['read', 'connect'];

export interface ApiToken {
  readonly id: string;
  readonly userId: string;
  readonly scope: TokenScope;
  readonly createdAt: number;
  readonly expiresAt?: number;
  readonly revokedAt?: number;
}

export interface CreatedToken {
  readonly tokenId: string;
  /** Plaintext `pwt_…`: shown once, never stored. */
  readonly token: string;
  readonly scope: TokenScope;
  readonly expiresAt?: number;
}

/** A valid (known, unexpired, unrevoked) token and its user. */
export interface TokenAuth {
  readonly user: User;
  readonly token: ApiToken;
}

export interface CreatedEnrollKey {
  readonly keyId: string;
  /** Plaintext `pwk_…`: shown once, never stored. */
  readonly key: string;
  readonly ownerUserId?: string;
  readonly uses: number;
  readonly expiresAt: number;
}

export interface EnrollKeyUse {
  readonly keyId: string;
  /** The user who will own the enrolled device. */
  readonly ownerUserId?: string;
}

export interface Device {
  readonly id: string;
  readonly name: string;
  readonly ownerUserId?: string;
  /** SHA-256 hex of the current certificate DER. */
  readonly certFingerprint: string;
  /** SHA-256 hex of the device key's SPKI DER (pinned by clients for the end-to-end session). */
  readonly keyFingerprint: string;
  readonly createdAt: number;
  readonly revokedAt?: number;
}

export interface NewDevice {
  /** Pre-allocated with newId('dev') when the certificate (CN = ID) is issued before the record; generated otherwise. */
  readonly id?: string;
  readonly name: string;
  readonly ownerUserId?: string;
  readonly certFingerprint: string;
  readonly keyFingerprint: string;
}

export interface UserCert {
  readonly fingerprint: string;
  readonly userId: string;
  readonly keyFingerprint: string;
  readonly createdAt: number;
  readonly revokedAt?: number;
  /**
   * The API token the certificate was issued with (at `portway login`): its scope bounds what the certificate
   * may do, and revoking the token revokes the certificate. Absent for certificates recorded before schema 2.
   */
  readonly token?: ApiToken;
}

/** A device shared by its owner with another user: every service, or only those listed. */
export interface Share {
  readonly deviceId: string;
  readonly userId: string;
  /** Service names; absent = every service of the device. */
  readonly services?: readonly string[];
  readonly createdAt: number;
  readonly createdBy: string;
}

export interface AuditEntry {
  readonly id: number;
  readonly at: number;
  /** User ID, or a component name such as `relay` for actions nobody asked for. */
  readonly actor: string;
  /** Dotted event id: `share.create`, `token.revoke`, `device.claim`… */
  readonly action: string;
  readonly target?: string;
  /** Network address the request came from. */
  readonly source?: string;
  /** `ok`, or the PW_* code the action was refused with. */
  readonly outcome: string;
}

export type NewAuditEntry = Omit<AuditEntry, 'id' | 'at'>;

import type { Claim, ClaimedDevice, ClaimOffer, NewClaim } from './claim-store';
import type { DeviceGrants } from './grant-store';

export interface Store {
  createUser(name: string, options?: { readonly isAdmin?: boolean }): Promise<User>;
  getUser(id: string): Promise<User | undefined>;
  getUserByName(name: string): Promise<User | undefined>;
  listUsers(): Promise<User[]>;

  /** Scope defaults to `connect`. */
  createToken(userId: string, options?: { readonly expiresAt?: number; readonly scope?: TokenScope }): Promise<CreatedToken>;
  /** Rejects PW_UNAUTHENTICATED (unknown or malformed), PW_TOKEN_EXPIRED or PW_TOKEN_REVOKED. One statement. */
  authenticateToken(token: string): Promise<TokenAuth>;
  getToken(tokenId: string): Promise<ApiToken | undefined>;
  /** A user's tokens, revoked and expired ones included, oldest first. */
  listTokens(userId: string): Promise<ApiToken[]>;
  /** Revokes the token and every user certificate issued with it, in one transaction. False when there was no such token. Idempotent. */
  revokeToken(tokenId: string): Promise<boolean>;

  createEnrollKey(options: { readonly ownerUserId?: string; readonly uses?: number; readonly expiresAt: number }): Promise<CreatedEnrollKey>;
  /** Atomically use up one use; rejects PW_ENROLL_KEY_INVALID for unknown, malformed, expired, revoked or used-up keys. */
  consumeEnrollKey(key: string): Promise<EnrollKeyUse>;
  revokeEnrollKey(keyId: string): Promise<boolean>;

  createDevice(device: NewDevice): Promise<Device>;
  /** Revoked devices included (check revokedAt). */
  getDevice(id: string): Promise<Device | undefined>;
  /** Devices whose ID or name is exactly `nameOrId`, revoked ones excluded; names are not unique. */
  findDevices(nameOrId: string): Promise<Device[]>;
  /** Every device, revoked ones included, oldest first. */
  listDevices(): Promise<Device[]>;
  /** How many devices are not revoked (the fleet the relay may have to take back at once). */
  countActiveDevices(): Promise<number>;
  /** After a renewal. Rejects PW_UNKNOWN_DEVICE for unknown or revoked devices. */
  updateDeviceCert(id: string, cert: { readonly certFingerprint: string; readonly keyFingerprint: string }): Promise<Device>;
  /** False when there was no such device. Idempotent: the first revocation time is kept. */
  revokeDevice(id: string): Promise<boolean>;
  /** Devices revoked at or after `since` (store clock), oldest revocation first, at most 1000: running relays poll it. */
  listRevokedDevices(since: number): Promise<Device[]>;
  /** A revoked device holding this key (SPKI SHA-256 hex), if any: such a key may not enroll or register a claim again. */
  findRevokedKey(keyFingerprint: string): Promise<Device | undefined>;

  /** `tokenId`: the token the certificate is issued with; it must belong to the user (else PW_NOT_FOUND). */
  recordUserCert(userId: string, fingerprint: string, keyFingerprint: string, options?: { readonly tokenId?: string }): Promise<UserCert>;
  getUserCert(fingerprint: string): Promise<UserCert | undefined>;
  revokeUserCert(fingerprint: string): Promise<boolean>;

  /** Create or replace the share of a device with a user. Rejects PW_UNKNOWN_DEVICE, PW_NOT_FOUND (user). */
  shareDevice(share: { readonly deviceId: string; readonly userId: string; readonly services?: readonly string[]; readonly createdBy: string }): Promise<Share>;
  /** False when there was no such share. */
  unshareDevice(deviceId: string, userId: string): Promise<boolean>;
  getShare(deviceId: string, userId: string): Promise<Share | undefined>;
  /** Shares of one device or with one user, oldest first. */
  listShares(filter: { readonly deviceId: string } | { readonly userId: string }): Promise<Share[]>;

  /** Device claims (claim-store.ts). Register: insert or return the same device's row; PW_CLAIM_ID_TAKEN for another key or poll token. */
  registerClaim(claim: NewClaim): Promise<Claim>;
  getClaim(claimId: string): Promise<Claim | undefined>;
  /** pending (or offered before `staleBefore`) -> offered; PW_CLAIM_NOT_FOUND, PW_CLAIM_EXPIRED, PW_CLAIM_USED, PW_CLAIM_IN_PROGRESS. */
  offerClaim(claimId: string, offer: Omit<ClaimOffer, 'offeredAt' | 'answer'>, staleBefore: number): Promise<Claim>;
  answerClaim(claimId: string, offerId: string, answer: { readonly ok: boolean; readonly deviceTag?: string; readonly code?: string }): Promise<boolean>;
  withdrawClaimOffer(claimId: string, offerId: string): Promise<boolean>;
  /** offered -> claimed with the new device row, atomically. */
  completeClaim(claimId: string, offerId: string, device: ClaimedDevice): Promise<Device>;

  /** Owner grant sets (grant-store.ts): store a newer set; PW_GRANT_STALE when the stored seq is not lower, PW_UNKNOWN_DEVICE. One guarded statement. */
  putDeviceGrants(entry: { readonly deviceId: string; readonly seq: number; readonly grants: string; readonly updatedBy: string }): Promise<DeviceGrants>;
  getDeviceGrants(deviceId: string): Promise<DeviceGrants | undefined>;
  /** Base64 SPKI of the owner key pinned when the device was claimed; undefined for enrolled (or unknown) devices. */
  getClaimOwnerKey(deviceId: string): Promise<string | undefined>;
  /** A user's certificates, revoked ones included, newest first, at most 100. */
  listUserCerts(userId: string): Promise<UserCert[]>;
  /** User certificates revoked at or after `since` (store clock; a revoked token revokes its certificates), oldest revocation first, at most 1000: running relays poll it. */
  listRevokedUserCerts(since: number): Promise<UserCert[]>;

  appendAudit(entry: NewAuditEntry): Promise<AuditEntry>;
  /** Newest first; at most `limit` (1..MAX_AUDIT_PAGE) entries with an id below `beforeId` when given. */
  listAudit(options: { readonly limit: number; readonly beforeId?: number }): Promise<AuditEntry[]>;

  /** Idempotent; every later call rejects PW_SHUTTING_DOWN. */
  close(): Promise<void>;
}
