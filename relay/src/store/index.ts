/** Public surface of the relay store: the Store interface, its SQLite implementation, IDs and secrets. */
export type { CreatedEnrollKey, CreatedToken, Device, EnrollKeyUse, NewDevice, Store, User, UserCert } from './store';
export { MAX_ENROLL_KEY_USES, SqliteStore, type SqliteStoreOptions, type StoreDeps } from './sqlite-store';
export { isId, newId, type IdPrefix } from './ids';
export { hashSecret, isSecretShaped, newSecret, type SecretPrefix } from './secrets';
