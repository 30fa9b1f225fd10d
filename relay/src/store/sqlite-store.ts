/**
 * Store on SQLite (better-sqlite3): one file, WAL journal, foreign keys on, created 0600 (SQLite gives the
 * -wal and -shm files the same mode). The schema is migrated on open (sqlite-schema.ts). Calls are
 * synchronous underneath, so each method runs to completion before the next; enrollment-key uses are
 * still consumed in an IMMEDIATE transaction so that several processes sharing the file stay correct.
 */
import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { NAME_PATTERN, PortwayError } from '../../../protocol';
import { isId, newId, type IdPrefix } from './ids';
import { hashesEqual, hashSecret, isSecretShaped, newSecret } from './secrets';
import { SQLITE_MIGRATIONS } from './sqlite-schema';
import type { CreatedEnrollKey, CreatedToken, Device, EnrollKeyUse, NewDevice, Store, User, UserCert } from './store';

export interface SqliteStoreOptions {
  /** Database file, or ':memory:' for a throwaway store. */
  readonly path: string;
}

export interface StoreDeps {
  /** Milliseconds since the epoch; defaults to Date.now. */
  readonly now?: () => number;
}

export const MAX_ENROLL_KEY_USES = 1_000_000;
const BUSY_TIMEOUT_MS = 5000;
const FINGERPRINT = /^[0-9a-f]{64}$/;
/** Longest device name or ID a lookup can match. */
const MAX_LOOKUP_CHARS = 64;

interface UserRow { id: string; name: string; is_admin: number; created_at: number }
interface TokenRow extends UserRow { token_hash: string; expires_at: number | null; revoked_at: number | null }
interface EnrollKeyRow { id: string; key_hash: string; owner_user_id: string | null; uses_left: number; expires_at: number; revoked_at: number | null }
interface DeviceRow { id: string; name: string; owner_user_id: string | null; cert_fingerprint: string; key_fingerprint: string; created_at: number; revoked_at: number | null }
interface UserCertRow { fingerprint: string; user_id: string; key_fingerprint: string; created_at: number; revoked_at: number | null }

