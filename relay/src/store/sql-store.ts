/**
 * The Store over a SqlDriver: one implementation of every rule, the same SQL on SQLite and PostgreSQL.
 * Operations that must be atomic are single statements (consuming an enrollment-key use is one guarded
 * UPDATE … RETURNING; authenticating a token is one SELECT) or one transaction (revoking a token with its
 * certificates). Lookups validate the shape of peer input before it reaches SQL.
 */
import { NAME_PATTERN, PortwayError } from '../../../protocol';
import { answerClaim, completeClaim, insertClaim, offerClaim, selectClaim, withdrawOffer, type Claim, type ClaimedDevice, type ClaimOffer, type NewClaim } from './claim-store';
import { MAX_GRANTS_TEXT_CHARS, selectClaimOwnerKey, selectGrants, selectRevokedUserCerts, selectUserCerts, upsertGrants, type DeviceGrants } from './grant-store';
import { isId, newId } from './ids';
import { hashesEqual, hashSecret, isSecretShaped, newSecret } from './secrets';
import type { SqlDriver, SqlExecutor } from './sql-driver';
import type { ApiToken, AuditEntry, CreatedEnrollKey, CreatedToken, Device, EnrollKeyUse, NewAuditEntry, NewDevice, Share, Store, TokenAuth, TokenScope, User, UserCert } from './store';
import {
  checkAuditText, checkFingerprint, checkId, checkName, checkScope, checkString, checkTime, FINGERPRINT, MAX_AUDIT_PAGE, MAX_ENROLL_KEY_USES, normalizeServices,
} from './store-checks';
import {
  AUDIT_COLUMNS, DEVICE_COLUMNS, SHARE_COLUMNS, TOKEN_COLUMNS, toAudit, toDevice, toShare, toToken, toUser, toUserCert, USER_CERT_SELECT, USER_COLUMNS,
  type AuditRow, type DeviceRow, type EnrollKeyRow, type ShareRow, type TokenRow, type UserCertRow, type UserRow,
} from './store-rows';

export interface StoreDeps {
  /** Milliseconds since the epoch; defaults to Date.now. */
  readonly now?: () => number;
}

export class SqlStore implements Store {
  readonly #db: SqlDriver;
  readonly #now: () => number;
  #state: 'open' | 'closed' = 'open';

  protected constructor(db: SqlDriver, deps: StoreDeps) {
    this.#db = db;
    this.#now = deps.now ?? Date.now;
  }

  // ---- users

  createUser(name: string, options: { readonly isAdmin?: boolean } = {}): Promise<User> {
    checkName(name, 'name');
    if (options.isAdmin !== undefined && typeof options.isAdmin !== 'boolean') throw new TypeError('isAdmin must be a boolean');
    return this.#run(async (db) => {
      const user: User = { id: newId('usr'), name, isAdmin: options.isAdmin ?? false, createdAt: this.#now() };
      try {
        await db.execute('INSERT INTO users (id, name, is_admin, created_at) VALUES (?, ?, ?, ?)', [user.id, name, user.isAdmin ? 1 : 0, user.createdAt]);
      } catch (err) {
        if (this.#db.isUniqueViolation(err)) throw new PortwayError('PW_NAME_TAKEN', `user name ${name} is taken`, { cause: err });
        throw err;
      }
      return user;
    });
  }

  getUser(id: string): Promise<User | undefined> {
    checkString(id, 'id');
    return this.#run((db) => (isId(id, 'usr') ? this.#user(db, id) : Promise.resolve(undefined)));
  }

  getUserByName(name: string): Promise<User | undefined> {
    checkString(name, 'name');
    return this.#run(async (db) => (NAME_PATTERN.test(name) ? first(await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE name = ?`, [name]), toUser) : undefined));
  }

  listUsers(): Promise<User[]> {
    return this.#run(async (db) => (await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users ORDER BY created_at, id`)).map(toUser));
  }

  // ---- API tokens

