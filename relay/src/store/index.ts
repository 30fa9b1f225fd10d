/** Public surface of the relay store: the Store interface, its SQLite and PostgreSQL implementations, IDs and secrets. */
export type { ApiToken, AuditEntry, CreatedEnrollKey, CreatedToken, Device, EnrollKeyUse, NewAuditEntry, NewDevice, Share, Store, TokenAuth, TokenScope, User, UserCert } from './store';
export { TOKEN_SCOPES } from './store';
export type { Claim, ClaimedDevice, ClaimOffer, ClaimState, NewClaim } from './claim-store';
export { MAX_GRANTS_TEXT_CHARS, type DeviceGrants } from './grant-store';
export { MAX_AUDIT_PAGE, MAX_ENROLL_KEY_USES, MAX_SHARED_SERVICES } from './store-checks';
export { SqlStore, type StoreDeps } from './sql-store';
export { SqliteStore, type SqliteStoreOptions } from './sqlite-store';
export { isPostgresUrl, PgStore, type PgStoreOptions } from './pg-store';
export { checkDbSetting, describeDb, openStore } from './open-store';
export { isId, newId, type IdPrefix } from './ids';
export { hashSecret, isSecretShaped, newSecret, type SecretPrefix } from './secrets';