const USER_COLUMNS = 'id, name, is_admin, created_at';
const DEVICE_COLUMNS = 'id, name, owner_user_id, cert_fingerprint, key_fingerprint, created_at, revoked_at';

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #now: () => number;
  #state: 'open' | 'closed' = 'open';

  private constructor(db: Database.Database, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  /** Open (creating and migrating) the database. Rejects PW_STORE_UNSUPPORTED for a newer schema, PW_INTERNAL when the file cannot be used. */
  static open(options: SqliteStoreOptions, deps: StoreDeps = {}): Promise<SqliteStore> {
    if (typeof options.path !== 'string' || options.path === '') throw new TypeError('path must be a non-empty string');
    const now = deps.now ?? Date.now;
    try {
      return Promise.resolve(new SqliteStore(openDatabase(options.path, now), now));
    } catch (err) {
      return Promise.reject(err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', `cannot open database ${options.path}`, { cause: err }));
    }
  }

  // ---- users

  createUser(name: string, options: { readonly isAdmin?: boolean } = {}): Promise<User> {
    checkName(name, 'name');
    if (options.isAdmin !== undefined && typeof options.isAdmin !== 'boolean') throw new TypeError('isAdmin must be a boolean');
    return this.#run(() => {
      const user: User = { id: newId('usr'), name, isAdmin: options.isAdmin ?? false, createdAt: this.#now() };
      try {
        this.#db.prepare('INSERT INTO users (id, name, is_admin, created_at) VALUES (?, ?, ?, ?)').run(user.id, name, user.isAdmin ? 1 : 0, user.createdAt);
      } catch (err) {
        if (isUniqueViolation(err)) throw new PortwayError('PW_NAME_TAKEN', `user name ${name} is taken`, { cause: err });
        throw err;
      }
      return user;
    });
  }

  getUser(id: string): Promise<User | undefined> {
    checkString(id, 'id');
    return this.#run(() => (isId(id, 'usr') ? this.#userRow(id) : undefined));
  }

  getUserByName(name: string): Promise<User | undefined> {
    checkString(name, 'name');
    return this.#run(() => {
      if (name.length > MAX_LOOKUP_CHARS) return undefined;
      const row = this.#db.prepare<[string], UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE name = ?`).get(name);
      return row && toUser(row);
    });
  }

  listUsers(): Promise<User[]> {
    return this.#run(() => this.#db.prepare<[], UserRow>(`SELECT ${USER_COLUMNS} FROM users ORDER BY created_at, id`).all().map(toUser));
  }

  // ---- API tokens

  createToken(userId: string, options: { readonly expiresAt?: number } = {}): Promise<CreatedToken> {
    checkId(userId, 'usr', 'userId');
    if (options.expiresAt !== undefined) checkTime(options.expiresAt, 'expiresAt');
    return this.#run(() => {
      this.#requireUser(userId);
      const token = newSecret('pwt');
      const tokenId = newId('tok');
      this.#db
        .prepare('INSERT INTO api_tokens (id, user_id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
        .run(tokenId, userId, hashSecret(token), this.#now(), options.expiresAt ?? null);
      return { tokenId, token, ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }) };
    });
  }

  authenticateToken(token: string): Promise<User | undefined> {
    return this.#run(() => {
      if (!isSecretShaped(token, 'pwt')) return undefined;
      const hash = hashSecret(token);
      const row = this.#db
        .prepare<[string], TokenRow>(
          'SELECT u.id, u.name, u.is_admin, u.created_at, t.token_hash, t.expires_at, t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?',
        )
        .get(hash);
      if (!row || !hashesEqual(row.token_hash, hash) || row.revoked_at !== null) return undefined;
      if (row.expires_at !== null && row.expires_at <= this.#now()) return undefined;
      return toUser(row);
    });
  }

  revokeToken(tokenId: string): Promise<boolean> {
    checkString(tokenId, 'tokenId');
    return this.#run(() => this.#db.prepare('UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?').run(this.#now(), tokenId).changes > 0);
  }

  // ---- enrollment keys

  createEnrollKey(options: { readonly ownerUserId?: string; readonly uses?: number; readonly expiresAt: number }): Promise<CreatedEnrollKey> {
    const uses = options.uses ?? 1;
    if (!Number.isSafeInteger(uses) || uses < 1 || uses > MAX_ENROLL_KEY_USES) throw new RangeError(`uses must be an integer in 1..${MAX_ENROLL_KEY_USES}`);
    checkTime(options.expiresAt, 'expiresAt');
    if (options.ownerUserId !== undefined) checkId(options.ownerUserId, 'usr', 'ownerUserId');
    return this.#run(() => {
      if (options.ownerUserId !== undefined) this.#requireUser(options.ownerUserId);
      const key = newSecret('pwk');
      const keyId = newId('key');
      this.#db
        .prepare('INSERT INTO enroll_keys (id, key_hash, owner_user_id, uses_left, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(keyId, hashSecret(key), options.ownerUserId ?? null, uses, this.#now(), options.expiresAt);
      return { keyId, key, ...(options.ownerUserId === undefined ? {} : { ownerUserId: options.ownerUserId }), uses, expiresAt: options.expiresAt };
    });
  }

  consumeEnrollKey(key: string): Promise<EnrollKeyUse> {
    return this.#run(() => {
      const invalid = (): PortwayError => new PortwayError('PW_ENROLL_KEY_INVALID');
      if (!isSecretShaped(key, 'pwk')) throw invalid();
      const hash = hashSecret(key);
      const consume = this.#db.transaction((): EnrollKeyUse => {
        const row = this.#db
          .prepare<[string], EnrollKeyRow>('SELECT id, key_hash, owner_user_id, uses_left, expires_at, revoked_at FROM enroll_keys WHERE key_hash = ?')
          .get(hash);
        if (!row || !hashesEqual(row.key_hash, hash) || row.revoked_at !== null || row.expires_at <= this.#now() || row.uses_left < 1) throw invalid();
        // The guard makes the decrement safe even without the transaction's lock.
        const result = this.#db.prepare('UPDATE enroll_keys SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0').run(row.id);
        if (result.changes !== 1) throw invalid();
        return { keyId: row.id, ...(row.owner_user_id === null ? {} : { ownerUserId: row.owner_user_id }) };
      });
      return consume.immediate();
    });
  }

  revokeEnrollKey(keyId: string): Promise<boolean> {
    checkString(keyId, 'keyId');
    return this.#run(() => this.#db.prepare('UPDATE enroll_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?').run(this.#now(), keyId).changes > 0);
  }

  // ---- devices

  createDevice(device: NewDevice): Promise<Device> {
    if (device.id !== undefined) checkId(device.id, 'dev', 'id');
    checkName(device.name, 'name');
    if (device.ownerUserId !== undefined) checkId(device.ownerUserId, 'usr', 'ownerUserId');
    checkFingerprint(device.certFingerprint, 'certFingerprint');
    checkFingerprint(device.keyFingerprint, 'keyFingerprint');
    return this.#run(() => {
      if (device.ownerUserId !== undefined) this.#requireUser(device.ownerUserId);
      const created: Device = {
        id: device.id ?? newId('dev'),
        name: device.name,
        ...(device.ownerUserId === undefined ? {} : { ownerUserId: device.ownerUserId }),
        certFingerprint: device.certFingerprint,
        keyFingerprint: device.keyFingerprint,
        createdAt: this.#now(),
      };
      this.#db
        .prepare(`INSERT INTO devices (${DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)`)
        .run(created.id, created.name, device.ownerUserId ?? null, created.certFingerprint, created.keyFingerprint, created.createdAt);
      return created;
    });
  }

  getDevice(id: string): Promise<Device | undefined> {
    checkString(id, 'id');
    return this.#run(() => (isId(id, 'dev') ? this.#deviceRow(id) : undefined));
  }

  findDevices(nameOrId: string): Promise<Device[]> {
    checkString(nameOrId, 'nameOrId');
    return this.#run(() => {
      if (nameOrId.length === 0 || nameOrId.length > MAX_LOOKUP_CHARS) return [];
      return this.#db
        .prepare<[string, string], DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE (id = ? OR name = ?) AND revoked_at IS NULL ORDER BY created_at, id`)
        .all(nameOrId, nameOrId)
        .map(toDevice);
    });
  }

  listDevices(): Promise<Device[]> {
    return this.#run(() => this.#db.prepare<[], DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices ORDER BY created_at, id`).all().map(toDevice));
  }

  updateDeviceCert(id: string, cert: { readonly certFingerprint: string; readonly keyFingerprint: string }): Promise<Device> {
    checkId(id, 'dev', 'id');
    checkFingerprint(cert.certFingerprint, 'certFingerprint');
    checkFingerprint(cert.keyFingerprint, 'keyFingerprint');
    return this.#run(() => {
      const result = this.#db
        .prepare('UPDATE devices SET cert_fingerprint = ?, key_fingerprint = ? WHERE id = ? AND revoked_at IS NULL')
        .run(cert.certFingerprint, cert.keyFingerprint, id);
      const device = result.changes === 1 ? this.#deviceRow(id) : undefined;
      if (!device) throw new PortwayError('PW_UNKNOWN_DEVICE', 'no active device with this ID');
      return device;
    });
  }

  revokeDevice(id: string): Promise<boolean> {
    checkString(id, 'id');
    return this.#run(() => this.#db.prepare('UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?').run(this.#now(), id).changes > 0);
  }

  // ---- user certificates

  recordUserCert(userId: string, fingerprint: string, keyFingerprint: string): Promise<UserCert> {
    checkId(userId, 'usr', 'userId');
    checkFingerprint(fingerprint, 'fingerprint');
    checkFingerprint(keyFingerprint, 'keyFingerprint');
    return this.#run(() => {
      this.#requireUser(userId);
      this.#db
        .prepare('INSERT INTO user_certs (fingerprint, user_id, key_fingerprint, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING')
        .run(fingerprint, userId, keyFingerprint, this.#now());
      const cert = this.#userCertRow(fingerprint);
      if (!cert || cert.userId !== userId) throw new PortwayError('PW_INTERNAL', 'certificate fingerprint already recorded for another user');
      return cert;
    });
  }

  getUserCert(fingerprint: string): Promise<UserCert | undefined> {
    checkString(fingerprint, 'fingerprint');
    return this.#run(() => (FINGERPRINT.test(fingerprint) ? this.#userCertRow(fingerprint) : undefined));
  }

  revokeUserCert(fingerprint: string): Promise<boolean> {
    checkString(fingerprint, 'fingerprint');
    return this.#run(() => this.#db.prepare('UPDATE user_certs SET revoked_at = COALESCE(revoked_at, ?) WHERE fingerprint = ?').run(this.#now(), fingerprint).changes > 0);
  }

  close(): Promise<void> {
    if (this.#state === 'open') {
      this.#state = 'closed';
      this.#db.close();
    }
    return Promise.resolve();
  }

  // ---- internals

  /** Run one synchronous database job as a promise; codeless failures become PW_INTERNAL. */
  #run<T>(job: () => T): Promise<T> {
    if (this.#state === 'closed') return Promise.reject(new PortwayError('PW_SHUTTING_DOWN', 'store is closed'));
    try {
      return Promise.resolve(job());
    } catch (err) {
      return Promise.reject(err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', 'store operation failed', { cause: err }));
    }
  }

  #userRow(id: string): User | undefined {
    const row = this.#db.prepare<[string], UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`).get(id);
    return row && toUser(row);
  }

  #requireUser(id: string): void {
    if (!this.#userRow(id)) throw new PortwayError('PW_NOT_FOUND', 'no user with this ID');
  }

  #deviceRow(id: string): Device | undefined {
    const row = this.#db.prepare<[string], DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`).get(id);
    return row && toDevice(row);
  }

  #userCertRow(fingerprint: string): UserCert | undefined {
    const row = this.#db.prepare<[string], UserCertRow>('SELECT fingerprint, user_id, key_fingerprint, created_at, revoked_at FROM user_certs WHERE fingerprint = ?').get(fingerprint);
    return row && { fingerprint: row.fingerprint, userId: row.user_id, keyFingerprint: row.key_fingerprint, createdAt: row.created_at, ...(row.revoked_at === null ? {} : { revokedAt: row.revoked_at }) };
  }
}