  createToken(userId: string, options: { readonly expiresAt?: number; readonly scope?: TokenScope } = {}): Promise<CreatedToken> {
    checkId(userId, 'usr', 'userId');
    if (options.expiresAt !== undefined) checkTime(options.expiresAt, 'expiresAt');
    const scope = options.scope ?? 'connect';
    checkScope(scope);
    return this.#run(async (db) => {
      await this.#requireUser(db, userId);
      const token = newSecret('pwt');
      const tokenId = newId('tok');
      await db.execute('INSERT INTO api_tokens (id, user_id, token_hash, created_at, expires_at, scope) VALUES (?, ?, ?, ?, ?, ?)', [
        tokenId, userId, hashSecret(token), this.#now(), options.expiresAt ?? null, scope,
      ]);
      return { tokenId, token, scope, ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }) };
    });
  }

  authenticateToken(token: string): Promise<TokenAuth> {
    return this.#run(async (db) => {
      const unknown = new PortwayError('PW_UNAUTHENTICATED', 'missing or invalid API token');
      if (!isSecretShaped(token, 'pwt')) throw unknown;
      const hash = hashSecret(token);
      const rows = await db.query<TokenRow & { name: string; is_admin: number; u_created_at: number }>(
        'SELECT t.id, t.user_id, t.scope, t.token_hash, t.created_at, t.expires_at, t.revoked_at, u.name, u.is_admin, u.created_at AS u_created_at ' +
          'FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?',
        [hash],
      );
      const row = rows[0];
      if (!row || !hashesEqual(row.token_hash, hash)) throw unknown;
      if (row.revoked_at !== null) throw new PortwayError('PW_TOKEN_REVOKED', 'this API token was revoked');
      if (row.expires_at !== null && row.expires_at <= this.#now()) throw new PortwayError('PW_TOKEN_EXPIRED', 'this API token has expired');
      return { user: toUser({ id: row.user_id, name: row.name, is_admin: row.is_admin, created_at: row.u_created_at }), token: toToken(row) };
    });
  }

  getToken(tokenId: string): Promise<ApiToken | undefined> {
    checkString(tokenId, 'tokenId');
    return this.#run(async (db) => (isId(tokenId, 'tok') ? first(await db.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM api_tokens WHERE id = ?`, [tokenId]), toToken) : undefined));
  }

  listTokens(userId: string): Promise<ApiToken[]> {
    checkId(userId, 'usr', 'userId');
    return this.#run(async (db) => (await db.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM api_tokens WHERE user_id = ? ORDER BY created_at, id`, [userId])).map(toToken));
  }

  revokeToken(tokenId: string): Promise<boolean> {
    checkString(tokenId, 'tokenId');
    return this.#run(() =>
      !isId(tokenId, 'tok') ? Promise.resolve(false) : this.#db.transaction(async (tx) => {
        const at = this.#now();
        const changed = await tx.execute('UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [at, tokenId]);
        if (changed > 0) await tx.execute('UPDATE user_certs SET revoked_at = COALESCE(revoked_at, ?) WHERE token_id = ?', [at, tokenId]);
        return changed > 0;
      }),
    );
  }

  // ---- enrollment keys

  createEnrollKey(options: { readonly ownerUserId?: string; readonly uses?: number; readonly expiresAt: number }): Promise<CreatedEnrollKey> {
    const uses = options.uses ?? 1;
    if (!Number.isSafeInteger(uses) || uses < 1 || uses > MAX_ENROLL_KEY_USES) throw new RangeError(`uses must be an integer in 1..${MAX_ENROLL_KEY_USES}`);
    checkTime(options.expiresAt, 'expiresAt');
    if (options.ownerUserId !== undefined) checkId(options.ownerUserId, 'usr', 'ownerUserId');
    return this.#run(async (db) => {
      if (options.ownerUserId !== undefined) await this.#requireUser(db, options.ownerUserId);
      const key = newSecret('pwk');
      const keyId = newId('key');
      await db.execute('INSERT INTO enroll_keys (id, key_hash, owner_user_id, uses_left, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)', [
        keyId, hashSecret(key), options.ownerUserId ?? null, uses, this.#now(), options.expiresAt,
      ]);
      return { keyId, key, ...(options.ownerUserId === undefined ? {} : { ownerUserId: options.ownerUserId }), uses, expiresAt: options.expiresAt };
    });
  }

  consumeEnrollKey(key: string): Promise<EnrollKeyUse> {
    return this.#run(async (db) => {
      const invalid = (): PortwayError => new PortwayError('PW_ENROLL_KEY_INVALID');
      if (!isSecretShaped(key, 'pwk')) throw invalid();
      const hash = hashSecret(key);
      // One guarded statement: concurrent consumers (threads, processes, relays) can never take more than uses_left.
      const rows = await db.query<EnrollKeyRow>(
        'UPDATE enroll_keys SET uses_left = uses_left - 1 WHERE key_hash = ? AND revoked_at IS NULL AND expires_at > ? AND uses_left > 0 RETURNING id, key_hash, owner_user_id',
        [hash, this.#now()],
      );
      const row = rows[0];
      if (!row || !hashesEqual(row.key_hash, hash)) throw invalid();
      return { keyId: row.id, ...(row.owner_user_id === null ? {} : { ownerUserId: row.owner_user_id }) };
    });
  }

  revokeEnrollKey(keyId: string): Promise<boolean> {
    checkString(keyId, 'keyId');
    return this.#run(async (db) => isId(keyId, 'key') && (await db.execute('UPDATE enroll_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [this.#now(), keyId])) > 0);
  }

  // ---- devices

  createDevice(device: NewDevice): Promise<Device> {
    if (device.id !== undefined) checkId(device.id, 'dev', 'id');
    checkName(device.name, 'name');
    if (device.ownerUserId !== undefined) checkId(device.ownerUserId, 'usr', 'ownerUserId');
    checkFingerprint(device.certFingerprint, 'certFingerprint');
    checkFingerprint(device.keyFingerprint, 'keyFingerprint');
    return this.#run(async (db) => {
      if (device.ownerUserId !== undefined) await this.#requireUser(db, device.ownerUserId);
      const created: Device = {
        id: device.id ?? newId('dev'),
        name: device.name,
        ...(device.ownerUserId === undefined ? {} : { ownerUserId: device.ownerUserId }),
        certFingerprint: device.certFingerprint,
        keyFingerprint: device.keyFingerprint,
        createdAt: this.#now(),
      };
      await db.execute(`INSERT INTO devices (${DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)`, [
        created.id, created.name, device.ownerUserId ?? null, created.certFingerprint, created.keyFingerprint, created.createdAt,
      ]);
      return created;
    });
  }

  getDevice(id: string): Promise<Device | undefined> {
    checkString(id, 'id');
    return this.#run((db) => (isId(id, 'dev') ? this.#device(db, id) : Promise.resolve(undefined)));
  }

  findDevices(nameOrId: string): Promise<Device[]> {
    checkString(nameOrId, 'nameOrId');
    return this.#run(async (db) => {
      if (!NAME_PATTERN.test(nameOrId)) return []; // device IDs match it too
      const rows = await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE (id = ? OR name = ?) AND revoked_at IS NULL ORDER BY created_at, id`, [nameOrId, nameOrId]);
      return rows.map(toDevice);
    });
  }

  listDevices(): Promise<Device[]> {
    return this.#run(async (db) => (await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices ORDER BY created_at, id`)).map(toDevice));
  }

  countActiveDevices(): Promise<number> {
    // PostgreSQL returns COUNT(*) as a bigint string, SQLite as a number.
    return this.#run(async (db) => Number((await db.query<{ n: number | string }>('SELECT COUNT(*) AS n FROM devices WHERE revoked_at IS NULL'))[0]?.n ?? 0));
  }

  updateDeviceCert(id: string, cert: { readonly certFingerprint: string; readonly keyFingerprint: string }): Promise<Device> {
    checkId(id, 'dev', 'id');
    checkFingerprint(cert.certFingerprint, 'certFingerprint');
    checkFingerprint(cert.keyFingerprint, 'keyFingerprint');
    return this.#run(async (db) => {
      const changed = await db.execute('UPDATE devices SET cert_fingerprint = ?, key_fingerprint = ? WHERE id = ? AND revoked_at IS NULL', [cert.certFingerprint, cert.keyFingerprint, id]);
      const device = changed === 1 ? await this.#device(db, id) : undefined;
      if (!device) throw new PortwayError('PW_UNKNOWN_DEVICE', 'no active device with this ID');
      return device;
    });
  }

  revokeDevice(id: string): Promise<boolean> {
    checkString(id, 'id');
    return this.#run(async (db) => isId(id, 'dev') && (await db.execute('UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?', [this.#now(), id])) > 0);
  }

  listRevokedDevices(since: number): Promise<Device[]> {
    if (!Number.isSafeInteger(since)) throw new TypeError('since must be an integer');
    return this.#run(async (db) =>
      (await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE revoked_at IS NOT NULL AND revoked_at >= ? ORDER BY revoked_at, id LIMIT 1000`, [since])).map(toDevice),
    );
  }

  findRevokedKey(keyFingerprint: string): Promise<Device | undefined> {
    checkString(keyFingerprint, 'keyFingerprint');
    return this.#run(async (db) =>
      FINGERPRINT.test(keyFingerprint)
        ? first(await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE key_fingerprint = ? AND revoked_at IS NOT NULL ORDER BY revoked_at LIMIT 1`, [keyFingerprint]), toDevice)
        : undefined,
    );
  }

  // ---- user certificates

  recordUserCert(userId: string, fingerprint: string, keyFingerprint: string, options: { readonly tokenId?: string } = {}): Promise<UserCert> {
    checkId(userId, 'usr', 'userId');
    checkFingerprint(fingerprint, 'fingerprint');
    checkFingerprint(keyFingerprint, 'keyFingerprint');
    if (options.tokenId !== undefined) checkId(options.tokenId, 'tok', 'tokenId');
    return this.#run(async (db) => {
      await this.#requireUser(db, userId);
      if (options.tokenId !== undefined && (await db.query(`SELECT id FROM api_tokens WHERE id = ? AND user_id = ?`, [options.tokenId, userId])).length === 0) {
        throw new PortwayError('PW_NOT_FOUND', 'no token with this ID for this user');
      }
      await db.execute('INSERT INTO user_certs (fingerprint, user_id, key_fingerprint, created_at, token_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING', [
        fingerprint, userId, keyFingerprint, this.#now(), options.tokenId ?? null,
      ]);
      const cert = await this.#userCert(db, fingerprint);
      if (!cert || cert.userId !== userId) throw new PortwayError('PW_INTERNAL', 'certificate fingerprint already recorded for another user');
      return cert;
    });
  }

  getUserCert(fingerprint: string): Promise<UserCert | undefined> {
    checkString(fingerprint, 'fingerprint');
    return this.#run((db) => (FINGERPRINT.test(fingerprint) ? this.#userCert(db, fingerprint) : Promise.resolve(undefined)));
  }

  revokeUserCert(fingerprint: string): Promise<boolean> {
    checkString(fingerprint, 'fingerprint');
    return this.#run(async (db) => FINGERPRINT.test(fingerprint) && (await db.execute('UPDATE user_certs SET revoked_at = COALESCE(revoked_at, ?) WHERE fingerprint = ?', [this.#now(), fingerprint])) > 0);
  }

  // ---- shares

  shareDevice(share: { readonly deviceId: string; readonly userId: string; readonly services?: readonly string[]; readonly createdBy: string }): Promise<Share> {
    checkId(share.deviceId, 'dev', 'deviceId');
    checkId(share.userId, 'usr', 'userId');
    checkAuditText(share.createdBy, 'createdBy', false);
    const services = normalizeServices(share.services);
    return this.#run(async (db) => {
      if (!(await this.#device(db, share.deviceId))) throw new PortwayError('PW_UNKNOWN_DEVICE', 'no device with this ID');
      await this.#requireUser(db, share.userId);
      const created: Share = { deviceId: share.deviceId, userId: share.userId, ...(services ? { services } : {}), createdAt: this.#now(), createdBy: share.createdBy };
      await db.execute(
        `INSERT INTO shares (${SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, user_id) DO UPDATE SET services = excluded.services, created_at = excluded.created_at, created_by = excluded.created_by`,
        [created.deviceId, created.userId, services ? JSON.stringify(services) : null, created.createdAt, created.createdBy],
      );
      return created;
    });
  }

  unshareDevice(deviceId: string, userId: string): Promise<boolean> {
    checkString(deviceId, 'deviceId');
    checkString(userId, 'userId');
    return this.#run(async (db) => isId(deviceId, 'dev') && isId(userId, 'usr') && (await db.execute('DELETE FROM shares WHERE device_id = ? AND user_id = ?', [deviceId, userId])) > 0);
  }

  getShare(deviceId: string, userId: string): Promise<Share | undefined> {
    checkString(deviceId, 'deviceId');
    checkString(userId, 'userId');
    return this.#run(async (db) => {
      if (!isId(deviceId, 'dev') || !isId(userId, 'usr')) return undefined;
      return first(await db.query<ShareRow>(`SELECT ${SHARE_COLUMNS} FROM shares WHERE device_id = ? AND user_id = ?`, [deviceId, userId]), toShare);
    });
  }

  listShares(filter: { readonly deviceId: string } | { readonly userId: string }): Promise<Share[]> {
    const byDevice = 'deviceId' in filter;
    const id = byDevice ? filter.deviceId : filter.userId;
    checkString(id, byDevice ? 'deviceId' : 'userId');
    return this.#run(async (db) => {
      if (!isId(id, byDevice ? 'dev' : 'usr')) return [];
      const rows = await db.query<ShareRow>(`SELECT ${SHARE_COLUMNS} FROM shares WHERE ${byDevice ? 'device_id' : 'user_id'} = ? ORDER BY created_at, device_id, user_id`, [id]);
      return rows.map(toShare);
    });
  }

  // ---- device claims (claim-store.ts)

  registerClaim(claim: NewClaim): Promise<Claim> {
    checkClaimId(claim.claimId);
    checkName(claim.name, 'name');
    checkFingerprint(claim.keyFingerprint, 'keyFingerprint');
    checkFingerprint(claim.pollHash, 'pollHash');
    checkTime(claim.expiresAt, 'expiresAt');
    return this.#run((db) => insertClaim(db, claim, this.#now()));
  }

  getClaim(claimId: string): Promise<Claim | undefined> {
    checkString(claimId, 'claimId');
    return this.#run((db) => (CLAIM_ID.test(claimId) ? selectClaim(db, claimId) : Promise.resolve(undefined)));
  }

  offerClaim(claimId: string, offer: Omit<ClaimOffer, 'offeredAt' | 'answer'>, staleBefore: number): Promise<Claim> {
    checkClaimId(claimId);
    checkId(offer.userId, 'usr', 'userId');
    if (offer.name !== undefined) checkName(offer.name, 'name');
    return this.#run((db) => offerClaim(db, claimId, offer, this.#now(), staleBefore));
  }

  answerClaim(claimId: string, offerId: string, answer: { readonly ok: boolean; readonly deviceTag?: string; readonly code?: string }): Promise<boolean> {
    checkClaimId(claimId);
    return this.#run((db) => answerClaim(db, claimId, offerId, answer));
  }

  withdrawClaimOffer(claimId: string, offerId: string): Promise<boolean> {
    checkClaimId(claimId);
    return this.#run((db) => withdrawOffer(db, claimId, offerId));
  }

  completeClaim(claimId: string, offerId: string, device: ClaimedDevice): Promise<Device> {
    checkClaimId(claimId);
    checkId(device.id, 'dev', 'id');
    checkId(device.ownerUserId, 'usr', 'ownerUserId');
    checkName(device.name, 'name');
    checkFingerprint(device.certFingerprint, 'certFingerprint');
    checkFingerprint(device.keyFingerprint, 'keyFingerprint');
    return this.#run(() => completeClaim(this.#db, claimId, offerId, device, this.#now()));
  }

  // ---- audit log

  appendAudit(entry: NewAuditEntry): Promise<AuditEntry> {
    checkAuditText(entry.actor, 'actor', false);
    checkAuditText(entry.action, 'action', false);
    checkAuditText(entry.target, 'target', true);
    checkAuditText(entry.source, 'source', true);
    checkAuditText(entry.outcome, 'outcome', false);
    return this.#run(async (db) => {
      const rows = await db.query<AuditRow>(`INSERT INTO audit_log (at, actor, action, target, source, outcome) VALUES (?, ?, ?, ?, ?, ?) RETURNING ${AUDIT_COLUMNS}`, [
        this.#now(), entry.actor, entry.action, entry.target ?? null, entry.source ?? null, entry.outcome,
      ]);
      return toAudit(rows[0] as AuditRow);
    });
  }

  listAudit(options: { readonly limit: number; readonly beforeId?: number }): Promise<AuditEntry[]> {
    if (!Number.isSafeInteger(options.limit) || options.limit < 1 || options.limit > MAX_AUDIT_PAGE) throw new RangeError(`limit must be an integer in 1..${MAX_AUDIT_PAGE}`);
    if (options.beforeId !== undefined && (!Number.isSafeInteger(options.beforeId) || options.beforeId < 0)) throw new RangeError('beforeId must be a non-negative integer');
    return this.#run(async (db) => {
      const rows = await db.query<AuditRow>(`SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?`, [options.beforeId ?? Number.MAX_SAFE_INTEGER, options.limit]);
      return rows.map(toAudit);
    });
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    await this.#db.close();
  }

  // ---- internals

  /** Run one database job; codeless failures become PW_INTERNAL. */
  // ---- owner grant sets (grant-store.ts)

  putDeviceGrants(entry: { readonly deviceId: string; readonly seq: number; readonly grants: string; readonly updatedBy: string }): Promise<DeviceGrants> {
    checkId(entry.deviceId, 'dev', 'deviceId');
    if (!Number.isSafeInteger(entry.seq) || entry.seq < 1) throw new RangeError('seq must be a positive integer');
    if (typeof entry.grants !== 'string' || entry.grants.length === 0 || entry.grants.length > MAX_GRANTS_TEXT_CHARS) throw new RangeError(`grants must be 1..${MAX_GRANTS_TEXT_CHARS} characters`);
    checkAuditText(entry.updatedBy, 'updatedBy', false);
    const stored: DeviceGrants = { deviceId: entry.deviceId, seq: entry.seq, grants: entry.grants, updatedAt: this.#now(), updatedBy: entry.updatedBy };
    return this.#run(async (db) => {
      await upsertGrants(db, stored);
      return stored;
    });
  }

  getDeviceGrants(deviceId: string): Promise<DeviceGrants | undefined> {
    checkString(deviceId, 'deviceId');
    return this.#run((db) => (isId(deviceId, 'dev') ? selectGrants(db, deviceId) : Promise.resolve(undefined)));
  }

  getClaimOwnerKey(deviceId: string): Promise<string | undefined> {
    checkString(deviceId, 'deviceId');
    return this.#run((db) => (isId(deviceId, 'dev') ? selectClaimOwnerKey(db, deviceId) : Promise.resolve(undefined)));
  }

  listUserCerts(userId: string): Promise<UserCert[]> {
    checkId(userId, 'usr', 'userId');
    return this.#run((db) => selectUserCerts(db, userId));
  }

  listRevokedUserCerts(since: number): Promise<UserCert[]> {
    if (!Number.isSafeInteger(since)) throw new TypeError('since must be an integer');
    return this.#run((db) => selectRevokedUserCerts(db, since));
  }

  async #run<T>(job: (db: SqlExecutor) => Promise<T>): Promise<T> {
    if (this.#state === 'closed') throw new PortwayError('PW_SHUTTING_DOWN', 'store is closed');
    try {
      return await job(this.#db);
    } catch (err) {
      throw err instanceof PortwayError ? err : new PortwayError('PW_INTERNAL', 'store operation failed', { cause: err });
    }
  }

  async #user(db: SqlExecutor, id: string): Promise<User | undefined> {
    return first(await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`, [id]), toUser);
  }

  async #requireUser(db: SqlExecutor, id: string): Promise<void> {
    if (!(await this.#user(db, id))) throw new PortwayError('PW_NOT_FOUND', 'no user with this ID');
  }

  async #device(db: SqlExecutor, id: string): Promise<Device | undefined> {
    return first(await db.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`, [id]), toDevice);
  }

  async #userCert(db: SqlExecutor, fingerprint: string): Promise<UserCert | undefined> {
    return first(await db.query<UserCertRow>(`${USER_CERT_SELECT} WHERE c.fingerprint = ?`, [fingerprint]), toUserCert);
  }
}

const CLAIM_ID = /^[0-9A-HJKMNP-TV-Z]{7}$/;

function checkClaimId(value: unknown): asserts value is string {
  if (typeof value !== 'string' || !CLAIM_ID.test(value)) throw new TypeError('claimId must be the 7-character lookup part of a claim code');
}

function first<R, T>(rows: readonly R[], map: (row: R) => T): T | undefined {
  const row = rows[0];
  return row === undefined ? undefined : map(row);
}
