/**
 * The relay's persistent state behind one database-agnostic interface: users, API tokens, enrollment keys,
 * devices and user certificates. Implementations: SqliteStore (now), PostgreSQL (later); both must pass
 * test/helpers/store-contract.ts.
 *
 * Times are milliseconds since the epoch. Secrets (API tokens `pwt_…`, enrollment keys `pwk_…`) are
 * returned in plaintext once, at creation, and stored only as SHA-256 hashes.
 *
 * Errors: bad arguments (wrong types, invalid names or IDs from the caller) throw TypeError/RangeError
 * synchronously; operational failures reject with a PortwayError — PW_NAME_TAKEN, PW_NOT_FOUND (unknown
 * user referenced), PW_UNKNOWN_DEVICE, PW_ENROLL_KEY_INVALID, PW_SHUTTING_DOWN (after close), PW_INTERNAL.
 * Lookups with credentials or names from peers (authenticateToken, consumeEnrollKey, getDevice,
 * findDevices, getUser*, getUserCert) accept any string and answer "not found" for garbage.
 */

export interface User {
  readonly id: string;
  readonly name: string;
  readonly isAdmin: boolean;
  readonly createdAt: number;
}

export interface CreatedToken {
  readonly tokenId: string;
  /** Plaintext `pwt_…`: shown once, never stored. */
  readonly token: string;
  readonly expiresAt?: number;
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
}

export interface Store {
  createUser(name: string, options?: { readonly isAdmin?: boolean }): Promise<User>;
  getUser(id: string): Promise<User | undefined>;
  getUserByName(name: string): Promise<User | undefined>;
  listUsers(): Promise<User[]>;

  createToken(userId: string, options?: { readonly expiresAt?: number }): Promise<CreatedToken>;
  /** The token's user, or undefined for unknown, malformed, expired or revoked tokens. */
  authenticateToken(token: string): Promise<User | undefined>;
  /** False when there was no such token. Idempotent. */
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
  /** After a renewal. Rejects PW_UNKNOWN_DEVICE for unknown or revoked devices. */
  updateDeviceCert(id: string, cert: { readonly certFingerprint: string; readonly keyFingerprint: string }): Promise<Device>;
  /** False when there was no such device. Idempotent: the first revocation time is kept. */
  revokeDevice(id: string): Promise<boolean>;

  recordUserCert(userId: string, fingerprint: string, keyFingerprint: string): Promise<UserCert>;
  getUserCert(fingerprint: string): Promise<UserCert | undefined>;
  revokeUserCert(fingerprint: string): Promise<boolean>;

  /** Idempotent; every later call rejects PW_SHUTTING_DOWN. */
  close(): Promise<void>;
}