function openDatabase(path: string, now: () => number): Database.Database {
  if (path !== ':memory:') {
    try {
      writeFileSync(path, '', { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma('synchronous = NORMAL');
    migrate(db, now);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Apply pending migrations in one IMMEDIATE transaction, so two processes opening a new file cannot both migrate. */
function migrate(db: Database.Database, now: () => number): void {
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at INTEGER NOT NULL)');
    const current = db.prepare<[], { version: number | null }>('SELECT MAX(version) AS version FROM schema_version').get()?.version ?? 0;
    if (current > SQLITE_MIGRATIONS.length) {
      throw new PortwayError('PW_STORE_UNSUPPORTED', `database schema version ${current} is newer than this relay's ${SQLITE_MIGRATIONS.length}`);
    }
    SQLITE_MIGRATIONS.slice(current).forEach((sql, index) => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(current + index + 1, now());
    });
  }).immediate();
}

function toUser(row: UserRow): User {
  return { id: row.id, name: row.name, isAdmin: row.is_admin === 1, createdAt: row.created_at };
}

function toDevice(row: DeviceRow): Device {
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

function checkString(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${field} must be a string`);
}

function checkName(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) throw new TypeError(`${field} must match ${String(NAME_PATTERN)}`);
}

function checkId(value: unknown, prefix: IdPrefix, field: string): asserts value is string {
  if (!isId(value, prefix)) throw new TypeError(`${field} must be a ${prefix}_ ID`);
}

function checkFingerprint(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string' || !FINGERPRINT.test(value)) throw new TypeError(`${field} must be a SHA-256 hex fingerprint`);
}

function checkTime(value: unknown, field: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new RangeError(`${field} must be milliseconds since the epoch`);
}

/**
 * A UNIQUE constraint failure. Checked by code, not `instanceof Database.SqliteError`: the native addon
 * keeps the error class of the first copy of better-sqlite3 loaded in the process, so a second copy (a
 * test runner's module registry, a bundler) would not recognise its own errors.
 */
function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}
